"""Reading frames safely: every way an image can be broken becomes a ``BadImage`` with a reason."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
IGNORED_NAMES = {"thumbs.db", ".ds_store", "desktop.ini"}
MIN_SIDE = 16  # smaller than this is not a face frame, whatever it is
MAX_PIXELS = 40_000_000  # decompression-bomb guard: SFEW frames have 0.4 Mpx


class BadImage(Exception):
    """A file that can't be used as a frame; ``str()`` is the reason."""


def inspect_image(data: bytes) -> tuple[int, int, str]:
    """Fully decode an image file's bytes; return (width, height, mode) or raise BadImage."""
    if not data:
        raise BadImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise BadImage(f"too large ({width}x{height}, over {MAX_PIXELS:,} pixels)")
                img.load()  # decodes everything: catches truncated data
                mode = img.mode
    except BadImage:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise BadImage("too large (decompression-bomb guard)") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not an image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if min(width, height) < MIN_SIDE:
        raise BadImage(f"too small ({width}x{height})")
    return width, height, mode


def load_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` as 8-bit RGB: greyscale, palette, RGBA and 16-bit frames are converted."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit greyscale: keep the top 8 bits rather than clipping at 255.
                arr = np.asarray(img, dtype=np.uint32)
                img = Image.fromarray((arr >> 8 if arr.max() > 255 else arr).astype(np.uint8))
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"unreadable ({exc})") from None

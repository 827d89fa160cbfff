"""Reading frames safely: every way an image can be broken becomes a ``BadImage`` with a reason."""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
IGNORED_NAMES = {"thumbs.db", ".ds_store", "desktop.ini"}
MIN_SIDE = 16  # smaller than this is not a face frame, whatever it is
MAX_PIXELS = 40_000_000  # decompression-bomb guard: SFEW frames have 0.4 Mpx
# A file bigger than this is not read at all: 40 Mpx of 16-bit RGB is 240 MB uncompressed.
MAX_FILE_BYTES = 512 * 1024 * 1024
# Modes load_rgb can't turn into a faithful 8-bit RGB frame (float samples have no fixed range).
UNSUPPORTED_MODES = {"F": "32-bit floating-point samples"}


class BadImage(Exception):
    """A file that can't be used as a frame; ``str()`` is the reason."""


@dataclass(frozen=True)
class FrameInfo:
    """What ``inspect_frame`` found: size, Pillow mode and bits per sample (8, 16 or 32)."""

    width: int
    height: int
    mode: str
    bits: int = 8

    @property
    def conversion(self) -> str | None:
        """What ``load_rgb`` does to make this frame 8-bit RGB, or None if it already is."""
        if self.bits > 8:
            return f"converted {self.bits}-bit {self.mode} to 8-bit RGB"
        if self.mode != "RGB":
            return f"converted {self.mode} to RGB"
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _bomb_reason(exc: BaseException) -> str:
    """Pillow's bomb guard fires before the size is known to us: take it from its message."""
    pixels = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(pixels.group(1)):,} pixels, " if pixels else ""
    return f"too large ({size}over {MAX_PIXELS:,} pixels: decompression-bomb guard)"


def _bits_per_sample(img: Image.Image) -> int:
    """16 for 16-bit PNG/TIFF samples (Pillow reads 16-bit RGB as 8-bit RGB silently), etc."""
    if img.mode in ("I", "F"):
        return 32
    if ";16" in img.mode:
        return 16
    for tile in getattr(img, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        rawmode = (
            args
            if isinstance(args, str)
            else (args[0] if isinstance(args, tuple) and args and isinstance(args[0], str) else "")
        )
        if ";16" in rawmode:
            return 16
    return 8


def inspect_frame(data: bytes) -> FrameInfo:
    """Fully decode an image file's bytes; return its ``FrameInfo`` or raise BadImage."""
    if not data:
        raise BadImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise BadImage(f"too large ({width}x{height}, over {MAX_PIXELS:,} pixels)")
                bits = _bits_per_sample(img)  # from the tile's raw mode: read it before load()
                img.load()  # decodes everything: catches truncated data
                mode = img.mode
                if mode in UNSUPPORTED_MODES:
                    raise BadImage(f"unsupported pixel format {mode} ({UNSUPPORTED_MODES[mode]})")
                try:  # the conversion load_rgb will do, on one pixel: unsupported modes fail here
                    _to_rgb(img.crop((0, 0, 1, 1)))
                except ValueError as exc:
                    raise BadImage(
                        f"unsupported pixel format {mode} ({_first_line(exc)})"
                    ) from None
    except BadImage:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage(_bomb_reason(exc)) from None
    except Image.UnidentifiedImageError:
        raise BadImage("not an image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImage(f"unreadable ({_first_line(exc)})") from None
    if min(width, height) < MIN_SIDE:
        raise BadImage(f"too small ({width}x{height})")
    return FrameInfo(width, height, mode, bits)


def inspect_image(data: bytes) -> tuple[int, int, str]:
    """Fully decode an image file's bytes; return (width, height, mode) or raise BadImage."""
    info = inspect_frame(data)
    return info.width, info.height, info.mode


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I"):  # I;16* (16-bit greyscale) or I (32-bit integers)
        # Keep the top 8 bits rather than clipping at 255.
        arr = np.asarray(img, dtype=np.int64).clip(0)
        top = int(arr.max()) if arr.size else 0
        shift = 0 if top <= 255 else 8 if top <= 65535 else 24
        img = Image.fromarray((arr >> shift).clip(0, 255).astype(np.uint8))
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` as 8-bit RGB: greyscale, palette, RGBA and 16-bit frames are converted.

    A missing file raises FileNotFoundError (the caller knows why it expected one); anything
    else that makes the file unusable raises BadImage with a one-line reason.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in UNSUPPORTED_MODES:
                raise BadImage(
                    f"unsupported pixel format {img.mode} ({UNSUPPORTED_MODES[img.mode]})"
                )
            return _to_rgb(img)
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImage(_bomb_reason(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImage(f"unreadable ({_first_line(exc)})") from None

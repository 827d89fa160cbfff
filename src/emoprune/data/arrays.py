"""Loading the resize stage's arrays by model kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emoprune.errors import UserError

RESIZE_DIR = Path("outputs/resize")


def load_images(kind: str, folder: str | Path = RESIZE_DIR, mmap: bool = True) -> np.ndarray:
    """(N, S, S, 3) uint8 frames in manifest order, for ``kind`` = ``cnn`` or ``resnet``."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        return np.load(folder / meta["files"][kind], mmap_mode="r" if mmap else None)
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(
            f"{folder}: resized images unreadable ({exc}); run `dvc repro resize`"
        ) from None

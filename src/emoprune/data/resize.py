"""Resize every frame to the square inputs of the CNN (227) and ResNet (224).

Frames are squashed to a square, as in the paper (SFEW's 720x576 -> 227x227), with Pillow's
antialiasing bilinear filter. Decoding and resizing release the GIL, so a thread pool uses every
core without copying images between processes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from emoprune.data.images import BadImage, load_rgb
from emoprune.errors import UserError


def resize_one(path: str | Path, sizes: Sequence[int]) -> list[np.ndarray]:
    """One frame -> a (size, size, 3) uint8 array per requested size."""
    try:
        img = load_rgb(path)
    except BadImage as exc:
        raise UserError(f"{path}: {exc} (it passed ingest; was it changed since?)") from None
    except FileNotFoundError:
        raise UserError(f"{path}: missing (it is in the manifest; rerun ingest)") from None
    return [
        np.asarray(img.resize((s, s), Image.Resampling.BILINEAR), dtype=np.uint8) for s in sizes
    ]


def resize_all(
    paths: Sequence[str | Path],
    sizes: Sequence[int],
    workers: int | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """Resize every frame; returns one (N, size, size, 3) uint8 array per size, in input order."""
    out = [np.empty((len(paths), s, s, 3), dtype=np.uint8) for s in sizes]
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda p: resize_one(p, sizes), paths)
        for i, arrays in enumerate(
            tqdm(results, total=len(paths), desc="resize", disable=not progress, unit="img")
        ):
            for k, arr in enumerate(arrays):
                out[k][i] = arr
    return out

"""Hand-crafted face descriptors: LPQ (Oulu's lpq.m) and PHOG (VGG's anna_phog.m), vectorised.

The literal ports of the MATLAB code, for tests and benchmarks, live outside the package
(``benchmarks/reference.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .lpq import lpq
from .phog import phog, phog_length, rgb2gray_matlab

__all__ = ["lpq", "phog", "compute_descriptors"]


def compute_descriptors(
    images: np.ndarray,
    *,
    lpq_kwargs: Mapping[str, Any] | None = None,
    phog_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """LPQ and PHOG of a stack of RGB frames.

    Parameters
    ----------
    images : uint8 array (N, H, W, 3), RGB.
    lpq_kwargs, phog_kwargs : extra keyword arguments for :func:`lpq` / :func:`phog`.
    progress : show a tqdm bar (desc "features").

    Returns
    -------
    (N, 256) float64 LPQ histograms of the MATLAB-``rgb2gray`` (rounded uint8) frames, and
    (N, D) float64 PHOG descriptors (D = 680 for the defaults).
    """
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[3] != 3:
        raise ValueError(f"images must be an (N, H, W, 3) RGB stack, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {arr.dtype}")
    lpq_kw = dict(lpq_kwargs or {})
    phog_kw = dict(phog_kwargs or {})
    n, height, width = arr.shape[:3]
    dim = phog_length(height, width, phog_kw.get("bins", 8), phog_kw.get("levels", 3))
    lpq_out = np.zeros((n, 256))
    phog_out = np.zeros((n, dim))

    from tqdm import tqdm  # local: only needed here

    for i in tqdm(range(n), desc="features", disable=not progress):
        # phog() converts RGB the same way; giving it the grey frame skips a second conversion.
        gray = rgb2gray_matlab(arr[i])
        lpq_out[i] = lpq(gray, **lpq_kw)
        phog_out[i] = phog(gray, **phog_kw)
    return lpq_out, phog_out

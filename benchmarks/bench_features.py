"""Benchmarks for the LPQ and PHOG descriptors (src/emoprune/features/).

For face-like synthetic frames at 227x227 (the CNN input size) and 720x576 (SFEW's frame size):
images/s of the vectorised ``lpq`` / ``phog`` and of the literal MATLAB ports in
``benchmarks.reference``, each the median of several repetitions in this process, with
``ratio`` = fast / reference speed-up, and a check that the outputs agree (LPQ: exact equality;
PHOG: cosine similarity and max abs difference). Then the time ``compute_descriptors`` takes for
675 frames at 227x227 (the SFEW train+val set size), measured once in full mode and extrapolated
from the per-image rates in smoke mode; target < 30 s on 2 cores.

BLAS is limited to one thread (threadpoolctl, which comes with scikit-learn): on a shared 2-core
machine OpenBLAS's spinning workers make small products erratic, and the reference port's one
big whitening product would otherwise be penalised unfairly.
Run: ``PYTHONPATH=src python benchmarks/bench_features.py [--smoke]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from benchmarks.reference import anna_phog_reference, lpq_reference, synthetic_face_frame
from benchmarks.timing import blas_threads, median_time
from emoprune.features import compute_descriptors, lpq, phog
from emoprune.features.phog import rgb2gray_matlab

GROUP = "descriptors"
N_FRAMES_DATASET = 675
TARGET_SECONDS = 30.0


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def _rows_for_size(
    height: int, width: int, n_frames: int, reps: int, ref_reps: int
) -> tuple[list[dict], float]:
    """Rows for one frame size; also returns fast seconds per frame for LPQ + PHOG together."""
    frames = [synthetic_face_frame(height, width, seed=s) for s in range(n_frames)]
    grays = [rgb2gray_matlab(f) for f in frames]
    size = f"{width}x{height}"
    rows: list[dict] = []

    def lpq_fast():
        return [lpq(g) for g in grays]

    def lpq_ref():
        return [lpq_reference(g) for g in grays]

    def phog_fast():
        return [phog(f) for f in frames]

    def phog_ref():
        return [anna_phog_reference(f) for f in frames]

    lpq_equal = all(np.array_equal(a, b) for a, b in zip(lpq_fast(), lpq_ref(), strict=True))
    fast_p, ref_p = phog_fast(), phog_ref()
    cos = min(_cosine(a, b) for a, b in zip(fast_p, ref_p, strict=True))
    max_diff = max(float(np.abs(a - b).max()) for a, b in zip(fast_p, ref_p, strict=True))

    per_frame = 0.0
    for name, fast, ref, check in (
        (
            "lpq",
            lpq_fast,
            lpq_ref,
            f"outputs {'exactly equal' if lpq_equal else 'DIFFER'} on {n_frames} frames",
        ),
        (
            "phog",
            phog_fast,
            phog_ref,
            f"min cosine {cos:.6f}, max |diff| {max_diff:.1e} on {n_frames} frames",
        ),
    ):
        t_fast = median_time(fast, reps) / n_frames
        t_ref = median_time(ref, ref_reps, warmup=0) / n_frames
        per_frame += t_fast
        rows.append(
            {
                "group": GROUP,
                "name": f"{name}_{size}_fast",
                "value": 1 / t_fast,
                "unit": "images/s",
                "baseline": 1 / t_ref,
                "ratio": t_ref / t_fast,
                "note": f"vectorised vs literal MATLAB port (baseline); median of {reps} reps; "
                f"{check}",
            }
        )
        rows.append(
            {
                "group": GROUP,
                "name": f"{name}_{size}_reference",
                "value": 1 / t_ref,
                "unit": "images/s",
                "baseline": None,
                "ratio": None,
                "note": f"literal port in benchmarks.reference; median of {ref_reps} reps",
            }
        )
    return rows, per_frame


def run(smoke: bool = False) -> list[dict]:
    """All benchmark rows (see the module docstring); ``smoke``: tiny frames, 1 repetition."""
    with blas_threads(1):
        return _run(smoke)


def _run(smoke: bool) -> list[dict]:
    if smoke:
        sizes, n_frames, reps, ref_reps = [(48, 48), (48, 60)], 2, 1, 1
    else:
        sizes, n_frames, reps, ref_reps = [(227, 227), (576, 720)], 4, 7, 3
    rows: list[dict] = []
    per_frame_227 = 0.0
    for index, (height, width) in enumerate(sizes):
        size_rows, per_frame = _rows_for_size(height, width, n_frames, reps, ref_reps)
        rows += size_rows
        if index == 0:
            per_frame_227 = per_frame
    ref_per_frame = sum(1 / r["value"] for r in rows[:4] if r["name"].endswith("_reference"))
    estimate = per_frame_227 * N_FRAMES_DATASET
    h, w = sizes[0]
    if smoke:
        seconds, how = estimate, f"extrapolated from the {w}x{h} rates (smoke)"
    else:
        distinct = np.stack([synthetic_face_frame(h, w, seed=s) for s in range(8)])
        stack = distinct[np.arange(N_FRAMES_DATASET) % len(distinct)]
        t0 = time.perf_counter()
        compute_descriptors(stack)
        seconds = time.perf_counter() - t0
        how = (
            "measured once with compute_descriptors "
            f"(extrapolated from the rates: {estimate:.1f} s)"
        )
    rows.append(
        {
            "group": GROUP,
            "name": f"lpq_phog_{N_FRAMES_DATASET}_frames_{w}x{h}",
            "value": seconds,
            "unit": "s",
            "baseline": ref_per_frame * N_FRAMES_DATASET,
            "ratio": ref_per_frame * N_FRAMES_DATASET / seconds,
            "note": f"{how}; baseline = reference ports extrapolated"
            + (
                ""
                if smoke
                else f"; target < {TARGET_SECONDS:.0f} s on 2 cores"
                f" ({'met' if seconds < TARGET_SECONDS else 'NOT met'})"
            ),
        }
    )
    return rows


if __name__ == "__main__":
    for row in run(smoke="--smoke" in sys.argv[1:]):
        print(row)

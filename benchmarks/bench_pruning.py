"""Benchmarks for Gedeon's distinctiveness pruning (src/emoprune/pruning/).

1. One distinctiveness check (angles + candidate selection, no weight change) over fc1, fc2, fc3
   (512, 128, 64 neurons) on 540 patterns (an SFEW training fold), vectorised vs a per-pair
   Python loop like the paper-era code. The loop is timed on a subset of pairs and extrapolated
   linearly to all n(n-1)/2 pairs.
2. That check's cost as a fraction of one training epoch (540 images at 227x227, batch 32).
3. The physically shrunk network (half of fc1/fc2/fc3 removed) vs the unpruned one: parameters
   and CPU latency per image.

All timings are medians of several repetitions in this process, on the CPU, with torch and BLAS
limited to one thread: on a shared 2-core machine, multi-threaded kernels whose spinning workers
lose their core are up to tens of times slower and the numbers become noise.
Run: ``PYTHONPATH=src python benchmarks/bench_pruning.py [--smoke]``.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
from torch import nn

from benchmarks.timing import blas_threads, median_time
from emoprune.evaluation.size import model_size_and_latency
from emoprune.models.cnn import CNN, HIDDEN_LAYERS
from emoprune.pruning.distinctiveness import layer_angle_stats
from emoprune.pruning.mask import PruneMask
from emoprune.pruning.shrink import shrink

N_PATTERNS = 540  # one SFEW training fold
BATCH = 32
THRESHOLD = 15.0
GROUP = "pruning"


def _loop_vectors(model: CNN, layer: str, acts: np.ndarray, mode: str) -> np.ndarray:
    """Per-neuron vectors built the simple way, as the loop baseline would."""
    if mode == "activations":
        return (acts - 0.5).T  # sigmoid centring
    return model.fc_pair(layer)[1].weight.detach().double().numpy().T


def _loop_check(vectors: np.ndarray, pairs: list[tuple[int, int]], threshold: float) -> tuple:
    """Paper-era check: one numpy dot/norm per pair, tracking min/max and the counts."""
    lo, hi, n_sim, n_comp = 180.0, 0.0, 0, 0
    for i, j in pairs:
        u, v = vectors[i], vectors[j]
        cos = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
        ang = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
        lo, hi = min(lo, ang), max(hi, ang)
        n_sim += ang < threshold
        n_comp += ang > 180 - threshold
    return lo, hi, n_sim, n_comp


def _all_pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _bench_checks(model: CNN, acts: dict[str, np.ndarray], smoke: bool) -> tuple[list[dict], float]:
    """Rows for (1); also returns the slower mode's vectorised check time in seconds."""
    reps = 3 if smoke else 15
    pair_budget = 400 if smoke else 20_000  # pairs the loop really runs per layer
    rows, slowest = [], 0.0
    for mode in ("activations", "output_weights"):
        fast = median_time(
            lambda mode=mode: [
                layer_angle_stats(model, layer, acts[layer], mode, THRESHOLD, "sigmoid")
                for layer in HIDDEN_LAYERS
            ],
            reps,
        )
        loop_total, parts = 0.0, []
        for layer in HIDDEN_LAYERS:
            vec = _loop_vectors(model, layer, acts[layer], mode)
            pairs = _all_pairs(len(vec))
            # Evenly spread subset, so the per-pair cost is typical of the whole layer.
            stride = math.ceil(len(pairs) / pair_budget)
            sub = pairs[::stride]
            t = median_time(
                lambda vec=vec, sub=sub: _loop_check(vec, sub, THRESHOLD), 1 if smoke else 3, 0
            )
            loop_total += t * len(pairs) / len(sub)
            parts.append(f"{layer} {len(sub)}/{len(pairs)} pairs")
        slowest = max(slowest, fast)
        rows.append(
            {
                "group": GROUP,
                "name": f"distinctiveness_check_{mode}",
                "value": round(fast * 1e3, 3),
                "unit": "ms",
                "baseline": round(loop_total * 1e3, 1),
                "ratio": round(loop_total / fast, 1),
                "note": (
                    f"one check over fc1/fc2/fc3 (512/128/64 units) on {N_PATTERNS} patterns, "
                    f"median of {reps}; baseline = per-pair numpy dot/norm loop, timed on "
                    f"{', '.join(parts)} and extrapolated linearly; ratio = loop/vectorised "
                    "(target >= 100x)"
                ),
            }
        )
    return rows, slowest


def _bench_epoch(check_s: float, smoke: bool) -> dict:
    """Row for (2): check time vs one training epoch, extrapolated from a few real batches."""
    torch.manual_seed(0)
    model = CNN().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(BATCH, 3, 227, 227)
    y = torch.randint(0, 7, (BATCH,))

    def train_step() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    n_batches = math.ceil(N_PATTERNS / BATCH)
    reps = 1 if smoke else 5
    step_s = median_time(train_step, reps)
    epoch_s = step_s * n_batches
    return {
        "group": GROUP,
        "name": "check_vs_training_epoch",
        "value": round(check_s * 1e3, 3),
        "unit": "ms",
        "baseline": round(epoch_s * 1e3, 1),
        "ratio": round(check_s / epoch_s, 6),
        "note": (
            f"ratio = check/epoch = {100 * check_s / epoch_s:.3f}% (target < 2%); epoch = median "
            f"of {reps} Adam steps (batch {BATCH}, 227x227, sigmoid CNN, 1 thread) x {n_batches} "
            "batches; "
            "check = the slower mode above; the activations it needs can be kept from the "
            "epoch's own forward passes, otherwise one extra forward pass (~1/3 of an epoch)"
        ),
    }


def _bench_shrink(smoke: bool) -> list[dict]:
    """Rows for (3): the shrunk network with half of every hidden layer removed."""
    torch.manual_seed(0)
    model = CNN().eval()
    mask = PruneMask(model, HIDDEN_LAYERS)
    for layer, width in zip(HIDDEN_LAYERS, model.hidden):
        mask.add(layer, range(1, width, 2))
    mask.apply()
    small = shrink(model, mask)
    x = torch.rand(4, 3, 227, 227)
    with torch.inference_mode():
        diff = float((small(x) - model(x)).abs().max())
    repeats = 5 if smoke else 50
    full = model_size_and_latency(model, batch=1, repeats=repeats, threads=1)
    pruned = model_size_and_latency(small, batch=1, repeats=repeats, threads=1)
    common = f"hidden {model.hidden} -> {small.hidden}; max |output diff| {diff:.1e}"
    return [
        {
            "group": GROUP,
            "name": "shrunk_params",
            "value": pruned["params"],
            "unit": "params",
            "baseline": full["params"],
            "ratio": round(full["params"] / pruned["params"], 3),
            "note": f"{common}; ratio = unpruned/shrunk",
        },
        {
            "group": GROUP,
            "name": "shrunk_latency",
            "value": round(pruned["latency_ms"], 3),
            "unit": "ms/image",
            "baseline": round(full["latency_ms"], 3),
            "ratio": round(full["latency_ms"] / pruned["latency_ms"], 3),
            "note": (
                f"{common}; CPU, 1 thread, batch 1, median of {repeats}; ratio = unpruned/shrunk "
                "(the conv stack dominates the latency)"
            ),
        },
    ]


def run(smoke: bool = False) -> list[dict]:
    """All pruning benchmark rows; ``smoke`` runs in a few seconds."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with blas_threads(1):
            return _run(smoke)
    finally:
        torch.set_num_threads(old_threads)


def _run(smoke: bool) -> list[dict]:
    torch.manual_seed(0)
    model = CNN()
    rng = np.random.default_rng(0)
    # Sigmoid outputs of the right shapes: the check's cost does not depend on their values.
    acts = {
        layer: 1.0 / (1.0 + np.exp(-rng.normal(size=(N_PATTERNS, width))))
        for layer, width in zip(HIDDEN_LAYERS, model.hidden)
    }
    rows, check_s = _bench_checks(model, acts, smoke)
    rows.append(_bench_epoch(check_s, smoke))
    rows += _bench_shrink(smoke)
    return rows


if __name__ == "__main__":
    for row in run(smoke="--smoke" in sys.argv[1:]):
        print(row)

"""How big and how fast a model is: trainable parameters and CPU latency per image."""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from emoprune.models.cnn import count_parameters


def model_size_and_latency(
    model: nn.Module,
    in_size: int | None = None,
    batch: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> dict[str, float | int]:
    """Trainable parameter count and CPU inference latency per image.

    Runs ``repeats`` timed forward passes on a (batch, 3, in_size, in_size) input under
    torch.inference_mode in eval mode on a CPU copy of the model; latency is the median batch time
    divided by ``batch``, in ms. ``in_size`` defaults to ``model.in_size`` (227 for the paper's
    CNN). ``threads`` sets torch's intra-op threads for the measurement
    (restored afterwards); 1 gives stable numbers on a shared machine, where spinning worker
    threads that lose their core can make a forward pass tens of times slower.
    """
    cpu = model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()
    was_training = cpu.training
    cpu.eval()
    side = in_size if in_size is not None else getattr(model, "in_size", 227)
    x = torch.randn(batch, 3, side, side, dtype=next(cpu.parameters()).dtype)
    times = []
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for r in range(warmup + repeats):
                t0 = time.perf_counter()
                cpu(x)
                if r >= warmup:
                    times.append(time.perf_counter() - t0)
    finally:
        cpu.train(was_training)
        torch.set_num_threads(old_threads)
    return {
        "params": count_parameters(model),
        "latency_ms": 1000.0 * statistics.median(times) / batch,
    }


def paired_latency(
    models: dict[str, nn.Module],
    in_size: int,
    repeats: int = 20,
    warmup: int = 3,
    threads: int = 1,
) -> dict[str, list[float]]:
    """CPU inference times (ms, batch 1) of several models, timed back to back in one process.

    The models take turns within every repeat (a, b, a, b, ...), so a machine that slows down or
    speeds up during the measurement affects them alike, and a ratio between them is a fair
    comparison. Returns {name: ``repeats`` times in ms}.
    """
    cpu = {
        name: (m if next(m.parameters()).device.type == "cpu" else copy.deepcopy(m).cpu())
        for name, m in models.items()
    }
    modes = {name: m.training for name, m in cpu.items()}
    x = torch.randn(1, 3, in_size, in_size)
    times: dict[str, list[float]] = {name: [] for name in cpu}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for m in cpu.values():
                m.eval()
            for r in range(warmup + repeats):
                for name, m in cpu.items():
                    t0 = time.perf_counter()
                    m(x)
                    if r >= warmup:
                        times[name].append(1000.0 * (time.perf_counter() - t0))
    finally:
        for name, m in cpu.items():
            m.train(modes[name])
        torch.set_num_threads(old_threads)
    return times

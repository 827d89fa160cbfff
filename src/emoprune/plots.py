"""Matplotlib figures logged to MLflow and written beside the reports (Agg backend, no screen)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def class_distribution(counts: Mapping[str, int], title: str = "Images per class") -> Figure:
    """A bar chart of ``counts`` (class -> number of images)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names, values = list(counts), list(counts.values())
    bars = ax.bar(names, values, color="#4c72b0")
    ax.bar_label(bars)
    ax.set_ylabel("images")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def curves(x: Sequence[float], series: Mapping[str, Sequence[float]], *, xlabel: str,
           ylabel: str, title: str) -> Figure:
    """Line plot of several named series over a shared x axis."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ys in series.items():
        ax.plot(list(x), list(ys), label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)


def save(fig: Figure, path: str | Path) -> None:
    """Write ``fig`` as a PNG atomically (a Ctrl-C never leaves half an image), then close it."""
    from emoprune.outputs import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    close(fig)


def angle_traces(rows: Sequence[Mapping[str, float]], title: str) -> Figure:
    """Min and max pairwise angle per layer over epochs, from wide rows (``<layer>_min_angle``)."""
    layers = sorted({k.rsplit("_min_angle", 1)[0] for r in rows for k in r
                     if k.endswith("_min_angle")})
    fig, axes = plt.subplots(1, len(layers), figsize=(4.5 * len(layers), 3.8), squeeze=False)
    x = [r["epoch"] for r in rows]
    for ax, layer in zip(axes[0], layers):
        ax.plot(x, [r.get(f"{layer}_min_angle") for r in rows], label="min angle")
        ax.plot(x, [r.get(f"{layer}_max_angle") for r in rows], label="max angle")
        ax.set_title(layer)
        ax.set_xlabel("epoch")
        ax.set_ylabel("degrees")
        ax.set_ylim(0, 180)
        ax.grid(alpha=0.3)
        removed = [r.get(f"{layer}_removed_total") for r in rows]
        if any(removed):
            twin = ax.twinx()
            twin.plot(x, removed, color="grey", linestyle="--", label="removed")
            twin.set_ylabel("neurons removed")
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def angle_histograms(first: Mapping[str, Sequence[float]], last: Mapping[str, Sequence[float]],
                     threshold: float) -> Figure:
    """Histogram of pairwise angles per layer at the first and the last distinctiveness check."""
    layers = list(first)
    fig, axes = plt.subplots(1, len(layers), figsize=(4.5 * len(layers), 3.8), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        ax.hist(first[layer], bins=60, range=(0, 180), alpha=0.6, label="first check")
        ax.hist(last[layer], bins=60, range=(0, 180), alpha=0.6, label="last check")
        for t in (threshold, 180 - threshold):
            ax.axvline(t, color="red", linewidth=1)
        ax.set_title(f"{layer}: pairwise angles")
        ax.set_xlabel("degrees")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def class_means(descriptors: Mapping[str, np.ndarray], labels: np.ndarray,
                classes: Sequence[str]) -> Figure:
    """Mean descriptor per class: one panel per descriptor, each (N, D); labels (N,)."""
    fig, axes = plt.subplots(len(descriptors), 1, figsize=(9, 3.2 * len(descriptors)),
                             squeeze=False)
    for ax, (name, x) in zip(axes[:, 0], descriptors.items()):
        for c, cls in enumerate(classes):
            if np.any(labels == c):
                ax.plot(x[labels == c].mean(0), label=cls, linewidth=0.8)
        ax.set_title(f"{name}: mean per class")
        ax.set_xlabel("bin")
        ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    return fig

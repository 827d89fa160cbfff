"""Matplotlib figures logged to MLflow and written beside the reports (Agg backend, no screen)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from emoprune.evaluation.report import PUBLISHED, model_label, model_order  # noqa: E402


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


def curves(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
) -> Figure:
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


def fitted_title(title: str, width_in: float, fontsize: float = 12) -> str:
    """``title`` wrapped onto lines that fit a figure ``width_in`` inches wide (a one-layer
    figure is narrow: its title would be clipped at both edges)."""
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)))
    return textwrap.fill(title, width=chars)


def angle_traces(rows: Sequence[Mapping[str, float]], title: str) -> Figure:
    """Min and max pairwise angle per layer over epochs, from wide rows (``<layer>_min_angle``)."""
    layers = sorted(
        {k.rsplit("_min_angle", 1)[0] for r in rows for k in r if k.endswith("_min_angle")}
    )
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
    fig.suptitle(fitted_title(title, fig.get_figwidth()))
    fig.tight_layout()
    return fig


def angle_histograms(
    first: Mapping[str, Sequence[float]], last: Mapping[str, Sequence[float]], threshold: float
) -> Figure:
    """Histogram of pairwise angles per layer at the checkpoint pruning starts from (``first``)
    and at the last distinctiveness check (``last``, before it pruned)."""
    layers = list(first)
    fig, axes = plt.subplots(1, len(layers), figsize=(4.5 * len(layers), 3.8), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        ax.hist(first[layer], bins=60, range=(0, 180), alpha=0.6, label="start of pruning")
        ax.hist(last[layer], bins=60, range=(0, 180), alpha=0.6, label="last check")
        for t in (threshold, 180 - threshold):
            ax.axvline(t, color="red", linewidth=1)
        ax.set_title(f"{layer}: pairwise angles")
        ax.set_xlabel("degrees")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def class_means(
    descriptors: Mapping[str, np.ndarray], labels: np.ndarray, classes: Sequence[str]
) -> Figure:
    """Mean descriptor per class: one panel per descriptor, each (N, D); labels (N,)."""
    fig, axes = plt.subplots(
        len(descriptors), 1, figsize=(9, 3.2 * len(descriptors)), squeeze=False
    )
    for ax, (name, x) in zip(axes[:, 0], descriptors.items()):
        for c, cls in enumerate(classes):
            if np.any(labels == c):
                ax.plot(x[labels == c].mean(0), label=cls, linewidth=0.8)
        ax.set_title(f"{name}: mean per class")
        ax.set_xlabel("bin")
        ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    return fig


def confusion_figure(cm: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """(C, C) counts, rows = true class: colour = row-normalised rate, text = count."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    rate = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="fraction of true class")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(int(cm[i, j])),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rate[i, j] > 0.5 else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def accuracy_bars(results: Mapping[str, Mapping[str, Any]], n_classes: int = 7) -> Figure:
    """Mean accuracy per model ± std over folds, each fold as a dot, published test acc as x."""
    order = [k for k in model_order(results) if results[k].get("acc_mean") is not None]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(order) + 2), 4))
    x = np.arange(len(order))
    labelled: set[str] = set()  # one legend entry per marker kind

    def once(name: str) -> str | None:
        first = name not in labelled
        labelled.add(name)
        return name if first else None

    ax.bar(
        x,
        [results[k]["acc_mean"] for k in order],
        yerr=[results[k].get("acc_std") or 0 for k in order],
        capsize=4,
        color="#4c72b0",
        alpha=0.8,
        label="ours (mean ± std)",
    )
    for i, k in enumerate(order):
        pts = list(results[k].get("acc_by_fold", {}).values())
        if pts:  # spread the dots a little so equal folds stay visible
            ax.scatter(
                i + np.linspace(-0.15, 0.15, len(pts)),
                pts,
                color="black",
                s=12,
                zorder=3,
                label=once("folds"),
            )
        pub = PUBLISHED.get(k, {}).get("test_acc")
        if pub is not None:
            ax.scatter(
                [i],
                [pub],
                marker="x",
                color="#c44e52",
                s=50,
                zorder=4,
                label=once("published test acc"),
            )
    ax.axhline(1 / n_classes, color="grey", linestyle="--", label=f"chance (1/{n_classes})")
    ax.set_xticks(x, [model_label(k, results[k]) for k in order], rotation=20, ha="right")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Accuracy over the manifest folds")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_png(fig: Figure, path) -> None:
    """Save ``fig`` as a PNG inside a folder being written atomically, then close it."""
    fig.savefig(path, dpi=100)
    close(fig)

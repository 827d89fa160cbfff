"""Matplotlib figures logged to MLflow and written beside the reports (Agg backend, no screen)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

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

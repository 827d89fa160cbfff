"""Cross-validation bookkeeping shared by every model: the manifest's folds, splits, summaries.

Every model trains on the other folds and is scored on its own fold, with the folds fixed once by
``ingest``, so all models are compared on exactly the same held-out images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emoprune.data.ingest import read_manifest
from emoprune.training import channel_stats, to_tensor_images

MANIFEST = Path("outputs/ingest/manifest.csv")


@dataclass
class Folds:
    """Labels (N,) and fold ids (N,) in manifest order."""

    labels: np.ndarray
    folds: np.ndarray
    classes: tuple[str, ...]

    @property
    def ids(self) -> list[int]:
        return sorted(int(k) for k in np.unique(self.folds))

    def split(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(train indices, validation indices) for fold ``k``."""
        return np.flatnonzero(self.folds != k), np.flatnonzero(self.folds == k)


def load_folds(classes: Sequence[str], manifest: str | Path = MANIFEST) -> Folds:
    records = read_manifest(manifest)
    return Folds(
        labels=np.array([r.label for r in records], dtype=np.int64),
        folds=np.array([r.fold for r in records], dtype=np.int64),
        classes=tuple(classes),
    )


@dataclass
class FoldTensors:
    """One fold's normalised inputs (N, 3, S, S) float32 and labels (N,) int64.

    ``mean``/``std`` are the training part's channel statistics: the validation part is normalised
    with them too, so nothing about the held-out images leaks into training.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    mean: np.ndarray
    std: np.ndarray


def fold_tensors(images: np.ndarray, folds: Folds, k: int) -> FoldTensors:
    """Split (N, S, S, 3) uint8 ``images`` for fold ``k`` and normalise with training stats."""
    train, val = folds.split(k)
    train_images = np.asarray(images[train])
    mean, std = channel_stats(train_images)
    return FoldTensors(
        x_train=to_tensor_images(train_images, mean, std),
        y_train=torch.from_numpy(folds.labels[train]),
        x_val=to_tensor_images(np.asarray(images[val]), mean, std),
        y_val=torch.from_numpy(folds.labels[val]),
        mean=mean,
        std=std,
    )


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample std (ddof=1; 0 for a single fold) of per-fold values."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()),
            "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def summarise(per_fold: Mapping[int, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """{fold: {metric: value}} -> {metric: {"mean", "std"}} over the folds."""
    keys = next(iter(per_fold.values())).keys()
    return {key: mean_std([m[key] for m in per_fold.values()]) for key in keys}


def mean_rows(rows: Sequence[Mapping[str, float]], by: str = "epoch",
              exclude: Sequence[str] = ("fold",)) -> list[dict[str, float]]:
    """Average rows sharing ``by`` (e.g. one row per fold and epoch -> one per epoch)."""
    groups: dict[float, list[Mapping[str, float]]] = {}
    for row in rows:
        groups.setdefault(row[by], []).append(row)
    out = []
    for key in sorted(groups):
        group = groups[key]
        numeric = [c for c, v in group[0].items()
                   if c != by and c not in exclude and isinstance(v, int | float | None)
                   and not isinstance(v, bool)]
        out.append({by: key, **{c: float(np.mean([g[c] for g in group if g.get(c) is not None]))
                                for c in numeric if any(g.get(c) is not None for g in group)}})
    return out

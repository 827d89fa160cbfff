"""Cross-validation on the manifest's folds: per-fold seeds, normalised fold tensors, scores.

Every model trains on the other folds and is scored on its own fold, with the folds fixed once by
``ingest``, so all models are compared on exactly the same held-out images. The splits themselves
(``Folds``) are torch-free, in ``data.folds``; with ``cv.repeats`` R > 1 split ``k = r * K + f``
holds out fold ``f`` of repeat ``r``, so split ids, ``fold{k}.pt`` names and ``fold{k}/`` MLflow
keys of a single repeat are unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

# Re-exported: the training stages import the folds, the images' histograms and the fold tensors
# from here.
from emoprune.data.folds import Folds, folds_from_records, load_folds
from emoprune.evaluation.scores import accuracy_and_f1
from emoprune.models.inputs import (
    channel_histograms,
    channel_stats,
    histogram_stats,
    to_tensor_images,
)
from emoprune.training.loop import predict_proba

__all__ = [
    "channel_histograms",
    "Folds",
    "FoldTensors",
    "folds_from_records",
    "load_folds",
    "fold_tensors",
    "fold_seed",
    "score",
]


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


def fold_tensors(
    images: np.ndarray, folds: Folds, k: int, histograms: np.ndarray | None = None
) -> FoldTensors:
    """Split (N, S, S, 3) uint8 ``images`` for split ``k`` and normalise with training stats.

    ``histograms``: the images' ``models.inputs.channel_histograms`` (N, 3, 256), when the
    caller builds several folds (or models) from the same images: the training stats are then
    their sum over the fold's training rows, the same numbers without reading its pixels again.
    """
    train, val = folds.split(k)
    train_images = np.asarray(images[train])
    if histograms is None:
        mean, std = channel_stats(train_images)
    else:
        if len(histograms) != len(images):
            raise ValueError(f"{len(histograms)} histograms for {len(images)} images")
        mean, std = histogram_stats(histograms[train].sum(axis=0))
    return FoldTensors(
        x_train=to_tensor_images(train_images, mean, std),
        y_train=torch.from_numpy(folds.labels[train]),
        x_val=to_tensor_images(np.asarray(images[val]), mean, std),
        y_val=torch.from_numpy(folds.labels[val]),
        mean=mean,
        std=std,
    )


def fold_seed(seed: int, fold: int) -> int:
    """The seed of one split's run: distinct per split id, fixed by the one ``seed`` param."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{fold}".encode()).digest()[:4], "little")


def score(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    device: torch.device,
    rows: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1 and class probabilities (N, n_classes) of ``model`` on (x, y), or with
    ``rows`` on (x[rows], y), gathered batch by batch (``predict_proba``)."""
    proba = predict_proba(model, x, rows=rows, device=device)
    acc, f1 = accuracy_and_f1(y.numpy(), proba.argmax(1), n_classes)
    return {"acc": acc, "f1": f1, "proba": proba}

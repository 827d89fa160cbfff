"""The one cross-validation driver: every training stage's fold loop.

A stage says how to build and fit its model on one fold (``fit_fold``); the driver owns the rest,
the same way for every model: the fold's seed, scoring the last epoch's model on the training part
and on the held-out fold, the per-fold numbers, the epoch rows and the validation probabilities
that ``evaluate`` reads. No best-epoch picking: what the last epoch gives is what is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emoprune.evaluation.statistics import plateau_folds, summarise
from emoprune.training.crossval import fold_seed, score
from emoprune.training.loop import Callback, EpochStats, seed_everything

PROBA_FILE = "val_proba.npz"  # {"fold<k>": (n_val_k, n_classes)}: what evaluate scores


@dataclass(frozen=True)
class FoldContext:
    """Where and how one fold trains: its index ``k``, its seed, the device, the class names,
    the folder its checkpoints go to, and the per-epoch callbacks the stage adds (logging,
    angle traces)."""

    k: int
    seed: int
    device: torch.device
    classes: tuple[str, ...]
    out: Path
    callbacks: tuple[Callback, ...] = ()
    precision: str = "fp32"  # of the conv nets' training steps (loop.fit)

    def with_callbacks(self, *more: Callback) -> FoldContext:
        """The same fold with ``more`` callbacks after the stage's own."""
        return replace(self, callbacks=(*self.callbacks, *more))


@dataclass
class FoldFit:
    """What ``fit_fold`` hands back: the trained model, its epochs, and the data it was fit on.

    ``train``/``val`` are (inputs (N, ...), labels (N,)) tensors; with ``train_rows`` (N,) set,
    ``train``'s inputs are a larger set and the training part is their ``train_rows``, which the
    driver gathers batch by batch as it scores them; ``metrics`` are extra per-fold
    numbers for metrics.json; ``notes`` are facts that are not numbers (e.g. the weights used);
    ``export`` is the model to log (default: ``model``) and ``example`` a couple of its inputs
    for the logged signature (default: the first two of ``val``).
    """

    model: nn.Module
    history: Sequence[EpochStats]
    train: tuple[torch.Tensor, torch.Tensor] | None  # None in CVResult.last (scored, let go)
    val: tuple[torch.Tensor, torch.Tensor] | None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    notes: Mapping[str, Any] = field(default_factory=dict)
    export: nn.Module | None = None
    example: torch.Tensor | None = None  # inputs of ``network``, when ``val``'s are not
    train_rows: np.ndarray | None = None

    @property
    def network(self) -> nn.Module:
        """The model as it is logged and used: ``export`` if set, else ``model``."""
        return self.export if self.export is not None else self.model


@dataclass
class CVResult:
    """Per-fold numbers {fold: {metric: value}}, epoch rows (one per fold and epoch), and the
    validation probabilities {fold: (n_val, n_classes)} of a cross-validated model."""

    per_fold: dict[int, dict[str, Any]]
    epoch_rows: list[dict[str, Any]]
    predictions: dict[int, np.ndarray]
    last: FoldFit
    n_classes: int
    precision: str | None = None  # of the training steps; None where it does not apply (MLP)

    @property
    def plateau_folds(self) -> list[int]:
        return plateau_folds(self.per_fold, self.n_classes)

    def summary(self, **extra: Any) -> dict[str, Any]:
        """metrics.json: {metric: {"mean", "std"}} over folds, the per-fold values, the folds
        that never left the plateau, ``extra``."""
        return {
            **summarise(self.per_fold),
            "per_fold": {str(k): v for k, v in self.per_fold.items()},
            "n_folds": len(self.per_fold),
            "plateau_folds": self.plateau_folds,
            **({} if self.precision is None else {"precision": self.precision}),
            **extra,
        }


def cross_validate(
    fold_ids: Sequence[int],
    seed: int,
    fit_fold: Callable[[FoldContext], FoldFit],
    *,
    classes: Sequence[str],
    device: torch.device,
    out: str | Path,
    callbacks: Callable[[int], Sequence[Callback]] = lambda k: (),
    on_fold_end: Callable[[int, FoldFit], None] | None = None,
    precision: str | None = None,
) -> CVResult:
    """Run ``fit_fold(context)`` for each fold, score it, and collect the results.

    Every source of randomness is seeded from (``seed``, fold) before ``fit_fold`` runs, so a
    fold's result does not depend on which folds ran before it. ``callbacks(k)`` gives fold k's
    per-epoch callbacks. The validation probabilities are written to ``out/val_proba.npz``.
    ``precision`` (``fp32`` | ``bf16``) goes into each fold's context, for the recipes that
    honour it; None (the MLP, always float32) leaves it out of the summary. ``on_fold_end(k,
    fit)`` runs after scoring (e.g. to log the model, which may move it to the CPU).
    """
    per_fold: dict[int, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    predictions: dict[int, np.ndarray] = {}
    last = None
    for k in fold_ids:
        context = FoldContext(
            k,
            fold_seed(seed, k),
            device,
            tuple(classes),
            Path(out),
            tuple(callbacks(k)),
            precision or "fp32",
        )
        seed_everything(context.seed)
        fit = fit_fold(context)
        train = score(fit.model, *fit.train, len(classes), device, rows=fit.train_rows)
        val = score(fit.model, *fit.val, len(classes), device)
        per_fold[k] = {
            "train_acc": train["acc"],
            "train_f1": train["f1"],
            "val_acc": val["acc"],
            "val_f1": val["f1"],
            **fit.metrics,
        }
        predictions[k] = val["proba"]
        rows += [{"fold": k, **vars(h)} for h in fit.history]
        if on_fold_end is not None:
            on_fold_end(k, fit)
        # Keep the last model and its notes, not its fold's tensors (images: ~1/4 GB a fold),
        # and let go of this fold before the next one builds its own.
        last = replace(fit, train=None, val=None)
        del fit
    if last is None:
        raise ValueError("cross_validate needs at least one fold")
    np.savez(Path(out) / PROBA_FILE, **{f"fold{k}": v for k, v in predictions.items()})
    return CVResult(per_fold, rows, predictions, last, len(classes), precision)

"""The fold driver as a training stage runs it: on the manifest's folds, logged to MLflow."""

from __future__ import annotations

from emoprune.pipeline import tracking
from emoprune.pipeline.params import Params
from emoprune.training.crossval import load_folds
from emoprune.training.driver import cross_validate
from emoprune.training.loop import resolve_device


def cross_validate_logged(
    p: Params, fit_fold, out, *, model_name: str, fold_ids=None, prefix: str = ""
):
    """``training.driver.cross_validate`` on the manifest's folds, with each fold's epochs and
    final model logged to the stage's MLflow run (``<prefix>fold<k>/...``, ``model_name``
    formatted with ``k``)."""
    ids = load_folds(p.data.classes).ids if fold_ids is None else fold_ids
    return cross_validate(
        ids,
        p.seed,
        fit_fold,
        classes=p.data.classes,
        device=resolve_device(p.device),
        out=out,
        callbacks=tracking.fold_epoch_logger(prefix + "fold{k}/"),
        on_fold_end=tracking.fold_model_logger(model_name),
    )

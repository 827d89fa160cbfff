"""The fold driver as a training stage runs it: on the manifest's folds, logged to MLflow."""

from __future__ import annotations

from pathlib import Path

from emoprune.pipeline import datasets, packaged, registry, tracking
from emoprune.pipeline.params import Params
from emoprune.training.crossval import load_folds
from emoprune.training.driver import cross_validate
from emoprune.training.loop import resolve_device


def cross_validate_logged(
    p: Params, fit_fold, out, *, model_name: str, fold_ids=None, prefix: str = ""
):
    """``training.driver.cross_validate`` on the manifest's folds, with each fold's epochs and
    final model logged to the stage's MLflow run (``<prefix>fold<k>/...``; the model as a pyfunc
    with its preprocessing, ``pipeline.packaged``, named ``model_name`` formatted with ``k``,
    tagged with its checkpoint's SHA-256 for the registry), and each split's parts logged as the
    run's datasets."""
    folds = load_folds(p.data.classes)
    ids = folds.ids if fold_ids is None else fold_ids
    datasets.log_split_inputs(folds, ids, p.data.raw)
    return cross_validate(
        ids,
        p.seed,
        fit_fold,
        classes=p.data.classes,
        device=resolve_device(p.device),
        out=out,
        callbacks=tracking.fold_epoch_logger(prefix + "fold{k}/"),
        on_fold_end=_logged_and_tagged(
            tracking.fold_model_logger(model_name, packaged.fold_packager(model_name, out)), out
        ),
    )


def _logged_and_tagged(log_model, out):
    def on_fold_end(k, fit):
        info = log_model(k, fit)
        registry.tag_logged_model(info.model_id, Path(out) / f"fold{k}.pt")

    return on_fold_end

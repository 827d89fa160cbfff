"""The fold driver as a training stage runs it: on the manifest's folds, logged to MLflow."""

from __future__ import annotations

from pathlib import Path

from emoprune.data.folds import load_folds
from emoprune.pipeline import datasets, packaged, registry, tracking
from emoprune.pipeline.params import Params
from emoprune.training.driver import cross_validate
from emoprune.training.loop import resolve_device, resolve_precision


def cross_validate_logged(
    p: Params,
    fit_fold,
    out,
    *,
    model_name: str,
    fold_ids=None,
    prefix: str = "",
    conv_net: bool = True,
):
    """``training.driver.cross_validate`` on the manifest's folds, with each fold's epochs and
    final model logged to the stage's MLflow run (``<prefix>fold<k>/...``; the model as a pyfunc
    with its preprocessing, ``pipeline.packaged``, named ``model_name`` formatted with ``k``,
    tagged with its checkpoint's SHA-256 for the registry), and each split's parts logged as the
    run's datasets. A ``conv_net`` trains in params.yaml's precision, resolved for the device
    (``auto``: bf16 where the hardware has it) and recorded as the run's ``precision`` tag and in
    the summary; the MLP (``conv_net=False``) always trains in float32."""
    device = resolve_device(p.device)
    precision = resolve_precision(p.precision, device) if conv_net else None
    if precision is not None:
        tracking.set_tag("precision", precision)
    folds = load_folds(p.data.classes)
    ids = folds.ids if fold_ids is None else fold_ids
    datasets.log_split_inputs(folds, ids, p.data.raw)
    return cross_validate(
        ids,
        p.seed,
        fit_fold,
        classes=p.data.classes,
        device=device,
        out=out,
        callbacks=tracking.fold_epoch_logger(prefix + "fold{k}/"),
        on_fold_end=_logged_and_tagged(
            tracking.fold_model_logger(model_name, packaged.fold_packager(model_name, out)), out
        ),
        precision=precision,
    )


def _logged_and_tagged(log_model, out):
    def on_fold_end(k, fit):
        info = log_model(k, fit)
        registry.tag_logged_model(info.model_id, Path(out) / f"fold{k}.pt")

    return on_fold_end

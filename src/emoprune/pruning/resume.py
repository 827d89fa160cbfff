"""prune_cnn's fold: resume a CNN checkpoint and train on to the same epoch budget, pruning.

Pruned and unpruned CNNs get the same number of epochs: pruning resumes train_cnn's checkpoint of
``start_epoch`` (weights and Adam's moments) and trains to ``epochs`` with a distinctiveness check
every ``every`` epochs, so the two differ only by what pruning did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from emoprune.evaluation.size import model_size_and_latency
from emoprune.models.cnn import CNN
from emoprune.pruning.baselines import Schedule, ScheduledRemoval
from emoprune.pruning.callbacks import Pruner
from emoprune.pruning.mask import PruneMask
from emoprune.pruning.shrink import shrink
from emoprune.training import checkpoints as ckpt
from emoprune.training.crossval import FoldTensors, score
from emoprune.training.driver import FoldContext, FoldFit
from emoprune.training.loop import adam, fit


def prune_fold(
    prune: Any,
    cnn: Any,
    model: CNN,
    opt_state: dict,
    data: FoldTensors,
    fold: FoldContext,
    log: Callable[[dict, int], None],
) -> FoldFit:
    """Train ``model`` (resumed at ``prune.start_epoch`` with Adam state ``opt_state``) to
    ``cnn.epochs`` with Gedeon's distinctiveness checks on ``prune.layers``.

    ``prune`` and ``cnn`` are the params.yaml sections (read by attribute). The network is scored
    before pruning and just after the first check that removed something; the returned fit's
    ``export`` is the physically shrunk network, and its notes hold the ``mask`` and the
    ``pruner`` (angle trace rows, pruned-id log, angle histograms).
    """
    model.to(fold.device)
    opt = adam(model, cnn.lr, opt_state)
    mask = PruneMask(model, prune.layers)
    mask.attach(opt)
    val = (data.x_val, data.y_val)
    before = score(model, *val, len(fold.classes), fold.device)
    after_first: dict[str, Any] = {}
    pruner = Pruner(
        mask,
        complementary=prune.complementary,
        start_epoch=prune.start_epoch,
        every=prune.every,
        mode=prune.mode,
        threshold=prune.threshold,
        x_train=data.x_train,
        device=fold.device,
        fold=fold.k,
        log=log,
        on_first_prune=lambda m: after_first.update(score(m, *val, len(fold.classes), fold.device)),
    )
    # The trace starts from the checkpoint pruning resumes (step = start_epoch).
    pruner.record(prune.start_epoch, model, pruner.activations(model))
    history = fit(
        model,
        (data.x_train, data.y_train),
        val,
        optimizer=opt,
        epochs=cnn.epochs,
        batch_size=cnn.batch_size,
        device=fold.device,
        seed=fold.seed,
        start_epoch=prune.start_epoch,
        augment=cnn.augment,
        desc=f"prune fold {fold.k}",
        callbacks=[*fold.callbacks, pruner],
        precision=fold.precision,
    )
    small, sizes = _shrink_and_size(model, mask, fold.device)
    metrics = {
        "val_acc_before": before["acc"],
        "val_f1_before": before["f1"],
        "val_acc_after_first_prune": after_first.get("acc", before["acc"]),
        "val_f1_after_first_prune": after_first.get("f1", before["f1"]),
        **sizes,
    }
    return FoldFit(
        model,
        history,
        (data.x_train, data.y_train),
        val,
        metrics,
        notes={"mask": mask, "pruner": pruner},
        export=small,
    )


def _shrink_and_size(model: CNN, mask: PruneMask, device: Any) -> tuple[CNN, dict[str, Any]]:
    """The physically shrunk copy of masked ``model`` and the fold's size numbers: neurons
    left and removed per masked layer, parameters and batch-1 latency before and after."""
    mask.detach()
    mask.apply()
    small = shrink(model.cpu(), mask)
    size_full = model_size_and_latency(model, threads=1)
    size_small = model_size_and_latency(small, threads=1)
    model.to(device)
    return small, {
        **{f"{layer}_left": int(mask.alive(layer).sum()) for layer in mask.layers},
        **{f"{layer}_removed": int((~mask.alive(layer)).sum()) for layer in mask.layers},
        "params_unpruned": size_full["params"],
        "params_shrunk": size_small["params"],
        "latency_ms_unpruned": size_full["latency_ms"],
        "latency_ms_shrunk": size_small["latency_ms"],
    }


def resume_epoch(schedule: Schedule, start_epoch: int, checkpoint_every: int, epochs: int) -> int:
    """The epoch an equal-size control resumes train_cnn from: the latest checkpoint at or
    before its first scheduled removal (``epochs``, the final model, when nothing is removed).

    Until its first removal a control *is* the unpruned run (same checkpoint, seeds and
    batches; a removal-free epoch changes nothing), so starting later gives the same weights
    for less training. ``start_epoch`` is a checkpoint (params.py checks it).
    """
    if not schedule:
        return epochs
    first = min(schedule)
    return max(start_epoch, min(first, epochs - 1) // checkpoint_every * checkpoint_every)


def baseline_fold(
    kind: str,
    schedule: Schedule,
    layers: Sequence[str],
    cnn: Any,
    model: CNN,
    opt_state: dict | None,
    resumed_at: int,
    data: FoldTensors,
    fold: FoldContext,
) -> FoldFit:
    """An equal-size control of one fold: ``model``, train_cnn's checkpoint of ``resumed_at``
    (with Adam state ``opt_state``; None when ``resumed_at`` is ``cnn.epochs``), trained on to
    ``cnn.epochs`` with the same seed and batches, losing ``schedule``'s counts of live
    neurons, chosen by ``kind`` (``random`` | ``magnitude``), after the scheduled epochs.

    ``layers`` are the masked layers (prune.layers; the schedule names some of them); with an
    empty schedule the control is the unpruned CNN itself and nothing trains. The fit's
    ``export`` is the shrunk network; its notes hold the ``mask`` and the ``removal`` callback
    (its log names every neuron removed).
    """
    model.to(fold.device)
    mask = PruneMask(model, layers)
    removal = ScheduledRemoval(mask, kind, schedule, seed=fold.seed)
    history: list = []
    if resumed_at < cnn.epochs:
        opt = adam(model, cnn.lr, opt_state)
        mask.attach(opt)
        removal.remove_at(resumed_at, model)  # a removal due at the checkpoint's own epoch
        history = fit(
            model,
            (data.x_train, data.y_train),
            (data.x_val, data.y_val),
            optimizer=opt,
            epochs=cnn.epochs,
            batch_size=cnn.batch_size,
            device=fold.device,
            seed=fold.seed,
            start_epoch=resumed_at,
            augment=cnn.augment,
            desc=f"{kind} fold {fold.k}",
            callbacks=[*fold.callbacks, removal],
            precision=fold.precision,
        )
    small, sizes = _shrink_and_size(model, mask, fold.device)
    return FoldFit(
        model,
        history,
        (data.x_train, data.y_train),
        (data.x_val, data.y_val),
        {**sizes, "resumed_at_epoch": resumed_at},
        notes={"mask": mask, "removal": removal},
        export=small,
    )


def pool_histograms(pruners: list[Pruner]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The pairwise angles of the first and of the last check, {layer: angles}, over all folds."""
    first: dict[str, list[np.ndarray]] = {}
    last: dict[str, list[np.ndarray]] = {}
    for pruner in pruners:
        for layer, values in pruner.histograms.get("first", {}).items():
            first.setdefault(layer, []).append(values)
            last.setdefault(layer, []).append(pruner.histograms["last"][layer])
    return (
        {k: np.concatenate(v) for k, v in first.items()},
        {k: np.concatenate(v) for k, v in last.items()},
    )


def control_fold(
    kind: str,
    schedule: Schedule,
    prune: Any,
    cnn: Any,
    cnn_dir: str,
    data: FoldTensors,
    fold: FoldContext,
) -> FoldFit:
    """``baseline_fold`` from train_cnn's checkpoints in ``cnn_dir``: resumed at
    ``resume_epoch`` (the final model when ``schedule`` is empty), the control's own
    checkpoint saved as ``fold.out/fold<k>.pt`` with its mask."""
    at = resume_epoch(schedule, prune.start_epoch, cnn.checkpoint_every, cnn.epochs)
    if at < cnn.epochs:
        model, meta, adam_state = ckpt.load_resumable(cnn_dir, fold.k, at)
    else:
        model, meta, adam_state = ckpt.load_cnn_checkpoint(ckpt.checkpoint_path(cnn_dir, fold.k))
    fit = baseline_fold(kind, schedule, prune.layers, cnn, model, adam_state, at, data, fold)
    save_pruned(fit, meta, cnn.epochs, fold)
    return fit


def save_pruned(fit: FoldFit, meta: dict, epochs: int, fold: FoldContext) -> None:
    """``fold.out/fold<k>.pt``: a pruned fold's masked network at ``epochs`` with its mask
    (``fit.notes["mask"]``) in the meta, for evaluate and predict to shrink it again."""
    fold.out.mkdir(parents=True, exist_ok=True)
    state = {**meta, "epoch": epochs, "pruned": fit.notes["mask"].state()}
    ckpt.save_cnn(ckpt.checkpoint_path(fold.out, fold.k), fit.model, **state)

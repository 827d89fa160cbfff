"""prune_cnn's fold: resume a CNN checkpoint and train on to the same epoch budget, pruning.

Pruned and unpruned CNNs get the same number of epochs: pruning resumes train_cnn's checkpoint of
``start_epoch`` (weights and Adam's moments) and trains to ``epochs`` with a distinctiveness check
every ``every`` epochs, so the two differ only by what pruning did.

Until its first check that acts, the pruned run *is* train_cnn's run (same checkpoint, seeds and
batches; a check that removes nothing changes nothing), so a fold resumes from train_cnn's latest
checkpoint at or before that check, read off train_cnn's angle trace, and replays the skipped
epochs' records from that trace: the same weights and records for less training. Where no check
before the final epoch can act, the fold takes train_cnn's final model and runs only the last
check, on the final weights, as the full run would.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emoprune.evaluation.size import model_size_and_latency
from emoprune.models.cnn import CNN
from emoprune.pruning.baselines import Schedule, ScheduledRemoval
from emoprune.pruning.callbacks import Pruner, UnprunedState
from emoprune.pruning.mask import PruneMask
from emoprune.pruning.shrink import shrink
from emoprune.training import checkpoints as ckpt
from emoprune.training.crossval import FoldTensors, score
from emoprune.training.driver import FoldContext, FoldFit
from emoprune.training.loop import EpochStats, adam
from emoprune.training.recipes import fit_cnn

# Degrees. The trace's angles and the check's come from the same float64 code; the margin only
# makes a near-threshold epoch count as acting (resuming earlier is always safe).
ANGLE_MARGIN = 1e-6


@dataclass
class Skip:
    """train_cnn's record of one fold up to ``epoch``, where prune_fold picks its run up:
    the checkpoint's weights and Adam state (None at the final epoch), the EpochStats of epochs
    start_epoch+1..epoch, and the unpruned angle trace rows {epoch: {layer: row}} of epochs
    start_epoch..epoch."""

    epoch: int
    state_dict: dict
    opt_state: dict | None
    history: list[EpochStats]
    angles: dict[int, dict[str, Mapping[str, Any]]]


def _checkpoint_at_or_before(epoch: int, start_epoch: int, checkpoint_every: int, epochs: int):
    """train_cnn's latest resumable checkpoint at or before ``epoch`` (never the final one,
    which has no optimizer state); ``start_epoch`` is a checkpoint (params.py checks it)."""
    return max(start_epoch, min(epoch, epochs - 1) // checkpoint_every * checkpoint_every)


def _by_epoch(rows: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, Mapping[str, Any]]]:
    """Angle trace rows as {epoch: {layer: row}}."""
    grouped: dict[int, dict[str, Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(int(row["epoch"]), {})[row["layer"]] = row
    return grouped


def _load_at(cnn_dir: str, fold: int, epoch: int, epochs: int) -> tuple[CNN, dict, dict | None]:
    """train_cnn's (model, meta, Adam state) of ``fold`` at ``epoch``: a resumable checkpoint,
    or at ``epochs`` the final model, which has no Adam state (None)."""
    if epoch < epochs:
        return ckpt.load_resumable(cnn_dir, fold, epoch)
    return ckpt.load_cnn_checkpoint(ckpt.checkpoint_path(cnn_dir, fold))


def skip_epoch(
    angles: Sequence[Mapping[str, Any]], prune: Any, checkpoint_every: int, epochs: int
) -> int:
    """The epoch a pruned fold can resume train_cnn's run from: the latest checkpoint at or
    before the first epoch whose unpruned angles could make a check act (a pair of
    ``prune.layers`` under ``prune.threshold`` or over 180 - it), or before the last check;
    ``epochs`` (train_cnn's final model) where the last check is at the final epoch and none
    before it can act, since that check then sees train_cnn's final weights.

    ``angles`` are the fold's unpruned trace rows (epoch, layer, min_angle, max_angle). Epochs
    before the returned one have no pair past the thresholds, so their trace rows are known
    exactly (no pairs to count); ``prune.start_epoch`` when the trace does not cover them.
    """
    start, t = prune.start_epoch, prune.threshold
    last_check = start + (epochs - start) // prune.every * prune.every
    by_epoch = _by_epoch(angles)
    for epoch in range(start, last_check):
        rows = by_epoch.get(epoch, {})
        if any(layer not in rows for layer in prune.layers):
            break
        if any(
            rows[layer]["min_angle"] < t + ANGLE_MARGIN
            or rows[layer]["max_angle"] > 180 - t - ANGLE_MARGIN
            for layer in prune.layers
        ):
            break
    else:
        if last_check == epochs:
            return epochs
        epoch = last_check
    return _checkpoint_at_or_before(epoch, start, checkpoint_every, epochs)


def prune_fold(
    prune: Any,
    cnn: Any,
    model: CNN,
    opt_state: dict,
    data: FoldTensors,
    fold: FoldContext,
    log: Callable[[dict, int], None],
    skip: Skip | None = None,
) -> FoldFit:
    """Train ``model`` (resumed at ``prune.start_epoch`` with Adam state ``opt_state``) to
    ``cnn.epochs`` with Gedeon's distinctiveness checks on ``prune.layers``.

    ``prune`` and ``cnn`` are the params.yaml sections (read by attribute). The network is scored
    before pruning and just after the first check that removed something; the returned fit's
    ``export`` is the physically shrunk network, and its notes hold the ``mask`` and the
    ``pruner`` (angle trace rows, pruned-id log, angle histograms). With ``skip`` the run picks
    up the unpruned run at ``skip.epoch`` (see ``skip_epoch``) and replays the epochs before it
    from the record: the trace rows, and the epoch stats to ``fold.callbacks`` (logging).
    """
    model.to(fold.device)
    mask = PruneMask(model, prune.layers)
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
    acts = pruner.activations(model)
    pruner.snapshot("first", model, acts)
    at, history = prune.start_epoch, []
    if skip is not None:
        _replay(pruner, skip, fold, model)
        model.load_state_dict(skip.state_dict)
        at, opt_state, history = skip.epoch, skip.opt_state, list(skip.history)
    opt = adam(model, cnn.lr, opt_state)
    mask.attach(opt)
    pruner.optimizer = opt
    # The trace starts from the checkpoint pruning resumes; there a check runs when one is due.
    if pruner.is_check(at):
        pruner(history[-1], model)
    else:
        pruner.record(at, model, acts if skip is None else pruner.activations(model))
    history += fit_cnn(
        model, data, cnn, fold, opt, desc="prune", callbacks=[pruner], start_epoch=at
    )
    # The stage keeps the pruner for its records and the controls' start, not the fold's images.
    pruner.x_train, pruner.optimizer = None, None
    small, sizes = _shrink_and_size(model, mask, fold.device)
    metrics = {
        "val_acc_before": before["acc"],
        "val_f1_before": before["f1"],
        "val_acc_after_first_prune": after_first.get("acc", before["acc"]),
        "val_f1_after_first_prune": after_first.get("f1", before["f1"]),
        **sizes,
        "resumed_at_epoch": at,
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


def _replay(pruner: Pruner, skip: Skip, fold: FoldContext, model: CNN) -> None:
    """The records of the epochs before ``skip.epoch`` as the pruned run would have written
    them: the unpruned trace's angles with no pair past the thresholds (``skip_epoch`` chose
    the epoch so), and the epoch stats to ``fold.callbacks``."""
    stats = {s.epoch: s for s in skip.history}
    for epoch in range(pruner.start_epoch, skip.epoch + 1):
        if epoch in stats:
            for callback in fold.callbacks:
                callback(stats[epoch], model)
        if epoch == skip.epoch:  # its trace row (or check) is the resumed run's own
            break
        check = pruner.is_check(epoch)
        rows = []
        for layer in pruner.layers:
            if check:  # a check that found nothing still logs its (empty) ids
                pruner.log_ids.append(
                    {"fold": fold.k, "epoch": epoch, "layer": layer}
                    | {"removed": [], "similar": [], "complementary": []}
                )
            row = skip.angles[epoch][layer]
            rows.append(
                {
                    "fold": fold.k,
                    "epoch": epoch,
                    "layer": layer,
                    "min_angle": row["min_angle"],
                    "max_angle": row["max_angle"],
                    "n_similar": 0,
                    "n_complementary": 0,
                    # A check counts the mask's live neurons, the trace the non-zero ones.
                    "n_alive": pruner.mask.width(layer) if check else row["n_alive"],
                    "pruned_now": 0,
                    "removed_total": 0,
                }
            )
        pruner.add_rows(rows)


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
    return _checkpoint_at_or_before(min(schedule), start_epoch, checkpoint_every, epochs)


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
    empty schedule the control is the unpruned CNN itself and nothing trains, and resumed at
    ``cnn.epochs`` it only loses what the schedule removes there. The fit's
    ``export`` is the shrunk network; its notes hold the ``mask`` and the ``removal`` callback
    (its log names every neuron removed).
    """
    model.to(fold.device)
    mask = PruneMask(model, layers)
    removal = ScheduledRemoval(mask, kind, schedule, seed=fold.seed)
    history: list = []
    removal.remove_at(resumed_at, model)  # a removal due at the resumed epoch itself
    if resumed_at < cnn.epochs:
        opt = adam(model, cnn.lr, opt_state)
        mask.attach(opt)
        history = fit_cnn(
            model, data, cnn, fold, opt, desc=kind, callbacks=[removal], start_epoch=resumed_at
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
    """The pairwise angles at the checkpoint pruning starts from and at the last check,
    {layer: angles}, over all folds (none when no check ran)."""
    first: dict[str, list[np.ndarray]] = {}
    last: dict[str, list[np.ndarray]] = {}
    for pruner in pruners:
        for layer, values in pruner.histograms.get("last", {}).items():
            first.setdefault(layer, []).append(pruner.histograms["first"][layer])
            last.setdefault(layer, []).append(values)
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
    unpruned: UnprunedState | None = None,
) -> FoldFit:
    """``baseline_fold`` from train_cnn's checkpoints in ``cnn_dir``: resumed at
    ``resume_epoch`` (the final model when ``schedule`` is empty), the control's own
    checkpoint saved as ``fold.out/fold<k>.pt`` with its mask.

    ``unpruned``, the pruned fold's ``Pruner.before_first_removal``, is the unpruned run at
    the epoch of its first removal, which is the control's first too: the control resumes
    there, later than any checkpoint, with the same weights and Adam state."""
    at = resume_epoch(schedule, prune.start_epoch, cnn.checkpoint_every, cnn.epochs)
    model, meta, adam_state = _load_at(cnn_dir, fold.k, at, cnn.epochs)
    if unpruned is not None and schedule and at <= unpruned.epoch == min(schedule):
        model.load_state_dict(unpruned.weights)
        # Its own copy: Adam's load_state_dict keeps the tensors it is given and steps them.
        at, adam_state = unpruned.epoch, copy.deepcopy(unpruned.adam)
    fit = baseline_fold(kind, schedule, prune.layers, cnn, model, adam_state, at, data, fold)
    save_pruned(fit, meta, cnn.epochs, fold)
    return fit


def pruned_fold(
    prune: Any,
    cnn: Any,
    cnn_dir: str,
    trace: Mapping[int, Mapping[str, list]],
    data: FoldTensors,
    fold: FoldContext,
    log: Callable[[dict, int], None],
) -> FoldFit:
    """``prune_fold`` from train_cnn's checkpoints in ``cnn_dir``, picking the unpruned run up
    at ``skip_epoch`` of the fold's unpruned ``trace`` (pruning.callbacks.load_unpruned_trace;
    from ``prune.start_epoch`` without one); saved as ``fold.out/fold<k>.pt`` with its mask."""
    model, meta, opt_state = ckpt.load_resumable(cnn_dir, fold.k, prune.start_epoch)
    record = trace.get(fold.k, {"epochs": [], "angles": []})
    at = skip_epoch(record["angles"], prune, cnn.checkpoint_every, cnn.epochs)
    skip = None
    if at > prune.start_epoch:
        resumed, _, state = _load_at(cnn_dir, fold.k, at, cnn.epochs)
        epochs = record["epochs"]
        # Epochs this stage does not train: no wall time of their own.
        history = [
            EpochStats(**{**e, "seconds": None})
            for e in epochs
            if prune.start_epoch < e["epoch"] <= at
        ]
        if [h.epoch for h in history] == list(range(prune.start_epoch + 1, at + 1)):
            skip = Skip(at, resumed.state_dict(), state, history, _by_epoch(record["angles"]))
    fit = prune_fold(prune, cnn, model, opt_state, data, fold, log, skip)
    save_pruned(fit, meta, cnn.epochs, fold)
    return fit


def save_pruned(fit: FoldFit, meta: dict, epochs: int, fold: FoldContext) -> None:
    """``fold.out/fold<k>.pt``: a pruned fold's masked network at ``epochs`` with its mask
    (``fit.notes["mask"]``) in the meta, for evaluate and predict to shrink it again."""
    fold.out.mkdir(parents=True, exist_ok=True)
    state = {**meta, "epoch": epochs, "pruned": fit.notes["mask"].state()}
    ckpt.save_cnn(ckpt.checkpoint_path(fold.out, fold.k), fit.model, **state)

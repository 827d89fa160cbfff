"""prune_cnn's fold: resume a CNN checkpoint and train on to the same epoch budget, pruning.

Pruned and unpruned CNNs get the same number of epochs: pruning resumes train_cnn's checkpoint of
``start_epoch`` (weights and Adam's moments) and trains to ``epochs`` with a distinctiveness check
every ``every`` epochs, so the two differ only by what pruning did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from emoprune.evaluation.size import model_size_and_latency
from emoprune.models.cnn import CNN
from emoprune.pruning.callbacks import Pruner
from emoprune.pruning.mask import PruneMask
from emoprune.pruning.shrink import shrink
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
    )
    mask.detach()
    mask.apply()
    small = shrink(model.cpu(), mask)
    size_full = model_size_and_latency(model, threads=1)
    size_small = model_size_and_latency(small, threads=1)
    model.to(fold.device)
    metrics = {
        "val_acc_before": before["acc"],
        "val_f1_before": before["f1"],
        "val_acc_after_first_prune": after_first.get("acc", before["acc"]),
        "val_f1_after_first_prune": after_first.get("f1", before["f1"]),
        **{f"{layer}_left": int(mask.alive(layer).sum()) for layer in prune.layers},
        **{f"{layer}_removed": int((~mask.alive(layer)).sum()) for layer in prune.layers},
        "params_unpruned": size_full["params"],
        "params_shrunk": size_small["params"],
        "latency_ms_unpruned": size_full["latency_ms"],
        "latency_ms_shrunk": size_small["latency_ms"],
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

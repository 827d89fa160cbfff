"""How each model is built and fit on one fold: the ``fit_fold`` bodies of the training stages.

Each recipe takes its params.yaml section as ``cfg`` (read by attribute, so any object with those
fields will do), one fold's data and its ``FoldContext`` (seed, device, checkpoint folder,
callbacks); it returns the ``FoldFit`` that the cross-validation driver scores.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emoprune.errors import UserError
from emoprune.models.cnn import CNN
from emoprune.models.inputs import take_rows
from emoprune.models.mlp import mlp
from emoprune.training import checkpoints as ckpt
from emoprune.training.crossval import FoldTensors
from emoprune.training.driver import FoldContext, FoldFit
from emoprune.training.loop import Callback, EpochStats, adam, fit


def train_cnn_fold(cfg: Any, data: FoldTensors, fold: FoldContext, in_size: int) -> FoldFit:
    """The paper's CNN from scratch (``cfg``: the cnn section), with a resumable checkpoint
    every ``cfg.checkpoint_every`` epochs for prune_cnn to start from."""
    model = CNN(
        len(fold.classes),
        cfg.conv_activation,
        cfg.fc_activation,
        in_size=in_size,
        conv_init=cfg.conv_init,
        fc_init=cfg.fc_init,
    ).to(fold.device)
    opt = adam(model, cfg.lr)
    meta = {
        "fold": fold.k,
        "mean": data.mean.tolist(),
        "std": data.std.tolist(),
        "classes": list(fold.classes),
    }
    every = ckpt.CheckpointEvery(fold.out, fold.k, cfg.checkpoint_every, cfg.epochs, opt, meta)
    history = fit_cnn(model, data, cfg, fold, opt, desc="cnn", callbacks=[every])
    ckpt.save_cnn(ckpt.checkpoint_path(fold.out, fold.k), model, epoch=cfg.epochs, **meta)
    seconds = float(np.mean([h.seconds for h in history]))
    return FoldFit(
        model,
        history,
        (data.x_train, data.y_train),
        (data.x_val, data.y_val),
        {"seconds_per_epoch": seconds},
    )


def fit_cnn(
    model: torch.nn.Module,
    data: FoldTensors,
    cfg: Any,
    fold: FoldContext,
    optimizer: torch.optim.Optimizer,
    *,
    desc: str,
    callbacks: Sequence[Callback] = (),
    start_epoch: int = 0,
) -> list[EpochStats]:
    """Train the CNN on ``data``'s training part from ``start_epoch`` to ``cfg.epochs`` (``cfg``:
    the cnn section: its budget, batch size and augmentation), validated on the held-out part,
    with the fold's callbacks and then ``callbacks``.

    The one schedule of train_cnn, prune_cnn and the equal-size controls: a pruned run and its
    unpruned twin differ only in what their callbacks do to the network.
    """
    return fit(
        model,
        (data.x_train, data.y_train),
        (data.x_val, data.y_val),
        optimizer=optimizer,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        device=fold.device,
        seed=fold.seed,
        start_epoch=start_epoch,
        augment=cfg.augment,
        desc=f"{desc} fold {fold.k}",
        callbacks=[*fold.callbacks, *callbacks],
        precision=fold.precision,
    )


def check_pca_components(
    n_components: int, descriptors: Mapping[str, np.ndarray], train_sizes: Sequence[int]
) -> None:
    """A UserError unless every fold's PCA can keep ``n_components`` (mlp.pca_components): at
    most a descriptor's length (``descriptors`` {name: (N, dim)}) and the fewest training frames
    of any fold (``train_sizes``), checked before any fold trains."""
    fewest = min(train_sizes)
    for name, x in descriptors.items():
        bound = min(fewest, x.shape[1])
        if n_components > bound:
            raise UserError(
                f"params.yaml: mlp.pca_components must be <= {bound} ({name}: {x.shape[1]} "
                f"values per frame; the smallest training part: {fewest} frames), "
                f"got {n_components}"
            )


def train_mlp_fold(
    cfg: Any,
    descriptors: Mapping[str, np.ndarray],
    labels: np.ndarray,
    split: tuple[np.ndarray, np.ndarray],
    fold: FoldContext,
) -> FoldFit:
    """The PCA baseline (``cfg``: the mlp section): a scaler + PCA per descriptor, fit on the
    training part only so the held-out fold never shapes the features, then a sigmoid MLP.

    ``descriptors`` are {name: (N, dim)} and ``labels`` (N,) in manifest order; ``split`` is
    (train indices, validation indices). Per-fold metrics: each PCA's explained variance.
    """
    # Imported here: sklearn (about a second) is for this recipe only, not the conv nets'.
    from emoprune.features.pca import fit_descriptor_pca

    train, val = split
    pcas = {
        n: fit_descriptor_pca(x[train], cfg.pca_components, fold.seed)
        for n, x in descriptors.items()
    }
    x = torch.from_numpy(
        np.hstack([pcas[n].transform(descriptors[n]) for n in descriptors]).astype(np.float32)
    )
    y = torch.from_numpy(labels)
    model = mlp(x.shape[1], cfg.hidden, len(fold.classes))
    history = fit(
        model,
        (x[train], y[train]),
        (x[val], y[val]),
        optimizer=adam(model, cfg.lr),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        device=fold.device,
        seed=fold.seed,
        desc=f"mlp fold {fold.k}",
        callbacks=fold.callbacks,
    )
    ckpt.save_checkpoint(
        fold.out / f"fold{fold.k}.pt",
        state_dict=model.state_dict(),
        meta={
            "n_inputs": int(x.shape[1]),
            "hidden": list(cfg.hidden),
            "n_classes": len(fold.classes),
            "pca": {n: pc.to_meta() for n, pc in pcas.items()},
            "fold": fold.k,
            "classes": list(fold.classes),
        },
    )
    evr = {
        f"{n}_explained_variance": float(pc.explained_variance_ratio.sum())
        for n, pc in pcas.items()
    }
    return FoldFit(model, history, (x[train], y[train]), (x[val], y[val]), evr)


def finetune_resnet_fold(
    cfg: Any,
    arch: str,
    x: torch.Tensor,
    y: torch.Tensor,
    split: tuple[np.ndarray, np.ndarray],
    fold: FoldContext,
    weights_dirs: Sequence[str | Path] | None = None,
) -> FoldFit:
    """torchvision's transfer-learning recipe (``cfg``: the finetune section) for ``arch``.

    ``weights_dirs``: where ``build_resnet`` looks for the ImageNet file (the pipeline: only
    its DVC-tracked ``models/pretrained``).

    ``x`` (N, 3, S, S) ImageNet-normalised, ``y`` (N,). The weights actually used (``imagenet``
    or ``random``) are the fit's ``notes["weights"]``. With ``cfg.freeze_backbone`` the fit's
    ``model`` is the head, its ``train``/``val`` the features (N, in_features), ``export`` the
    full network; ``fold<k>.pt`` holds the full network either way.
    """
    train, val = split
    # Here, not at the top: torchvision costs ~1 s of start-up that train_mlp/train_cnn never use.
    from emoprune.models.resnet import (
        backbone_features,
        build_resnet,
        make_optimizer_and_scheduler,
        resnet_head,
    )

    model, weights = build_resnet(
        arch, len(fold.classes), cfg.weights, cfg.freeze_backbone, weights_dirs=weights_dirs
    )
    # freeze_backbone: the backbone (ImageNet or this fold's seeded random init) is a fixed
    # extractor (BN in eval mode, see build_resnet), so each image's features are computed once
    # and only fc trains on them, by the same recipe. Exact because this recipe does not augment
    # (an augmented image would need fresh features every epoch). The driver then scores the
    # head on the features: the probabilities the full network gives on the images.
    trained, inputs, extra = model, x, {}
    if cfg.freeze_backbone:
        start = time.perf_counter()
        inputs = torch.zeros((len(x), model.fc.in_features))
        inputs[train] = backbone_features(model, x, index=train, device=fold.device)
        inputs[val] = backbone_features(model, x, index=val, device=fold.device)
        trained, extra = resnet_head(model), {"feature_seconds": time.perf_counter() - start}
    opt, sched = make_optimizer_and_scheduler(
        trained, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.step_size, cfg.gamma
    )
    # In bf16, fit trains on a bfloat16 copy of the training images. Gathered into bfloat16 here
    # (the same bits as fit's own cast), no float32 copy of them lives while the fold trains,
    # nor after it: the driver scores the float32 ones as rows of all the images, a batch at a
    # time (325 MB each on a full-size fold). Otherwise fit trains on the very tensors the
    # driver scores.
    bf16_images = fold.precision == "bf16" and not cfg.freeze_backbone
    x_train = None if bf16_images else inputs[train]
    val_pair = (inputs[val], y[val])
    history = fit(
        trained,
        (take_rows(inputs, train, torch.bfloat16) if bf16_images else x_train, y[train]),
        val_pair,
        optimizer=opt,
        scheduler=sched,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        device=fold.device,
        seed=fold.seed,
        desc=f"{arch}{' (frozen)' if cfg.freeze_backbone else ''} fold {fold.k}",
        callbacks=fold.callbacks,
        precision=fold.precision,
    )
    _save_resnet(model, arch, weights, fold)  # the whole network, also when only fc trained
    return FoldFit(
        trained,
        history,
        (inputs if x_train is None else x_train, y[train]),
        val_pair,
        extra,
        notes={"weights": weights},
        export=model if cfg.freeze_backbone else None,
        example=x[val[:2]] if cfg.freeze_backbone else None,
        train_rows=train if x_train is None else None,
    )


def _save_resnet(model: torch.nn.Module, arch: str, weights: str, fold: FoldContext) -> None:
    """``fold<k>.pt``: the full network's state_dict (what predict and evaluate load)."""
    ckpt.save_checkpoint(
        fold.out / f"fold{fold.k}.pt",
        state_dict=model.state_dict(),
        meta={
            "arch": arch,
            "weights": weights,
            "fold": fold.k,
            "n_classes": len(fold.classes),
            "classes": list(fold.classes),
        },
    )

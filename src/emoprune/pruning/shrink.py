"""The physically smaller network, once pruning is done."""

from __future__ import annotations

import numpy as np
import torch

from emoprune.choices import HIDDEN_LAYERS
from emoprune.models.cnn import CNN
from emoprune.pruning.mask import PruneMask, removed_by_weights


def shrink(model: CNN, mask: PruneMask | None = None) -> CNN:
    """A physically smaller CNN without the removed hidden neurons; same outputs.

    Removed neurons are those in ``mask`` (for its layers; the mask must have been applied), or,
    for layers without a mask, those whose incoming row, bias and outgoing column are all zero.
    Deleting them is exact: a removed sigmoid unit still outputs sigmoid(0) = 0.5, but its
    outgoing column is zero.

    Returns:
        A new CNN with ``hidden`` = the alive counts, on the model's device, in the model's
        train/eval mode.
    """
    keep: dict[str, torch.Tensor] = {}
    for layer in HIDDEN_LAYERS:
        if mask is not None and layer in mask.removed:
            alive = mask.alive(layer)
        else:
            alive = ~removed_by_weights(*model.fc_pair(layer))
        keep[layer] = torch.as_tensor(np.flatnonzero(alive), dtype=torch.long)
    if any(len(k) == 0 for k in keep.values()):
        raise ValueError(
            f"cannot shrink: a layer has no live neurons ({ {k: len(v) for k, v in keep.items()} })"
        )
    ref = model.fc1.weight
    small = CNN(
        n_classes=model.n_classes,
        conv_activation=model.conv_activation,
        fc_activation=model.fc_activation,
        hidden=tuple(len(keep[layer]) for layer in HIDDEN_LAYERS),
        in_size=model.in_size,
    ).to(device=ref.device, dtype=ref.dtype)
    small.features.load_state_dict(model.features.state_dict())
    with torch.no_grad():
        prev: torch.Tensor | None = None  # live inputs of the current fc layer
        for n, layer in enumerate((*HIDDEN_LAYERS, "fc4")):
            src, dst = getattr(model, f"fc{n + 1}"), getattr(small, f"fc{n + 1}")
            rows = keep[layer].to(ref.device) if layer in keep else None
            w = src.weight
            if rows is not None:
                w = w.index_select(0, rows)
            if prev is not None:
                w = w.index_select(1, prev)
            dst.weight.copy_(w)
            dst.bias.copy_(src.bias if rows is None else src.bias.index_select(0, rows))
            prev = rows
    small.train(model.training)
    return small

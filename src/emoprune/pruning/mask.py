"""Removed neurons stay removed: zeroing their weights, and keeping them zero while training on.

Removed neurons are not deleted during training: their incoming row and bias and their outgoing
column are zeroed, and :class:`PruneMask` keeps them at zero through later optimiser steps
(Adam's running moments would otherwise revive them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from emoprune.choices import HIDDEN_LAYERS
from emoprune.models.cnn import CNN


def removed_by_weights(fc_in: nn.Linear, fc_out: nn.Linear) -> np.ndarray:
    """(n_hidden,) bool: neurons whose incoming row, bias and outgoing column are all zero."""
    with torch.no_grad():
        # The small outgoing matrix first; only neurons with a zero column need their (long)
        # incoming row checked.
        dead = (fc_out.weight == 0).all(dim=0)
        idx = dead.nonzero().flatten()
        if len(idx):
            rows_zero = (fc_in.weight.index_select(0, idx.to(fc_in.weight.device)) == 0).all(dim=1)
            if fc_in.bias is not None:
                rows_zero &= fc_in.bias.index_select(0, idx.to(fc_in.bias.device)) == 0
            dead[idx] = rows_zero.to(dead.device)
    return dead.cpu().numpy()


def zero_neurons(fc_in: nn.Linear, fc_out: nn.Linear, idx: Sequence[int]) -> None:
    """Zero the incoming rows, biases and outgoing columns of hidden neurons ``idx`` (no_grad).

    Writes go to the parameters under no_grad rather than to ``.data`` so the version counter is
    bumped: a graph built before pruning then fails loudly instead of back-propagating stale
    weights.
    """
    if len(idx) == 0:
        return
    idx_t = torch.as_tensor(list(idx), dtype=torch.long, device=fc_in.weight.device)
    with torch.no_grad():
        fc_in.weight.index_fill_(0, idx_t, 0.0)
        if fc_in.bias is not None:
            fc_in.bias.index_fill_(0, idx_t, 0.0)
        fc_out.weight.index_fill_(1, idx_t.to(fc_out.weight.device), 0.0)


class PruneMask:
    """Keeps removed hidden neurons dead while the network trains on.

    Zeroing weights once is not enough: Adam's running moments keep moving a zeroed weight, so
    :meth:`attach` both zeroes the masked gradients (hooks) and re-applies the mask after every
    optimiser step.
    """

    def __init__(self, model: CNN, layers: Sequence[str] = HIDDEN_LAYERS):
        for layer in layers:
            model.fc_pair(layer)  # raises on an unknown layer name
        self.model = model
        self.layers: tuple[str, ...] = tuple(layers)
        self.removed: dict[str, set[int]] = {layer: set() for layer in self.layers}
        self._handles: list = []

    def width(self, layer: str) -> int:
        return self.model.fc_pair(layer)[0].out_features

    def add(self, layer: str, indices: Iterable[int]) -> None:
        """Mark ``indices`` of ``layer`` as removed (call :meth:`apply` to zero them)."""
        if layer not in self.removed:
            raise ValueError(f"layer {layer!r} is not masked; masked layers: {self.layers}")
        idx = {int(i) for i in indices}
        bad = [i for i in idx if not 0 <= i < self.width(layer)]
        if bad:
            raise ValueError(f"neuron indices {sorted(bad)} out of range for {layer}")
        self.removed[layer] |= idx

    def alive(self, layer: str) -> np.ndarray:
        """(width,) bool, False for removed neurons."""
        keep = np.ones(self.width(layer), dtype=bool)
        keep[sorted(self.removed[layer])] = False
        return keep

    def apply(self) -> None:
        """Re-zero every removed neuron's incoming row, bias and outgoing column."""
        for layer in self.layers:
            zero_neurons(*self.model.fc_pair(layer), sorted(self.removed[layer]))

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero masked gradients on backward and re-apply the mask after each ``optimizer.step``.

        The hooks read :attr:`removed` when they fire, so neurons added later are covered too.
        """
        self.detach()
        # One hook per parameter: fc2.weight is fc_out of fc1 (columns) AND fc_in of fc2 (rows).
        targets: dict[int, tuple[nn.Parameter, list[tuple[str, str]]]] = {}
        for layer in self.layers:
            fc_in, fc_out = self.model.fc_pair(layer)
            parts = [(fc_in.weight, "rows"), (fc_out.weight, "cols")]
            if fc_in.bias is not None:
                parts.append((fc_in.bias, "rows"))
            for p, kind in parts:
                targets.setdefault(id(p), (p, []))[1].append((layer, kind))
        for p, uses in targets.values():
            self._handles.append(p.register_hook(self._grad_hook(uses)))
        self._handles.append(optimizer.register_step_post_hook(lambda *_: self.apply()))
        self.apply()

    def _grad_hook(self, uses: list[tuple[str, str]]):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            grad = grad.clone()  # never modify autograd's buffer in place
            for layer, kind in uses:
                idx = sorted(self.removed[layer])
                if idx:
                    idx_t = torch.as_tensor(idx, dtype=torch.long, device=grad.device)
                    grad.index_fill_(0 if kind == "rows" else 1, idx_t, 0.0)
            return grad

        return hook

    def detach(self) -> None:
        """Remove the gradient and optimiser hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def state(self) -> dict[str, list[int]]:
        """JSON-serialisable {layer: sorted removed indices}, for checkpoints."""
        return {layer: sorted(self.removed[layer]) for layer in self.layers}

    @classmethod
    def from_state(cls, model: CNN, state: Mapping[str, Sequence[int]]) -> PruneMask:
        """Rebuild a mask saved with :meth:`state` (does not apply it)."""
        mask = cls(model, tuple(state))
        for layer, idx in state.items():
            mask.add(layer, idx)
        return mask

"""The paper's "basic neural network" on the 10 PCA features: sigmoid hidden layers."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(n_inputs: int, hidden: Sequence[int], n_classes: int = 7) -> nn.Sequential:
    """Linear -> Sigmoid for each hidden width, then a linear output layer (logits)."""
    layers: list[nn.Module] = []
    width = n_inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.Sigmoid()]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)

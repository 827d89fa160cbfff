"""Layers the CNN and the ResNets share."""

from __future__ import annotations

import torch
from torch import nn


def in_bf16(*tensors: torch.Tensor) -> bool:
    """Whether every one of ``tensors`` is bfloat16."""
    return all(t.dtype == torch.bfloat16 for t in tensors)


class ReLUBF16(nn.ReLU):
    """``nn.ReLU(inplace=True)``, but out of place on bfloat16 tensors.

    ATen's in-place bfloat16 kernel (``clamp_min_``) is slower than its out-of-place ReLU, and
    its float32 one faster: on a 2-core CPU with AMX, out of place in bf16 made ResNet18's
    training step 3% faster and the paper's CNN's 2%, and in float32 ResNet18's forward pass 3%
    slower. Either way the output is the same bit for bit, and so is the gradient, which ReLU
    computes from it.
    """

    def __init__(self) -> None:
        super().__init__(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) if in_bf16(x) else torch.relu_(x)

    def extra_repr(self) -> str:
        return "inplace=True, out of place in bfloat16"


def add_residual(out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """``out + identity``, written into ``out`` but on bfloat16 tensors, for the reason and with
    the exactness of ``ReLUBF16`` (ATen's in-place bf16 ``add_`` is the slower one)."""
    return out + identity if in_bf16(out, identity) else out.add_(identity)

"""Shared layers: ReLUBF16 runs in place on float32 tensors and out of place on bfloat16 ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from emoprune.models.layers import ReLUBF16, add_residual, in_bf16


def test_in_bf16():
    b, f = torch.zeros(2, dtype=torch.bfloat16), torch.zeros(2)
    assert in_bf16(b) and in_bf16(b, b)
    assert not in_bf16(f) and not in_bf16(b, f)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_relu_bf16_is_relu_in_place_but_in_bf16(dtype):
    x = torch.randn(4, 8, 5, 5, generator=torch.Generator().manual_seed(0)).to(dtype)
    x[0, 0, 0, 0] = 0.0
    expected = torch.relu(x)
    before = x.clone()
    y = ReLUBF16()(x)
    assert torch.equal(y, expected)
    if dtype == torch.bfloat16:
        assert y.data_ptr() != x.data_ptr() and torch.equal(x, before)
    else:
        assert y.data_ptr() == x.data_ptr() and torch.equal(x, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_relu_bf16_gradient_is_in_place_relus(dtype):
    grads = []
    for relu in (ReLUBF16(), nn.ReLU(inplace=True)):
        w = torch.randn(6, 6, generator=torch.Generator().manual_seed(2), requires_grad=True)
        x = torch.randn(3, 6, generator=torch.Generator().manual_seed(3))
        (relu((x @ w).to(dtype)).float() * torch.arange(6.0)).sum().backward()
        grads.append(w.grad)
    assert torch.equal(*grads) and grads[0].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_add_residual_writes_into_out_but_in_bf16(dtype):
    gen = torch.Generator().manual_seed(4)
    out, identity = (torch.randn(2, 4, 3, 3, generator=gen).to(dtype) for _ in range(2))
    expected, before = out + identity, out.clone()
    y = add_residual(out, identity)
    assert torch.equal(y, expected)
    if dtype == torch.bfloat16:
        assert y.data_ptr() != out.data_ptr() and torch.equal(out, before)
    else:
        assert y.data_ptr() == out.data_ptr()


def test_relu_bf16_says_what_it_does():
    assert repr(ReLUBF16()) == "ReLUBF16(inplace=True, out of place in bfloat16)"

"""The paper's CNN: layer shapes, parameter count, activations, hidden-layer access."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from emoprune.models.cnn import (
    CNN,
    HIDDEN_LAYERS,
    block_kernel,
    block_side,
    count_parameters,
    to_blocks,
)
from emoprune.models.layers import ReLUBF16
from fitting import assert_same_training_steps

# Paper settings: 3x227x227 input, hidden (512, 128, 64), 7 classes. Weights + biases:
#   conv1  3*11*11*16 + 16   =     5,824
#   conv2 16* 5* 5*32 + 32   =    12,832
#   conv3 32* 3* 3*64 + 64   =    18,496
#   conv4 64* 3* 3*64 + 64   =    36,928
#   fc1   (64*6*6)*512 + 512 = 1,180,160
#   fc2   512*128 + 128      =    65,664
#   fc3   128*64 + 64        =     8,256
#   fc4   64*7 + 7           =       455
#   total                    = 1,328,615
PAPER_PARAMS = 1_328_615


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(0))


def test_feature_map_sides(batch):
    model = CNN()
    sides = []
    h = batch
    for layer in model.features:
        h = layer(h)
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            sides.append((h.shape[1], h.shape[2], h.shape[3]))
    # conv1 55, conv2 26, conv3 24, pool 12, conv4 12, pool 6
    assert sides == [
        (16, 55, 55),
        (32, 26, 26),
        (64, 24, 24),
        (64, 12, 12),
        (64, 12, 12),
        (64, 6, 6),
    ]
    assert model.fc1.in_features == 64 * 6 * 6


def test_paper_parameter_count():
    assert count_parameters(CNN()) == PAPER_PARAMS


def test_frozen_parameters_are_not_counted():
    model = CNN()
    model.fc4.requires_grad_(False)
    assert count_parameters(model) == PAPER_PARAMS - 455


@pytest.mark.parametrize(
    "activation, kind", [("sigmoid", nn.Sigmoid), ("relu", nn.ReLU), ("tanh", nn.Tanh)]
)
def test_activations(batch, activation, kind):
    model = CNN(conv_activation=activation, fc_activation=activation)
    acts = [m for m in model.modules() if isinstance(m, (nn.Sigmoid, nn.ReLU, nn.Tanh))]
    assert acts and all(isinstance(m, kind) for m in acts)
    logits = model(batch)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


def test_unknown_activation_or_init():
    with pytest.raises(ValueError, match="conv_activation"):
        CNN(conv_activation="gelu")
    with pytest.raises(ValueError, match="fc_activation"):
        CNN(fc_activation="gelu")
    with pytest.raises(ValueError, match="fc_init"):
        CNN(fc_init="lecun")


def test_default_is_conv_relu_he_and_fc_sigmoid_with_torchs_init(batch):
    torch.manual_seed(0)
    model = CNN()
    conv_acts = [type(m) for m in model.features if not isinstance(m, (nn.Conv2d, nn.MaxPool2d))]
    assert conv_acts == [ReLUBF16] * 4 and type(model.act) is nn.Sigmoid
    assert (model.conv_activation, model.fc_activation) == ("relu", "sigmoid")
    # He (fan-in, gain sqrt 2) on the convs, biases zero.
    conv = model.features[0]
    fan_in = conv.weight[0].numel()
    assert conv.weight.abs().max() <= math.sqrt(6 / fan_in) and torch.all(conv.bias == 0)
    assert conv.weight.abs().max() > 0.9 * math.sqrt(6 / fan_in)
    # torch's default Linear init: uniform(+-1/sqrt(fan_in)) and non-zero biases.
    w = model.fc2.weight
    assert w.abs().max() <= 1 / math.sqrt(w.shape[1]) and torch.any(model.fc2.bias != 0)
    assert torch.isfinite(model(batch)).all()


def test_the_sigmoid_glorot_net_is_still_available():
    model = CNN(conv_activation="sigmoid", conv_init="glorot", fc_init="glorot")
    assert all(type(m) is not nn.ReLU for m in model.modules())
    w = model.fc1.weight  # gain 4 for the sigmoid: ~8x torch's default scale on fc1
    assert w.abs().max() > 0.9 * 4 * math.sqrt(6 / (w.shape[0] + w.shape[1]))


def test_hidden_activations_shape_and_range(batch):
    model = CNN(fc_activation="sigmoid")
    for layer, width in zip(HIDDEN_LAYERS, (512, 128, 64)):
        h = model.hidden_activations(batch, layer)
        assert h.shape == (2, width)
        assert (h > 0).all() and (h < 1).all()


def test_forward_with_hidden_matches_forward(batch):
    model = CNN(fc_activation="relu")
    logits, hidden = model.forward_with_hidden(batch, ("fc1", "fc3"))
    assert set(hidden) == {"fc1", "fc3"}
    torch.testing.assert_close(logits, model(batch))
    # fc4 consumes fc3's activations, so they must be the ones actually used.
    torch.testing.assert_close(model.fc4(hidden["fc3"]), logits)


def test_unknown_layer_raises(batch):
    model = CNN()
    with pytest.raises(ValueError, match="unknown hidden layer"):
        model.hidden_activations(batch, "fc4")
    with pytest.raises(ValueError):
        model.fc_pair("conv1")


def test_fc_pair():
    model = CNN()
    assert model.fc_pair("fc1") == (model.fc1, model.fc2)
    assert model.fc_pair("fc3") == (model.fc3, model.fc4)


def test_custom_hidden_widths_give_smaller_model(batch):
    small = CNN(hidden=(100, 50, 20))
    assert (small.fc1.out_features, small.fc2.out_features, small.fc3.out_features) == (100, 50, 20)
    # Only the FC part changes: conv params (5,824 + 12,832 + 18,496 + 36,928 = 74,080) stay.
    expected = 74_080 + (2304 * 100 + 100) + (100 * 50 + 50) + (50 * 20 + 20) + (20 * 7 + 7)
    assert count_parameters(small) == expected < PAPER_PARAMS
    assert small(batch).shape == (2, 7)


def test_smaller_input_size():
    model = CNN(in_size=67)
    assert model(torch.zeros(1, 3, 67, 67)).shape == (1, 7)
    with pytest.raises(ValueError, match="too small"):
        CNN(in_size=40)


def test_glorot_init_is_scaled_for_the_activation():
    import math

    import pytest

    from emoprune.models.cnn import init_weights

    for activation, gain in (("sigmoid", 4.0), ("tanh", 5 / 3), ("relu", math.sqrt(2))):
        model = CNN(
            conv_activation=activation,
            fc_activation=activation,
            conv_init="glorot",
            fc_init="glorot",
        )
        w = model.fc2.weight
        bound = gain * math.sqrt(6 / (w.shape[0] + w.shape[1]))
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
        assert torch.all(model.fc2.bias == 0) and torch.all(model.features[0].bias == 0)
        out = model.fc4.weight
        assert out.abs().max() <= math.sqrt(6 / (out.shape[0] + out.shape[1]))
    with pytest.raises(ValueError, match="init"):
        init_weights([CNN().fc1], "xavier", "sigmoid")


def test_blocks_place_each_pixel_by_its_offset_in_its_4x4_block():
    x = torch.arange(2 * 3 * 13 * 13, dtype=torch.float32).reshape(2, 3, 13, 13)
    blocks = to_blocks(x)
    b = block_side(13)  # conv1's output side (1) + 2
    assert b == 3 and blocks.shape == (2, 48, 3, 3)
    assert blocks.is_contiguous(memory_format=torch.channels_last)
    for n, i, j, dy, dx, c in [(0, 0, 0, 0, 0, 0), (1, 2, 1, 3, 2, 1), (0, 1, 2, 0, 3, 2)]:
        assert blocks[n, (4 * dy + dx) * 3 + c, i, j] == x[n, c, 4 * i + dy, 4 * j + dx]
    # 3 blocks hold 12 of the 13 rows and columns; the 13th, which conv1 never reads, is dropped.
    assert blocks.abs().sum() == x[:, :, :12, :12].abs().sum()


def test_the_block_kernel_is_the_11x11_kernel_padded_and_split_the_same_way():
    w = torch.randn(16, 3, 11, 11)
    k = block_kernel(w)
    assert k.shape == (16, 48, 3, 3)
    for by, bx, dy, dx, c in [(0, 0, 0, 0, 0), (2, 2, 2, 2, 2), (1, 0, 3, 1, 1)]:
        assert k[5, (4 * dy + dx) * 3 + c, by, bx] == w[5, c, 4 * by + dy, 4 * bx + dx]
    assert (k[:, 3 * 12 :, 2, :] == 0).all()  # kernel row 11 (dy 3 of block row 2) is padding


@pytest.mark.parametrize("size", [227, 229, 230, 67])
def test_the_cnn_on_blocks_is_the_cnn_on_images(size):
    # The same sums in another order: logits and every gradient agree to float32 rounding.
    torch.manual_seed(0)
    model = CNN(in_size=size)
    x = torch.randn(3, 3, size, size)
    outputs, grads = [], []
    for inputs in (x, to_blocks(x)):
        model.zero_grad()
        out = model(inputs)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    for blocked, plain in zip(grads[1], grads[0]):
        torch.testing.assert_close(blocked, plain, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bf16", [False, True])
def test_conv_relus_out_of_place_in_bf16_compute_the_in_place_numbers_bit_for_bit(bf16):
    """ReLUBF16 (out of place on bf16 tensors) against nn.ReLU(inplace=True): the same logits,
    gradients and weights over two Adam steps, on pixel blocks in bf16 as fit trains."""
    torch.manual_seed(0)
    ours = CNN(in_size=67)
    stock = CNN(in_size=67)
    for i, layer in enumerate(stock.features):
        if isinstance(layer, ReLUBF16):
            stock.features[i] = nn.ReLU(inplace=True)
    assert sum(type(m) is nn.ReLU for m in stock.features) == 4
    x = torch.randn(8, 3, 67, 67, generator=torch.Generator().manual_seed(1))
    x = ours.bf16_inputs(x) if bf16 else x
    assert_same_training_steps(
        ours, stock, x, bf16=bf16, optimizer=lambda p: torch.optim.Adam(p, lr=1e-3, fused=True)
    )


def test_bf16_inputs_are_bfloat16_blocks_built_chunk_by_chunk():
    model = CNN(in_size=67)
    x = torch.randn(130, 3, 67, 67)  # three chunks of at most 64 images
    blocks = model.bf16_inputs(x)
    assert blocks.dtype == torch.bfloat16 and blocks.shape == (130, 48, 17, 17)
    assert blocks.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(blocks, to_blocks(x.to(torch.bfloat16)))
    assert torch.equal(model.bf16_inputs(blocks), blocks)  # blocks pass through
    assert x.dtype == torch.float32

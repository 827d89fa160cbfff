"""The paper's final CNN (docs/paper.md): four conv layers, two max-pools, four FC layers.

Input 3x227x227 -> conv1 16@55 -> conv2 32@26 -> conv3 64@24 -> pool 12 -> conv4 64@12 -> pool 6
-> fc1 2304->512 -> fc2 512->128 -> fc3 128->64 -> fc4 64->7.

The conv stack and the hidden FC layers have their own activation and init. The defaults of
params.yaml (conv ReLU with He init, FC sigmoid with torch's default init) are the setup that, on
the real frames, reproduces both the paper's learning and its moving FC angles (docs/paper.md):
with sigmoid everywhere and Glorot's gain-4 init the FC weights start about eight times larger
and Adam hardly turns them, and with torch's default init everywhere the sigmoid net stays on its
initial plateau.

The hidden FC layers keep stable attribute names (``fc1``..``fc3``) because pruning addresses them
by name, and ``hidden`` is a constructor argument so that ``pruning.shrink`` can build a physically
smaller copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from emoprune.choices import ACTIVATIONS, HIDDEN_LAYERS, INITS
from emoprune.models.layers import ReLUBF16

ACTIVATION_MODULES = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}
PAPER_HIDDEN = (512, 128, 64)


class CNN(nn.Module):
    """The paper's CNN.

    Args:
        n_classes: output units (7 emotions).
        conv_activation: ``sigmoid`` | ``relu`` | ``tanh`` after every conv layer.
        fc_activation: the same choice after every hidden FC layer (the units pruning acts on).
        hidden: widths of fc1, fc2, fc3.
        in_size: input height = width; 227 gives the paper's 6x6 map before fc1.
        conv_init, fc_init: ``pytorch`` (torch's default layer init), ``he`` (He et al. 2015,
            for ReLU) or ``glorot`` (Glorot & Bengio 2010, scaled for the activation); see
            ``init_weights``.
    """

    def __init__(
        self,
        n_classes: int = 7,
        conv_activation: str = "relu",
        fc_activation: str = "sigmoid",
        hidden: Sequence[int] = PAPER_HIDDEN,
        in_size: int = 227,
        conv_init: str = "he",
        fc_init: str = "pytorch",
    ):
        super().__init__()
        for name, value, allowed in (
            ("conv_activation", conv_activation, ACTIVATIONS),
            ("fc_activation", fc_activation, ACTIVATIONS),
            ("conv_init", conv_init, INITS),
            ("fc_init", fc_init, INITS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if len(hidden) != 3:
            raise ValueError(f"hidden must give 3 widths (fc1, fc2, fc3), got {list(hidden)}")
        self.conv_activation, self.fc_activation = conv_activation, fc_activation
        self.hidden = tuple(int(h) for h in hidden)
        self.n_classes = n_classes
        self.in_size = in_size
        act = ACTIVATION_MODULES[conv_activation]
        if conv_activation == "relu":  # in place (a conv's backward never needs its output),
            act = ReLUBF16  # but out of place in bf16, where ATen's in-place kernel is slower
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=11, stride=4),
            act(),
            nn.Conv2d(16, 32, kernel_size=5, stride=2),
            act(),
            nn.Conv2d(32, 64, kernel_size=3, stride=1),
            act(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1),
            act(),
            nn.MaxPool2d(2, 2),
        )
        side = conv_output_side(in_size)
        widths = (64 * side * side, *self.hidden)
        self.fc1 = nn.Linear(widths[0], widths[1])
        self.fc2 = nn.Linear(widths[1], widths[2])
        self.fc3 = nn.Linear(widths[2], widths[3])
        self.fc4 = nn.Linear(widths[3], n_classes)
        self.act = ACTIVATION_MODULES[fc_activation]()
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        init_weights(convs, conv_init, conv_activation)
        init_weights([self.fc1, self.fc2, self.fc3], fc_init, fc_activation)
        # The output layer feeds a softmax, not an activation: plain Glorot, or torch's default.
        if fc_init != "pytorch":
            init_weights([self.fc4], "glorot", None)
        # channels_last (NHWC) lets oneDNN/cuDNN run the convolutions without layout conversions:
        # ~2x faster in bf16 on AMX CPUs. Values and the flattened fc1 input order are unchanged.
        self.features.to(memory_format=torch.channels_last)

    def forward_with_hidden(
        self, x: torch.Tensor, layers: Sequence[str] = ()
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (N, n_classes) and the post-activation outputs (N, width) of ``layers``.

        x: images (N, 3, S, S), or their pixel blocks (N, 48, B, B) from ``to_blocks``.
        """
        unknown = set(layers) - set(HIDDEN_LAYERS)
        if unknown:
            raise ValueError(f"unknown hidden layer(s) {sorted(unknown)}; use {HIDDEN_LAYERS}")
        x = x.contiguous(memory_format=torch.channels_last)
        conv1 = self.features[0]
        if x.shape[1] == conv1.in_channels:
            h = self.features(x)
        else:  # blocks: conv1 as the same sums over 4x4 pixel blocks, then the rest of the stack
            h = F.conv2d(x, block_kernel(conv1.weight), conv1.bias)
            for layer in self.features[1:]:
                h = layer(h)
        h = torch.flatten(h, 1)
        hidden: dict[str, torch.Tensor] = {}
        for name in HIDDEN_LAYERS:
            h = self.act(getattr(self, name)(h))
            if name in layers:
                hidden[name] = h
        return self.fc4(h), hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_hidden(x)[0]

    def bf16_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What ``loop.fit`` feeds this model in bf16 autocast on the CPU (training, and the
        validation of the epochs validated in bf16) in place of images x (N, 3, S, S): their
        pixel blocks (N, 48, B, B) in bfloat16, channels_last (``to_blocks``; blocks pass
        through). oneDNN runs the 11x11, stride-4 first layer on 3 channels at about a third
        of its bf16 peak, and the same sums as a 3x3 convolution over 48 channels 1.4x faster,
        a tenth of a training step; in float32 the blocks are slower.
        """
        if x.shape[1] != self.features[0].in_channels:
            return x.to(torch.bfloat16)
        b = block_side(x.shape[-1])
        out = torch.empty(
            (len(x), BLOCK * BLOCK * x.shape[1], b, b),
            dtype=torch.bfloat16,
            device=x.device,
            memory_format=torch.channels_last,
        )
        for start in range(0, len(x), 64):  # a few MB at a time, not a copy of the whole set
            out[start : start + 64] = to_blocks(x[start : start + 64].to(torch.bfloat16))
        return out

    def hidden_activations(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """Post-activation outputs of hidden layer ``layer`` for a batch: (N, width)."""
        return self.forward_with_hidden(x, (layer,))[1][layer]

    def fc_pair(self, layer: str) -> tuple[nn.Linear, nn.Linear]:
        """The Linear layers before and after the hidden units of ``layer``: (fc_in, fc_out)."""
        i = HIDDEN_LAYERS.index(layer)
        return getattr(self, f"fc{i + 1}"), getattr(self, f"fc{i + 2}")


# Glorot's gain for each activation: 4 for the logistic sigmoid (its slope at 0 is 1/4, Glorot &
# Bengio's recommendation), 5/3 for tanh, sqrt(2) for ReLU; 1 for the output layer (None).
GLOROT_GAIN = {"sigmoid": 4.0, "tanh": 5.0 / 3.0, "relu": 2.0**0.5, None: 1.0}


def init_weights(layers: Sequence[nn.Module], scheme: str, activation: str | None) -> None:
    """Initialise the weights of ``layers`` (Conv2d / Linear) for ``activation``.

    ``pytorch`` keeps torch's default init (weights and biases). ``he``: He et al. (2015) uniform
    init for ReLU (fan-in, gain sqrt(2)), biases zero. ``glorot``: Glorot & Bengio (2010) uniform
    with the gain that keeps signals alive through the activation, biases zero.
    """
    if scheme not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {scheme!r}")
    if scheme == "pytorch":
        return
    for layer in layers:
        if scheme == "he":
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
        else:
            nn.init.xavier_uniform_(layer.weight, gain=GLOROT_GAIN[activation])
        nn.init.zeros_(layer.bias)


# conv1's stride: its 11x11 kernel covers 3x3 blocks of 4x4 pixels (padded to 12x12 with zeros).
BLOCK, KERNEL = 4, 11


def conv1_side(in_size: int) -> int:
    """Side of conv1's output (11x11, stride 4, no padding) for a square input of ``in_size``."""
    return (in_size - KERNEL) // BLOCK + 1


def block_side(in_size: int) -> int:
    """Side B of the block grid conv1 reads: its output side + 2 (a 3x3 kernel over blocks)."""
    return conv1_side(in_size) + 2


def to_blocks(x: torch.Tensor) -> torch.Tensor:
    """Images (N, C, S, S) -> their 4x4 pixel blocks (N, 16C, B, B), channels_last, B =
    ``block_side(S)``. Channel (4 dy + dx) C + c of block (i, j) is pixel (4i + dy, 4j + dx) of
    channel c: missing pixels past S are zeros (they meet only the kernel's zero padding), and
    pixels past 4B, which conv1 never reads, are dropped.
    """
    n, c, s, _ = x.shape
    b = block_side(s)
    x = F.pad(x, (0, BLOCK * b - s, 0, BLOCK * b - s))  # negative: crops
    nhwc = x.permute(0, 2, 3, 1).reshape(n, b, BLOCK, b, BLOCK, c)
    blocks = nhwc.permute(0, 1, 3, 2, 4, 5).reshape(n, b, b, BLOCK * BLOCK * c)
    return blocks.permute(0, 3, 1, 2)  # NHWC memory: channels_last


def block_kernel(w: torch.Tensor) -> torch.Tensor:
    """conv1's weight (O, C, 11, 11) -> the 3x3 kernel over ``to_blocks``' channels
    (O, 16C, 3, 3): the 11x11 kernel padded to 12x12 with zeros, split as the pixels are."""
    o, c, k, _ = w.shape
    n = -(-k // BLOCK)  # blocks per kernel side
    w = F.pad(w, (0, n * BLOCK - k, 0, n * BLOCK - k)).reshape(o, c, n, BLOCK, n, BLOCK)
    return w.permute(0, 3, 5, 1, 2, 4).reshape(o, BLOCK * BLOCK * c, n, n)


def conv_output_side(in_size: int) -> int:
    """Side of the feature map after the conv stack, for a square input of ``in_size``."""
    s = conv1_side(in_size)
    s = (s - 5) // 2 + 1  # conv2
    s = s - 3 + 1  # conv3
    s //= 2  # pool
    s //= 2  # conv4 keeps the size (padding 1), then pool
    if s < 1:
        raise ValueError(f"input size {in_size} is too small for the CNN")
    return s


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

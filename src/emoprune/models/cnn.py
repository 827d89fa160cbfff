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
from functools import partial

import torch
from torch import nn

from emoprune.choices import ACTIVATIONS, HIDDEN_LAYERS, INITS

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
        if conv_activation == "relu":  # in place: a conv's backward never needs its output
            act = partial(nn.ReLU, inplace=True)
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
        """Logits (N, n_classes) and the post-activation outputs (N, width) of ``layers``."""
        unknown = set(layers) - set(HIDDEN_LAYERS)
        if unknown:
            raise ValueError(f"unknown hidden layer(s) {sorted(unknown)}; use {HIDDEN_LAYERS}")
        h = torch.flatten(self.features(x.contiguous(memory_format=torch.channels_last)), 1)
        hidden: dict[str, torch.Tensor] = {}
        for name in HIDDEN_LAYERS:
            h = self.act(getattr(self, name)(h))
            if name in layers:
                hidden[name] = h
        return self.fc4(h), hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_hidden(x)[0]

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


def conv_output_side(in_size: int) -> int:
    """Side of the feature map after the conv stack, for a square input of ``in_size``."""
    s = (in_size - 11) // 4 + 1  # conv1
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

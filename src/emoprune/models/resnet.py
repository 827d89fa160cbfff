"""Transfer learning with torchvision's ResNet18/34/50 (the finetune_resnet stage), offline-safe.

The recipe is torchvision's transfer-learning tutorial: start from the ImageNet (IMAGENET1K_V1)
weights, replace the final ``fc`` by a fresh ``n_classes`` layer, fine-tune every layer with SGD
(lr 0.001, momentum 0.9) and decay the lr by 0.1 every 7 epochs, 25 epochs in all.

Offline by design: torchvision is never allowed to download. The ImageNet weights are read only
from torch's hub cache (``$TORCH_HOME/hub/checkpoints/<file>``), where torchvision itself would
have cached them; a missing file is a one-line ``UserError`` that says what to put where
(``weights="imagenet"``), or a fallback to random init (``weights="auto"``).

Models are returned in channels_last memory format, which lets the conv kernels (oneDNN on the
CPU, cuDNN on the GPU) skip layout conversions; ``prepare_inputs`` produces matching inputs. A
contiguous NCHW input still gives the same result, just converted at the first conv.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from emoprune.choices import ARCHS, WEIGHTS
from emoprune.errors import UserError

# torchvision's ImageNet normalisation (ResNet*_Weights.IMAGENET1K_V1.transforms()).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float64)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float64)


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {list(ARCHS)}, got {arch!r}")


def weights_url(arch: str) -> str:
    """Download URL of torchvision's IMAGENET1K_V1 checkpoint for ``arch`` (for messages only)."""
    _check_arch(arch)
    return torchvision.models.get_model_weights(arch).IMAGENET1K_V1.url


def weights_file(arch: str) -> str:
    """Name torchvision caches the IMAGENET1K_V1 weights under, e.g. ``resnet18-f37072fd.pth``."""
    return weights_url(arch).rsplit("/", 1)[-1]


def torch_hub_checkpoints() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``).

    Read at call time, so a TORCH_HOME set after import (or by a test) is honoured.
    """
    return Path(torch.hub.get_dir()) / "checkpoints"


def _load_imagenet_state(model: nn.Module, arch: str, path: Path) -> None:
    """Load the cached checkpoint at ``path`` into ``model`` (strict); UserError if unusable."""
    try:
        # weights_only: a file someone dropped into the cache must not be able to run code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load fails with many types on a bad file
        # Only the exception type: torch's own text suggests weights_only=False, which we refuse.
        raise UserError(
            f"cannot read ImageNet weights {path} ({type(e).__name__}: corrupt or not a torch "
            f"checkpoint); delete it and place a fresh copy of {weights_url(arch)} there"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise UserError(f"ImageNet weights {path} is not a state dict; expected torchvision's file")
    # Compare keys and shapes ourselves: load_state_dict's own error is many lines long.
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or wrong_shape:
        example = (missing or unexpected or wrong_shape)[0]
        raise UserError(
            f"ImageNet weights {path} do not fit {arch} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong_shape)} wrong-shape keys, e.g. "
            f"{example!r}); replace it with {weights_url(arch)}"
        )
    model.load_state_dict(state, strict=True)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Convert ``model``'s 4-D parameters/buffers to channels_last in place; returns ``model``.

    ``module.to(device)`` later preserves the format, so this survives fit's move to the device.
    """
    return model.to(memory_format=torch.channels_last)


def build_resnet(
    arch: str,
    n_classes: int = 7,
    weights: str = "auto",
    freeze_backbone: bool = False,
    channels_last: bool = True,
) -> tuple[nn.Module, str]:
    """A torchvision ResNet with a new ``fc`` of ``n_classes`` outputs, on the CPU.

    Args:
        arch: one of ``ARCHS``.
        weights: ``imagenet`` (the cached IMAGENET1K_V1 file, UserError if absent), ``auto``
            (that file if cached, else random init) or ``none`` (random init).
        freeze_backbone: feature-extractor variant: only the new ``fc`` requires grad. (BatchNorm
            running stats still update in train mode, as in torchvision's tutorial.) The default
            fine-tunes every layer, as in the paper.
        channels_last: return the model in channels_last memory format (see module docstring).

    Returns:
        (model, used) with ``used`` = ``"imagenet"`` or ``"random"``. The model maps
        (N, 3, H, W) float32 (ImageNet-normalised, H, W >= 32) to (N, n_classes) logits.
    """
    _check_arch(arch)
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {list(WEIGHTS)}, got {weights!r}")
    if int(n_classes) < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")

    # weights=None: torchvision builds the architecture only and never touches the network.
    model = getattr(torchvision.models, arch)(weights=None)
    used = "random"
    if weights != "none":
        path = torch_hub_checkpoints() / weights_file(arch)
        if path.is_file():
            _load_imagenet_state(model, arch, path)
            used = "imagenet"
        elif weights == "imagenet":
            raise UserError(
                f"finetune.weights=imagenet: place {path.name} in {path.parent}/ (or set "
                f"TORCH_HOME; get it from {weights_url(arch)}); this machine may be offline, "
                f"so nothing is downloaded"
            )

    # After loading: the ImageNet checkpoint has a 1000-way fc that the strict load expects.
    model.fc = nn.Linear(model.fc.in_features, int(n_classes))
    if freeze_backbone:
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith("fc."))
    if channels_last:
        to_channels_last(model)
    return model, used


def prepare_inputs(images_uint8_nhwc: np.ndarray, *, chunk: int = 64) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, ``(x / 255 - IMAGENET_MEAN) / IMAGENET_STD``.

    The result is channels_last: it is filled as an NHWC buffer (no transposing copy, chunk by
    chunk so the peak is the output plus one chunk) and returned as its NCHW view.
    """
    images = np.asarray(images_uint8_nhwc)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    # (x/255 - m)/s == x * scale - shift, computed in float64 then rounded once.
    scale = torch.as_tensor(1.0 / (255.0 * IMAGENET_STD), dtype=torch.float32)
    shift = torch.as_tensor(IMAGENET_MEAN / IMAGENET_STD, dtype=torch.float32)
    n, h, w, _ = images.shape
    out = torch.empty((n, h, w, 3), dtype=torch.float32)
    for start in range(0, n, chunk):
        part = out[start : start + chunk]
        part.copy_(torch.from_numpy(np.ascontiguousarray(images[start : start + chunk])))
        part.mul_(scale).sub_(shift)
    return out.permute(0, 3, 1, 2)  # NCHW shape, NHWC strides == channels_last


def make_optimizer_and_scheduler(
    model: nn.Module,
    lr: float = 0.001,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    step_size: int = 7,
    gamma: float = 0.1,
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.StepLR]:
    """SGD with momentum over the parameters that require grad, plus StepLR (stepped per epoch).

    Defaults are torchvision's transfer-learning tutorial (run for 25 epochs). Build this after
    moving the model to its device. Frozen parameters are left out, so a frozen backbone costs
    no optimizer state.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters that require grad")
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    return optimizer, scheduler

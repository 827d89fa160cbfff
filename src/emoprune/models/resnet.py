"""Transfer learning with torchvision's ResNet18/34/50 (the finetune_resnet stage), offline-safe.

The recipe is torchvision's transfer-learning tutorial: start from the ImageNet (IMAGENET1K_V1)
weights, replace the final ``fc`` by a fresh ``n_classes`` layer, fine-tune every layer with SGD
(lr 0.001, momentum 0.9) and decay the lr by 0.1 every 7 epochs, 25 epochs in all.

Building a model never touches the network: ``build_resnet`` reads the ImageNet weights from
the folders it is given (the pipeline's DVC-tracked ``models/pretrained/``; by default torch's
hub cache, ``$TORCH_HOME/hub/checkpoints/<file>``), and a missing file is a one-line
``UserError`` that says what to put where (``weights="imagenet"``), or random init
(``weights="auto"``). Getting the file is ``place_weights``' job (the ``pretrained`` stage,
``make weights``): from that folder, from torch's cache, or downloaded from torchvision's URL
with torch's hash check, failing within seconds when offline.

Models are returned in channels_last memory format, which lets the conv kernels (oneDNN on the
CPU, cuDNN on the GPU) skip layout conversions; ``prepare_inputs`` produces matching inputs. A
contiguous NCHW input still gives the same result, just converted at the first conv. Their
ReLUs and residual additions run out of place on bfloat16 tensors (``bf16_out_of_place``): the
same numbers, sooner.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from emoprune.choices import ARCHS, WEIGHTS
from emoprune.errors import UserError
from emoprune.models.inputs import to_tensor_images
from emoprune.models.layers import ReLUBF16, add_residual

# torchvision's ImageNet normalisation (ResNet*_Weights.IMAGENET1K_V1.transforms()).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float64)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float64)


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {list(ARCHS)}, got {arch!r}")


# The pipeline's copy of the weights, tracked by DVC (an output of the pretrained stage).
PRETRAINED_DIR = Path("models/pretrained")
# A mirror of download.pytorch.org (same file names, so the same hash check), e.g. a proxy.
MIRROR_ENV = "EMOPRUNE_WEIGHTS_MIRROR"
DOWNLOAD_TIMEOUT_S = 15.0  # per socket operation: offline fails in seconds, not minutes


def weights_url(arch: str) -> str:
    """Download URL of torchvision's IMAGENET1K_V1 checkpoint for ``arch``, from torchvision's
    weights API (on ``$EMOPRUNE_WEIGHTS_MIRROR`` instead of its host when that is set)."""
    _check_arch(arch)
    url = torchvision.models.get_model_weights(arch).IMAGENET1K_V1.url
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{url.rsplit('/', 1)[-1]}" if mirror else url


def weights_file(arch: str) -> str:
    """Name torchvision caches the IMAGENET1K_V1 weights under, e.g. ``resnet18-f37072fd.pth``."""
    return weights_url(arch).rsplit("/", 1)[-1]


def torch_hub_checkpoints() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``).

    Read at call time, so a TORCH_HOME set after import (or by a test) is honoured.
    """
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torch.hub opens its URL without a timeout: an unroutable network would hang for minutes.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def download_weights(arch: str, dest: Path, *, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download ``arch``'s IMAGENET1K_V1 file into folder ``dest``; returns its path.

    The same call torchvision's ``Weights.get_state_dict`` makes (``load_state_dict_from_url``
    with ``check_hash``: the file's SHA-256 must start with the hex digits in its name, and the
    file loads ``weights_only``), into a temporary folder first, so a failed or rejected download
    leaves nothing behind. Any failure is a one-line ``UserError``.
    """
    url = weights_url(arch)
    name = url.rsplit("/", 1)[-1]
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        try:
            with _socket_timeout(timeout_s):
                torch.hub.load_state_dict_from_url(
                    url,
                    model_dir=tmp,
                    map_location="cpu",
                    progress=True,
                    check_hash=True,
                    weights_only=True,
                )
        except (OSError, http.client.HTTPException) as exc:  # URLError, refused, timed out
            reason = getattr(exc, "reason", exc)
            raise UserError(
                f"cannot download {url} ({reason}); this machine may be offline: put {name} "
                f"in {dest}/ (or in {torch_hub_checkpoints()}/) and run again"
            ) from None
        except RuntimeError as exc:  # torch: "invalid hash value (expected ..., got ...)"
            raise UserError(
                f"{url}: the download failed torchvision's hash check "
                f"({' '.join(str(exc).split())[:160]}); nothing was kept"
            ) from None
        except Exception as exc:  # noqa: BLE001 - torch.load's errors on a non-checkpoint
            raise UserError(
                f"{url}: the downloaded file is not a torch checkpoint ({type(exc).__name__}); "
                "nothing was kept"
            ) from None
        os.replace(Path(tmp) / name, dest / name)
    return dest / name


def place_weights(
    arch: str, dest: Path = PRETRAINED_DIR, *, download: bool = True
) -> tuple[dict[str, str], str]:
    """Make sure ``dest`` holds ``arch``'s IMAGENET1K_V1 file: kept if already there, else
    copied from torch's hub cache, else downloaded (``download_weights``).

    Returns ({"file", "sha256"}, how it got there); UserError when the file cannot be had. The
    file is checked like a load (a state dict of ``arch``'s shapes), so a corrupt file never
    gets tracked.
    """
    name = weights_file(arch)
    path, cached = dest / name, torch_hub_checkpoints() / name
    if path.is_file():
        source = "kept (already in place)"
    elif cached.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest, prefix=".copy-", delete=False) as tmp:
            shutil.copyfile(cached, tmp.name)
        os.replace(tmp.name, path)
        source = "copied from the torch hub cache"
    elif download:
        download_weights(arch, dest)
        source = f"downloaded from {weights_url(arch)}"
    else:
        raise UserError(f"{path}: missing, and downloading is off")
    try:
        _load_imagenet_state(getattr(torchvision.models, arch)(weights=None), arch, path)
    except UserError:
        path.unlink(missing_ok=True)  # never leave a bad file where the pipeline tracks it
        raise
    return {"file": name, "sha256": sha256_of(path)}, source


def placed_weights(dest: Path = PRETRAINED_DIR) -> dict[str, dict[str, str]]:
    """{arch: {"file", "sha256"}} of the files the pretrained stage placed in ``dest``
    (its weights.json); {} when there is none."""
    try:
        index = json.loads((dest / "weights.json").read_text())
    except (OSError, ValueError):
        return {}
    return {arch: rec for arch, rec in index.get("archs", {}).items() if rec.get("file")}


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
    weights_dirs: Sequence[str | os.PathLike] | None = None,
) -> tuple[nn.Module, str]:
    """A torchvision ResNet with a new ``fc`` of ``n_classes`` outputs, on the CPU.

    Args:
        arch: one of ``ARCHS``.
        weights: ``imagenet`` (the cached IMAGENET1K_V1 file, UserError if absent), ``auto``
            (that file if cached, else random init) or ``none`` (random init).
        freeze_backbone: a fixed feature extractor: only the new ``fc`` requires grad and
            trains; the backbone (everything but ``fc``) stays in eval mode even under
            ``model.train()`` (a ``FrozenBackboneResNet``), so BatchNorm uses its stored
            statistics and never updates them. Its features are then a function of the image
            alone, which is what lets ``finetune_resnet_fold`` compute them once per fold
            (``backbone_features``). Unlike torchvision's tutorial, whose frozen variant keeps
            BN in train mode (batch statistics). The default fine-tunes every layer, as in the
            paper.
        channels_last: return the model in channels_last memory format (see module docstring).
        weights_dirs: the folders searched for the ImageNet file, in order (default: torch's hub
            cache; the pipeline passes only its DVC-tracked ``models/pretrained``, so no
            untracked file can decide a result). Nothing is ever downloaded here.

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
        dirs = [Path(d) for d in weights_dirs] if weights_dirs is not None else []
        dirs = dirs or [torch_hub_checkpoints()]
        found = [d / weights_file(arch) for d in dirs if (d / weights_file(arch)).is_file()]
        if found:
            _load_imagenet_state(model, arch, found[0])
            used = "imagenet"
        elif weights == "imagenet":
            raise UserError(
                f"finetune.weights=imagenet: {weights_file(arch)} is not in "
                f"{', '.join(f'{d}/' for d in dirs)}; `make weights` downloads it there (or "
                f"copy {weights_url(arch)} there yourself)"
            )

    # After loading: the ImageNet checkpoint has a 1000-way fc that the strict load expects.
    model.fc = nn.Linear(model.fc.in_features, int(n_classes))
    bf16_out_of_place(model)
    if freeze_backbone:
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith("fc."))
        # A fixed extractor: BN in eval mode for good (stored statistics, no running-stat
        # updates), so a cached feature equals a recomputed one. Same modules and state_dict.
        model.__class__ = FrozenBackboneResNet
        model.train()  # fc in train mode (a fresh module's default), the backbone in eval
    if channels_last:
        to_channels_last(model)
    return model, used


# --------------------------------------------------------------------------- bf16 out of place


class BasicBlockBF16(torchvision.models.resnet.BasicBlock):
    """torchvision's ``BasicBlock``, its residual addition out of place in bfloat16
    (``bf16_out_of_place``); the same modules and state_dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(add_residual(out, identity))


class BottleneckBF16(torchvision.models.resnet.Bottleneck):
    """torchvision's ``Bottleneck``, its residual addition out of place in bfloat16
    (``bf16_out_of_place``); the same modules and state_dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(add_residual(out, identity))


_BF16_CLASSES = {
    nn.ReLU: ReLUBF16,
    torchvision.models.resnet.BasicBlock: BasicBlockBF16,
    torchvision.models.resnet.Bottleneck: BottleneckBF16,
}


def bf16_out_of_place(model: nn.Module) -> nn.Module:
    """Make a torchvision ResNet's ReLUs and residual additions run out of place on bfloat16
    tensors; returns ``model``.

    torchvision writes them in place. ATen's in-place bfloat16 kernels (``clamp_min_``,
    ``add_``) are slower than its out-of-place ones, and its float32 ones faster (ResNet18,
    channels-last, 2 threads, on a CPU with AMX: the bf16 training step 3% faster out of place
    and the bf16 forward pass of 64 images 21-24%; in float32 the forward pass 3% slower), so
    each operation chooses by its tensors' dtype (``ReLUBF16``). The values and gradients are
    torchvision's bit for bit: a ReLU and a sum of two tensors are exact either way, and the
    same operations run in the same order, so autograd's backward does too. Only classes
    change: the same modules, parameters and state_dict.
    """
    for module in model.modules():
        if type(module) in _BF16_CLASSES:
            module.__class__ = _BF16_CLASSES[type(module)]
    return model


def prepare_inputs(images_uint8_nhwc: np.ndarray, *, chunk: int = 64) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 channels_last,
    ``(x / 255 - IMAGENET_MEAN) / IMAGENET_STD``."""
    return to_tensor_images(images_uint8_nhwc, IMAGENET_MEAN, IMAGENET_STD, chunk=chunk)


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


# --------------------------------------------------------------------------- fixed extractor


class FrozenBackboneResNet(torchvision.models.ResNet):
    """The class of ``build_resnet(..., freeze_backbone=True)``'s models: a fixed extractor.

    The same modules and state_dict keys as the plain ResNet (a checkpoint loads into either);
    only ``train()`` differs: it puts ``fc`` in the requested mode and keeps every other child
    (the backbone) in eval mode, so BatchNorm normalises with its stored statistics and never
    updates them. The backbone's output is therefore a function of the image alone, not of the
    batch it came in, and computing it once (``backbone_features``) is exact. (torchvision's
    tutorial leaves BN in train mode, which is no fixed extractor: its features depend on the
    batch and its running statistics drift.)
    """

    def train(self, mode: bool = True) -> FrozenBackboneResNet:
        super().train(mode)
        for name, child in self.named_children():
            if name != "fc":
                child.eval()
        return self


def resnet_head(model: nn.Module) -> nn.Linear:
    """The classifier ``fc`` of a ``build_resnet`` model: the same module, not a copy.

    It maps backbone features (N, in_features) float32 to logits (N, n_classes); in eval mode
    ``resnet_head(m)(backbone_features(m, x))`` equals ``m(x)``. Training it trains ``m``'s head
    in place, so ``m`` is then the full network with the trained head.
    """
    return model.fc


def _backbone_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``ResNet._forward_impl`` up to (not including) ``fc``: (N, 3, H, W) ->
    (N, fc.in_features)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


def backbone_features(
    model: nn.Module,
    x: torch.Tensor,
    *,
    index: np.ndarray | torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    chunk: int = 64,
) -> torch.Tensor:
    """The backbone's output (what ``fc`` sees) for ImageNet-normalised images.

    Args:
        model: a ResNet from ``build_resnet`` (frozen or not). Moved to ``device`` in place (as
            ``fit`` does) and run in eval mode under ``torch.inference_mode``; its previous mode
            is restored afterwards.
        x: (N, 3, H, W) float32 (H, W >= 32), on any device.
        index: the rows of ``x`` to use, in that order (default: all); gathered ``chunk`` rows at
            a time, so ``x`` is never copied whole.
        device: where the forward passes run.
        chunk: images per forward pass: bounds the activations' memory.

    Returns:
        (len(index) or N, ``model.fc.in_features``) float32 on the CPU: an ordinary tensor (not
        an inference tensor), so a head can be trained on it.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) inputs, got {tuple(x.shape)}")
    if isinstance(index, torch.Tensor):  # np.array(tensor) warns: torch's __array__ has no copy=
        rows = index.to("cpu", torch.int64).reshape(-1)
    else:  # a copy: a negative-stride array (``idx[::-1]``) has no tensor view
        rows = None if index is None else torch.from_numpy(np.array(index, dtype=np.int64))
    n = len(x) if rows is None else len(rows)
    device = torch.device(device)
    out = torch.empty((n, model.fc.in_features), dtype=torch.float32)
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode():
            for start in range(0, n, chunk):
                part = x[start : start + chunk] if rows is None else x[rows[start : start + chunk]]
                features = _backbone_forward(model, part.to(device))
                out[start : start + chunk].copy_(features.float())
    finally:
        model.train(was_training)
    return out

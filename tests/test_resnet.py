"""ResNet transfer learning: builds, offline ImageNet weights via TORCH_HOME, freezing, recipe."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from emoprune.errors import UserError
from emoprune.models.layers import ReLUBF16
from emoprune.models.resnet import (
    ARCHS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BasicBlockBF16,
    BottleneckBF16,
    bf16_out_of_place,
    build_resnet,
    make_optimizer_and_scheduler,
    prepare_inputs,
    torch_hub_checkpoints,
    weights_file,
)
from fitting import assert_same_training_steps, quiet_fit

MARK = 0.123  # recognisable conv1 value in the fake "ImageNet" checkpoint


def _x(n: int = 2, side: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def cached_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub cache holds a resnet18 'ImageNet' file with conv1 == MARK."""
    home = tmp_path_factory.mktemp("torch_home")
    ckpt_dir = home / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        model.conv1.weight.fill_(MARK)
    torch.save(model.state_dict(), ckpt_dir / weights_file("resnet18"))
    return home


@pytest.fixture
def torch_home(monkeypatch, tmp_path):
    """Point TORCH_HOME somewhere; returns a setter. Default: an empty home."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)  # a set_dir() would win

    def use(home: Path) -> Path:
        monkeypatch.setenv("TORCH_HOME", str(home))
        return home

    use(tmp_path / "empty_home")
    return use


@pytest.fixture
def no_network(monkeypatch):
    """Every download path torch/torchvision have, plus raw sockets, raise if touched."""

    def boom(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", boom)
    import torchvision._internally_replaced_utils as replaced

    monkeypatch.setattr(replaced, "load_state_dict_from_url", boom)
    monkeypatch.setattr(socket.socket, "connect", boom)
    monkeypatch.setattr(socket, "create_connection", boom)


# --------------------------------------------------------------------------- names and paths


def test_weights_file_names():
    assert weights_file("resnet18") == "resnet18-f37072fd.pth"
    for arch in ARCHS:
        url = torchvision.models.get_model_weights(arch).IMAGENET1K_V1.url
        assert weights_file(arch) == url.rsplit("/", 1)[-1]
    with pytest.raises(ValueError, match="arch"):
        weights_file("vgg16")


def test_hub_dir_follows_torch_home(torch_home, tmp_path):
    torch_home(tmp_path / "th")
    assert torch_hub_checkpoints() == tmp_path / "th" / "hub" / "checkpoints"


# --------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("arch", ["resnet18", "resnet34"])
def test_random_build_and_forward(arch, torch_home, no_network):
    model, used = build_resnet(arch, weights="none")
    assert used == "random"
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 7
    assert model.fc.in_features == 512
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.requires_grad for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(_x()).shape == (2, 7)


def test_resnet50_build(torch_home, no_network):
    model, used = build_resnet("resnet50", n_classes=5, weights="auto")  # empty home -> random
    assert used == "random"
    assert model.fc.in_features == 2048 and model.fc.out_features == 5
    model.eval()
    with torch.no_grad():
        assert model(_x(1)).shape == (1, 5)


def test_the_smallest_input_params_allow_trains_on_a_batch_of_one_frame(torch_home, no_network):
    # Why resize.resnet must be >= 33 (test_params): at 32 px the last block's maps are 1x1,
    # and BatchNorm, training, cannot normalise one value per channel.
    model, _ = build_resnet("resnet18", weights="none")
    model.train()
    model(torch.zeros(1, 3, 33, 33)).sum().backward()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model(torch.zeros(1, 3, 32, 32))


def test_bad_arguments():
    with pytest.raises(ValueError, match="arch"):
        build_resnet("resnet101")
    with pytest.raises(ValueError, match="weights"):
        build_resnet("resnet18", weights="IMAGENET1K_V1")


# --------------------------------------------------------------------------- ImageNet, offline


@pytest.mark.parametrize("weights", ["imagenet", "auto"])
def test_imagenet_weights_from_torch_home(weights, cached_home, torch_home, no_network):
    torch_home(cached_home)
    model, used = build_resnet("resnet18", weights=weights)
    assert used == "imagenet"
    assert torch.all(model.conv1.weight == MARK)
    assert model.fc.out_features == 7  # replaced after the strict 1000-way load


def test_missing_weights(torch_home, no_network, tmp_path):
    home = torch_home(tmp_path / "nothing_here")
    assert build_resnet("resnet18", weights="auto")[1] == "random"
    with pytest.raises(UserError) as info:
        build_resnet("resnet18", weights="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert "resnet18-f37072fd.pth" in message
    assert str(home / "hub" / "checkpoints") in message
    assert "make weights" in message and "download.pytorch.org" in message


def test_corrupt_weights(torch_home, no_network, tmp_path):
    home = torch_home(tmp_path / "corrupt")
    path = home / "hub" / "checkpoints" / weights_file("resnet18")
    path.parent.mkdir(parents=True)
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    for weights in ("imagenet", "auto"):  # a broken cache file is never silently ignored
        with pytest.raises(UserError) as info:
            build_resnet("resnet18", weights=weights)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_weights_of_another_arch(torch_home, no_network, tmp_path):
    home = torch_home(tmp_path / "wrong")
    path = home / "hub" / "checkpoints" / weights_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    with pytest.raises(UserError, match="do not fit resnet18") as info:
        build_resnet("resnet18", weights="imagenet")
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- freezing and recipe


def test_freeze_backbone_trains_only_fc(torch_home):
    model, _ = build_resnet("resnet18", weights="none", freeze_backbone=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    optimizer, _ = make_optimizer_and_scheduler(model)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(params) == 2
    assert {id(p) for p in params} == {id(model.fc.weight), id(model.fc.bias)}


def test_recipe_step_and_schedule(torch_home):
    torch.manual_seed(0)
    model, _ = build_resnet("resnet18", weights="none")
    optimizer, scheduler = make_optimizer_and_scheduler(model)  # tutorial defaults
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"]) == (0.001, 0.9)
    before = model.conv1.weight.detach().clone()
    loss = nn.functional.cross_entropy(model(_x()), torch.tensor([0, 3]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.conv1.weight)  # fine-tunes the backbone too

    lrs = []
    for _ in range(15):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    assert lrs[:7] == [0.001] * 7
    assert lrs[7:14] == pytest.approx([0.0001] * 7)
    assert lrs[14] == pytest.approx(0.00001)


def _same_steps(ours: nn.Module, stock: nn.Module, x: torch.Tensor, bf16: bool) -> None:
    """Two SGD steps of each model, channels-last, in train mode: the same numbers bit for bit."""
    stock.to(memory_format=torch.channels_last)
    assert_same_training_steps(
        ours,
        stock,
        x.contiguous(memory_format=torch.channels_last),
        bf16=bf16,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
    )


@pytest.mark.parametrize("bf16", [False, True])
def test_bf16_out_of_place_resnet18_computes_torchvisions_numbers_bit_for_bit(bf16, torch_home):
    """build_resnet's ReLUs and additions, out of place in bf16, give torchvision's in-place
    model's outputs, gradients and BatchNorm statistics exactly."""
    ours, _ = build_resnet("resnet18", weights="none")
    assert all(type(m) is ReLUBF16 for m in ours.modules() if isinstance(m, nn.ReLU))
    assert sum(type(m) is BasicBlockBF16 for m in ours.modules()) == 8
    stock = torchvision.models.resnet18(weights=None)
    stock.fc = nn.Linear(512, 7)
    assert all(m.inplace for m in stock.modules() if isinstance(m, nn.ReLU))
    _same_steps(ours, stock, _x(4), bf16)


@pytest.mark.parametrize("bf16", [False, True])
def test_bf16_out_of_place_bottleneck_computes_torchvisions_numbers_bit_for_bit(bf16):
    """ResNet50's blocks likewise (two Bottlenecks, the first with a downsample)."""
    from torchvision.models.resnet import Bottleneck

    def blocks() -> nn.Sequential:
        downsample = nn.Sequential(nn.Conv2d(32, 64, 1, stride=2, bias=False), nn.BatchNorm2d(64))
        return nn.Sequential(
            Bottleneck(32, 16, stride=2, downsample=downsample), Bottleneck(64, 16)
        )

    ours = bf16_out_of_place(blocks())
    assert [type(m) for m in ours] == [BottleneckBF16, BottleneckBF16]
    assert all(type(m) is ReLUBF16 for m in ours.modules() if isinstance(m, nn.ReLU))
    x = torch.randn(4, 32, 16, 16, generator=torch.Generator().manual_seed(0))
    _same_steps(ours.to(memory_format=torch.channels_last), blocks(), x, bf16)


# --------------------------------------------------------------------------- inputs


def test_prepare_inputs_normalisation():
    images = np.zeros((2, 3, 4, 3), dtype=np.uint8)
    images[0, ..., 0] = 255
    images[1, 1, 2] = (10, 128, 200)
    x = prepare_inputs(images)
    assert x.shape == (2, 3, 3, 4) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    expected = (images.astype(np.float64) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(x.numpy(), expected.transpose(0, 3, 1, 2), rtol=1e-6, atol=1e-6)
    assert x[0, 0, 0, 0].item() == pytest.approx((1.0 - 0.485) / 0.229, rel=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        prepare_inputs(images.astype(np.float32))


def test_fit_runs_with_channels_last_inputs(torch_home):
    """The shared loop copes with channels_last inputs and model (its CPU batch buffer is NCHW)."""
    rng = np.random.default_rng(0)
    x = prepare_inputs(rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    model, _ = build_resnet("resnet18", weights="none")
    optimizer, scheduler = make_optimizer_and_scheduler(model, lr=0.01)
    history = quiet_fit(
        model,
        (x, y),
        (x, y),
        optimizer=optimizer,
        epochs=1,
        batch_size=4,
        scheduler=scheduler,
        augment=True,
    )
    assert len(history) == 1 and np.isfinite(history[0].train_loss)

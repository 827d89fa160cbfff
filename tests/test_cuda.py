"""The CUDA path (`device: cuda` / `auto` on a GPU machine). Skipped where there is no GPU:
CI has none; run these on a GPU with `python -m pytest tests/test_cuda.py`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emoprune.models.cnn import CNN
from emoprune.pruning.callbacks import collect_activations
from emoprune.pruning.distinctiveness import prune_model
from emoprune.pruning.mask import PruneMask
from emoprune.pruning.shrink import shrink
from emoprune.training.checkpoints import load_cnn_checkpoint, save_cnn
from emoprune.training.loop import adam, predict_proba, resolve_device, seed_everything
from fitting import quiet_fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def _data(n: int = 48, size: int = 227, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, 7, (n,), generator=g)


def test_auto_picks_the_gpu():
    assert resolve_device("auto").type == "cuda"


def test_training_on_the_gpu_matches_the_cpu():
    """Same seed, same data: the CUDA loop follows the CPU loop (up to float rounding)."""
    x, y = _data()
    losses = {}
    for device in ("cpu", "cuda"):
        seed_everything(0)
        model = CNN().to(device)
        history = quiet_fit(
            model,
            (x, y),
            (x[:16], y[:16]),
            optimizer=adam(model, 6e-4),
            epochs=2,
            batch_size=16,
            device=device,
        )
        losses[device] = [h.train_loss for h in history]
        assert next(model.parameters()).device.type == device
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=2e-3)


def test_a_gpu_checkpoint_loads_on_a_cpu_machine_and_resumes_on_the_gpu(tmp_path):
    seed_everything(0)
    model = CNN().cuda()
    opt = adam(model, 6e-4)
    x, y = _data(16)
    quiet_fit(model, (x.cuda(), y.cuda()), optimizer=opt, epochs=1, batch_size=8, device="cuda")
    save_cnn(tmp_path / "fold0_epoch001.pt", model, opt, epoch=1)
    loaded, meta, state = load_cnn_checkpoint(tmp_path / "fold0_epoch001.pt")
    assert next(loaded.parameters()).device.type == "cpu" and meta["epoch"] == 1
    np.testing.assert_allclose(
        predict_proba(loaded, x, device="cpu"), predict_proba(model, x, device="cuda"), atol=1e-4
    )  # TF32 convs
    loaded.cuda()
    resumed = adam(loaded, 6e-4, state)  # Adam's moments follow the model to the GPU
    history = quiet_fit(
        loaded, (x, y), optimizer=resumed, epochs=2, start_epoch=1, batch_size=8, device="cuda"
    )
    assert [h.epoch for h in history] == [2] and np.isfinite(history[0].train_loss)


def test_pruning_on_the_gpu_keeps_neurons_dead_and_shrinks_exactly():
    seed_everything(0)
    model = CNN().cuda()
    x, y = _data(32)
    mask = PruneMask(model)
    acts = collect_activations(model, x, mask.layers, torch.device("cuda"))
    # A generous threshold, so that something is certainly removed.
    prune_model(model, acts, mask, threshold=80.0, mode="activations")
    assert sum(len(r) for r in mask.removed.values()) > 0
    opt = adam(model, 1e-2)
    mask.attach(opt)
    quiet_fit(model, (x.cuda(), y.cuda()), optimizer=opt, epochs=2, batch_size=8, device="cuda")
    for layer in mask.layers:
        fc_in, fc_out = model.fc_pair(layer)
        dead = sorted(mask.removed[layer])
        assert torch.count_nonzero(fc_in.weight[dead]) == 0
        assert torch.count_nonzero(fc_out.weight[:, dead]) == 0
    small = shrink(model, mask)
    assert next(small.parameters()).device.type == "cuda"
    model.eval(), small.eval()
    with torch.inference_mode():
        torch.testing.assert_close(small(x[:8].cuda()), model(x[:8].cuda()), rtol=1e-4, atol=1e-5)


def test_resnet18_trains_channels_last_on_the_gpu():
    from emoprune.models.resnet import build_resnet, make_optimizer_and_scheduler

    seed_everything(0)
    model, _ = build_resnet("resnet18", 7, "none", channels_last=True)
    model.cuda()
    opt, _ = make_optimizer_and_scheduler(model)
    x, y = _data(16, 224)
    x = x.cuda().contiguous(memory_format=torch.channels_last)
    history = quiet_fit(model, (x, y.cuda()), optimizer=opt, epochs=2, batch_size=8, device="cuda")
    assert all(np.isfinite(h.train_loss) for h in history)

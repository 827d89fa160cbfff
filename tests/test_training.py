"""The training loop and its helpers, on tiny synthetic problems (seconds on 2 CPU cores)."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import REPO
from emoprune.errors import UserError
from emoprune.evaluation.scores import accuracy_and_f1
from emoprune.models.cnn import CNN
from emoprune.training.loop import (
    EpochStats,
    augment_batch,
    evaluate,
    fit,
    predict_proba,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from fitting import quiet_fit

CPU = torch.device("cpu")


def make_data(n: int, seed: int, side: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """3 classes; class c has a brighter channel c. Separable, but noisy enough to need training."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 3, side, side, generator=g)
    x[torch.arange(n), y] += 1.0
    return x, y


def tiny_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.1),  # makes the global-RNG part of resume reproducibility testable
        nn.Linear(4, 3),
    )


def run(
    epochs: int = 4,
    start_epoch: int = 0,
    seed: int = 0,
    state=None,
    build=tiny_model,
    train=None,
    **kwargs,
):
    """Fresh seeded ``build()`` model + Adam (optionally restored from ``state``), trained with
    fit on ``train`` (default: 96 samples of ``make_data``)."""
    seed_everything(seed)
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    if state is not None:
        model.load_state_dict(state[0])
        optimizer.load_state_dict(state[1])
    kwargs.setdefault("val", make_data(48, seed=1))
    history = quiet_fit(
        model,
        make_data(96, seed=0) if train is None else train,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=16,
        seed=seed,
        start_epoch=start_epoch,
        **kwargs,
    )
    return model, optimizer, history


def comparable(history: list[EpochStats]) -> list[tuple]:
    """Everything but wall time."""
    return [(s.epoch, s.train_loss, s.train_acc, s.val_loss, s.val_acc, s.lr) for s in history]


def test_fit_learns_a_separable_problem():
    _, _, history = run(epochs=12)
    assert [s.epoch for s in history] == list(range(1, 13))
    assert history[-1].train_loss < 0.5 * history[0].train_loss
    assert history[-1].train_acc > 0.9
    assert history[-1].val_acc > 0.9
    assert all(s.seconds > 0 for s in history)


def test_fit_trains_the_cnn():
    seed_everything(0)
    model = CNN(in_size=67, fc_activation="relu", hidden=(16, 8, 8))
    x = torch.randn(8, 3, 67, 67)
    y = torch.randint(0, 7, (8,))
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (stats,) = quiet_fit(model, (x, y), optimizer=opt, epochs=1, batch_size=4)
    assert np.isfinite(stats.train_loss) and stats.val_loss is None and stats.val_acc is None
    assert not torch.equal(before["fc1.weight"], model.fc1.weight)


def test_same_seed_same_stats():
    assert comparable(run()[2]) == comparable(run()[2])


def test_different_seed_different_stats():
    assert comparable(run(seed=0)[2]) != comparable(run(seed=1)[2])


def test_resume_matches_uninterrupted_run():
    _, _, straight = run(epochs=4)
    model, opt, first = run(epochs=2)
    state = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
    # A fresh process would start from a different global RNG state; fit must not depend on it.
    torch.manual_seed(12345)
    _, _, rest = run(epochs=4, start_epoch=2, state=state)
    assert [s.epoch for s in rest] == [3, 4]
    assert comparable(first + rest) == comparable(straight)


def test_resume_past_budget_trains_nothing():
    _, _, history = run(epochs=2, start_epoch=2)
    assert history == []


def test_train_metrics_are_means_over_the_epoch():
    # With lr 0 the model never changes, so the running mean over all batches must equal one
    # evaluation over the whole training set (the last batch alone would not).
    seed_everything(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    train = make_data(50, seed=0)  # 50 = 3 batches of 16 + a partial batch of 2
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    (stats,) = quiet_fit(model, train, optimizer=opt, epochs=1, batch_size=16)
    loss, acc = evaluate(model, *train, device=CPU)
    assert stats.train_loss == pytest.approx(loss, rel=1e-5)
    assert stats.train_acc == acc


def test_callbacks_run_once_per_epoch_in_order():
    calls = []
    model_seen = []

    def first(stats, model):
        calls.append(("first", stats.epoch, stats.val_acc is not None))
        model_seen.append(model)

    def second(stats, model):
        calls.append(("second", stats.epoch, stats.val_acc is not None))

    model, _, _ = run(epochs=3, start_epoch=1, callbacks=[first, second])
    assert calls == [
        ("first", 2, True),
        ("second", 2, True),
        ("first", 3, True),
        ("second", 3, True),
    ]
    assert all(m is model for m in model_seen)


def test_val_metrics_are_the_last_epochs():
    val = make_data(48, seed=1)
    model, _, history = run(epochs=5, val=val)
    loss, acc = evaluate(model, *val, device=CPU)
    assert history[-1].val_loss == pytest.approx(loss, rel=1e-6)
    assert history[-1].val_acc == acc
    # ... and each epoch's val numbers are that epoch's, not a copy of the final ones.
    assert len({s.val_loss for s in history}) == len(history)


def test_scheduler_is_stepped_per_epoch_and_lr_reported():
    seed_everything(0)
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    history = quiet_fit(
        model, make_data(32, seed=0), optimizer=opt, epochs=3, batch_size=16, scheduler=sched
    )
    assert [s.lr for s in history] == pytest.approx([0.1, 0.05, 0.025])


def test_augment_changes_training_but_stays_deterministic():
    plain = comparable(run(epochs=2)[2])
    augmented = comparable(run(epochs=2, augment=True)[2])
    assert augmented != plain
    assert augmented == comparable(run(epochs=2, augment=True)[2])


def shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """img (C, H, W) moved down by dy and right by dx, zero filled."""
    out = torch.zeros_like(img)
    _, h, w = img.shape
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_augment_batch_is_a_flip_and_shift_of_each_sample():
    x = torch.arange(16 * 2 * 10 * 12, dtype=torch.float32).reshape(16, 2, 10, 12) + 1
    out = augment_batch(x, torch.Generator().manual_seed(0), max_shift=3)
    assert out.shape == x.shape
    assert not torch.equal(out, x)
    flips, dys, dxs = 0, set(), set()
    for img, aug in zip(x, out):
        matches = [
            (flip, dy, dx)
            for flip in (False, True)
            for dy in range(-3, 4)
            for dx in range(-3, 4)
            if torch.equal(shift(img.flip(2) if flip else img, dy, dx), aug)
        ]
        assert len(matches) == 1, matches
        flips += matches[0][0]
        dys.add(matches[0][1])
        dxs.add(matches[0][2])
    assert 0 < flips < 16  # both branches happen
    assert len(dys) > 2 and len(dxs) > 2  # and shifts in both directions
    again = augment_batch(x, torch.Generator().manual_seed(0), max_shift=3)
    assert torch.equal(out, again)
    # The conv nets' layout and fit's bf16 batches get the same pixels, kept channels_last.
    for layout in (x.contiguous(memory_format=torch.channels_last), x.to(torch.bfloat16)):
        other = augment_batch(layout, torch.Generator().manual_seed(0), max_shift=3)
        assert torch.equal(other, out.to(layout.dtype))
        assert other.is_contiguous(memory_format=torch.channels_last)


def test_predict_proba():
    model, _, _ = run(epochs=3)
    x, _ = make_data(20, seed=3)
    probs = predict_proba(model, x, batch_size=7, device=CPU)
    assert probs.shape == (20, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    with torch.no_grad():
        expected = torch.softmax(model.eval()(x), 1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)


def test_predict_proba_of_rows_gathers_the_same_batches():
    """``rows`` gives exactly the probabilities of x[rows] (same batches, same bits), in the
    rows' order, from channels_last images without copying them whole."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    x = torch.randn(30, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    rows = np.array([29, 3, 17, 0, 8, 8, 21, 5, 12, 26, 1])
    got = predict_proba(model, x, rows=rows, batch_size=4, device=CPU)
    assert got.shape == (11, 5)
    assert np.array_equal(got, predict_proba(model, x[rows], batch_size=4, device=CPU))
    # In the rows' order (a batch of one sums in another order: close, not equal).
    np.testing.assert_allclose(got[1], predict_proba(model, x[3:4], device=CPU)[0], rtol=1e-5)
    assert np.array_equal(got[4], got[5])  # a repeated row


def test_accuracy_and_f1_known_case():
    # class 0: P=1, R=.5 -> F1 2/3; class 1: P=2/3, R=1 -> F1 .8; class 2 absent -> 0.
    acc, f1 = accuracy_and_f1([0, 0, 1, 1], [0, 1, 1, 1], n_classes=3)
    assert acc == 0.75
    assert f1 == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    # Perfect predictions, but class 0 never occurs: macro-F1 over 3 labels is 2/3.
    acc, f1 = accuracy_and_f1(np.array([2, 1]), np.array([2, 1]), n_classes=3)
    assert acc == 1.0 and f1 == pytest.approx(2 / 3)


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    with pytest.raises(UserError, match="device"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="device"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_resolve_precision_follows_the_hardware(monkeypatch):
    for avx512_bf16, amx, expected in (
        (True, False, "bf16"),
        (False, True, "bf16"),
        (False, False, "fp32"),
    ):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert resolve_precision("auto", CPU) == expected
    # An explicit choice wins, also where bf16 would only be emulated.
    assert resolve_precision("bf16", CPU) == "bf16" and resolve_precision("fp32", CPU) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    with pytest.raises(UserError, match="precision"):
        resolve_precision("fp16", CPU)


def test_bf16_autocast_trains_in_bf16_and_keeps_float32_weights():
    # The same seeds and batches: bf16 rounding moves the numbers a little, not the learning.
    model32, _, h32 = run(epochs=12)
    model16, opt16, h16 = run(epochs=12, precision="bf16")
    assert all(p.dtype == torch.float32 for p in model16.parameters())
    assert all(
        t.dtype == torch.float32 for st in opt16.state.values() for t in st.values() if t.ndim
    )
    assert h16[-1].train_acc > 0.9 and h16[-1].val_acc > 0.9
    assert abs(h16[-1].val_acc - h32[-1].val_acc) <= 0.05
    assert comparable(h16) != comparable(h32)  # it really ran in bf16
    w32, w16 = model32[-1].weight, model16[-1].weight
    assert torch.allclose(w16, w32, atol=0.1) and not torch.equal(w16, w32)
    with pytest.raises(ValueError, match="precision"):
        run(epochs=1, precision="fp16")


def test_fit_rejects_mismatched_inputs():
    x, y = make_data(8, seed=0)
    with pytest.raises(ValueError, match="labels"):
        run(epochs=1, train=(x, y[:4]), val=None)


def test_batch_larger_than_dataset_and_progress_bar(capsys):
    seed_everything(0)
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    history = fit(
        model,
        make_data(10, seed=0),
        make_data(6, seed=1),
        optimizer=opt,
        epochs=2,
        batch_size=64,
        device="cpu",
        seed=0,
        desc="fold 3",
    )
    assert len(history) == 2
    err = capsys.readouterr().err
    assert "fold 3" in err and "val_acc" in err  # the bar shows the fold and live metrics


def test_seed_everything_sets_deterministic_kernels_without_importing_the_compiler():
    # torch.use_deterministic_algorithms imports torch._inductor (and torch._dynamo): ~2 s of
    # every training stage's start-up, which seed_everything must not pay.
    code = (
        "import sys, torch\n"
        "from emoprune.training.loop import seed_everything\n"
        "seed_everything(0)\n"
        "print(torch.are_deterministic_algorithms_enabled(),\n"
        "      torch.is_deterministic_algorithms_warn_only_enabled(),\n"
        "      torch.utils.deterministic.fill_uninitialized_memory,\n"
        "      'torch._inductor' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Deterministic kernels, without NaN-filling each new tensor first (a debugging aid that
    # costs 3-8% of a ResNet18 step and changes no result).
    assert proc.stdout.split() == ["True", "True", "False", "False"]


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_bf16_casts_the_training_inputs_once_not_the_callers(precision, dtype):
    seen = []

    def recording():  # tiny_model, noting each batch's dtype and whether autocast was on
        model = tiny_model()
        model.register_forward_pre_hook(
            lambda _, args: seen.append((args[0].dtype, torch.is_autocast_enabled("cpu")))
        )
        return model

    x, y = make_data(40, seed=0)
    val = make_data(8, seed=1)
    run(epochs=3, build=recording, train=(x, y), val=val, augment=True, precision=precision)
    # 3 training batches an epoch in the run's precision; validation gets the caller's float32
    # inputs, autocast to bf16 in a bf16 run's epochs but the last, which is all float32.
    bf16 = precision == "bf16"
    epoch = [(dtype, bf16)] * 3
    assert seen == epoch + [(torch.float32, bf16)] + epoch + [(torch.float32, bf16)] + epoch + [
        (torch.float32, False)
    ]
    assert x.dtype == torch.float32


@pytest.mark.parametrize(
    "precision, augment, channels",
    [("bf16", False, 48), ("bf16", True, 3), ("fp32", False, 3)],
    ids=["bf16-blocks", "bf16-augmented-images", "fp32-images"],
)
def test_the_cnn_trains_on_pixel_blocks_in_bf16_unless_augmented(precision, augment, channels):
    seen = []

    def recording():  # the CNN, noting the channels and dtype of every batch it is fed
        model = CNN(n_classes=2, in_size=67)
        model.register_forward_pre_hook(
            lambda m, args: seen.append((m.training, args[0].shape[1], args[0].dtype))
        )
        return model

    x = torch.randn(40, 3, 67, 67).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (40,))
    val = (torch.randn(8, 3, 67, 67), torch.randint(0, 2, (8,)))
    run(epochs=2, build=recording, train=(x, y), val=val, augment=augment, precision=precision)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    epoch = [(True, channels, dtype)] * 3
    # Validation in bf16 (not the last epoch) runs on blocks too, augmented or not; the last
    # epoch's, in float32, on the images.
    first_val = (False, 48, torch.bfloat16) if precision == "bf16" else (False, 3, torch.float32)
    assert seen == epoch + [first_val] + epoch + [(False, 3, torch.float32)]


def test_a_bf16_runs_last_validation_is_the_float32_score():
    # The curve's last point is the number the driver reports (float32), not a bf16 estimate.
    torch.manual_seed(0)
    x, y = make_data(96, seed=0)
    val = make_data(48, seed=1)
    model, _, history = run(epochs=3, train=(x, y), val=val, precision="bf16")
    loss, acc = evaluate(model, *val, device=CPU)
    assert (history[-1].val_loss, history[-1].val_acc) == (loss, acc)
    with torch.autocast("cpu", torch.bfloat16):
        loss_bf16, _ = evaluate(model, *val, device=CPU)
    assert loss_bf16 != loss  # the test would pass vacuously if autocast changed nothing


def test_bf16_inputs_need_the_bf16_precision():
    x, y = make_data(8, seed=0)
    with pytest.raises(ValueError, match="bfloat16 training inputs"):
        run(epochs=1, train=(x.to(torch.bfloat16), y), val=None)


def _resnet18() -> nn.Module:
    from emoprune.models.resnet import build_resnet

    return build_resnet("resnet18", weights="none")[0]


@pytest.mark.parametrize(
    "build, shape",
    [
        (CNN, (4, 3, 227, 227)),
        (_resnet18, (2, 3, 64, 64)),
        (lambda: nn.Linear(512, 7), (4, 512)),  # the frozen ResNet's head on cached features
    ],
    ids=["cnn", "resnet18", "frozen_head"],
)
def test_casting_inputs_before_autocast_changes_no_bit(build, shape):
    # fit's bf16 path casts the training set once instead of letting autocast cast each batch;
    # that is exact only while every model's first op on its input is a conv or linear layer.
    torch.manual_seed(0)
    model, x = build(), torch.randn(*shape)
    if x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    runs = []
    for inputs in (x, x.to(torch.bfloat16)):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16):
            logits = model(inputs)
        logits.float().square().sum().backward()
        runs.append((logits, [p.grad.clone() for p in model.parameters()]))
    (logits32, grads32), (logits16, grads16) = runs
    assert logits16.dtype == torch.bfloat16 and torch.equal(logits32, logits16)
    assert all(torch.equal(a, b) for a, b in zip(grads32, grads16, strict=True))

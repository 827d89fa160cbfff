"""freeze_backbone as a fixed feature extractor: BN in eval mode for good, features cached once
per fold, only the head trained on them, with the same results as running the whole network."""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from emoprune.models.resnet import (
    FrozenBackboneResNet,
    backbone_features,
    build_resnet,
    make_optimizer_and_scheduler,
    prepare_inputs,
    resnet_head,
)
from emoprune.pipeline import packaged, tracking
from emoprune.predict import load_resnet_predictor
from emoprune.training.checkpoints import load_checkpoint
from emoprune.training.crossval import fold_seed
from emoprune.training.driver import FoldContext, cross_validate
from emoprune.training.loop import fit, predict_proba, seed_everything
from emoprune.training.recipes import finetune_resnet_fold
from fitting import quiet_fit

CLASSES = tuple("ABCDEFG")
SEED = 1234
TRAIN, VAL = np.arange(0, 10), np.arange(10, 14)


def _cfg(freeze: bool, **over) -> SimpleNamespace:
    values = dict(
        weights="none",
        freeze_backbone=freeze,
        epochs=4,
        batch_size=4,  # 10 training images: batches of 4, 4, 2
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-4,
        step_size=2,
        gamma=0.5,
    )
    return SimpleNamespace(**{**values, **over})


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    x = prepare_inputs(rng.integers(0, 256, size=(14, 32, 32, 3), dtype=np.uint8))
    return x, torch.from_numpy(rng.integers(0, 7, size=14))


def _context(tmp_path, seed: int = SEED, callbacks=(), precision: str = "fp32") -> FoldContext:
    return FoldContext(0, seed, torch.device("cpu"), CLASSES, tmp_path, tuple(callbacks), precision)


def _reference(
    cfg, x, y, seed: int = SEED, frozen: bool = True, precision: str = "fp32"
) -> tuple[nn.Module, list]:
    """The whole network trained every epoch by hand, seeded as the driver seeds a fold: with
    ``frozen``, today's frozen path made a fixed extractor (its backbone in eval mode)."""
    seed_everything(seed)
    model, _ = build_resnet("resnet18", 7, "none", freeze_backbone=frozen)
    opt, sched = make_optimizer_and_scheduler(
        model, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.step_size, cfg.gamma
    )
    history = quiet_fit(
        model,
        (x[TRAIN], y[TRAIN]),
        (x[VAL], y[VAL]),
        optimizer=opt,
        scheduler=sched,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=seed,
        precision=precision,
    )
    return model, history


def _backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


# --------------------------------------------------------------------------- the extractor


def test_frozen_backbone_never_leaves_eval_mode(data):
    x, _ = data
    model, _ = build_resnet("resnet18", weights="none", freeze_backbone=True)
    assert isinstance(model, FrozenBackboneResNet)
    assert set(model.state_dict()) == set(build_resnet("resnet18", weights="none")[0].state_dict())
    for mode in (True, False, True):
        model.train(mode)
        assert model.training is mode and model.fc.training is mode
        assert not any(m.training for n, m in model.named_modules() if n and not n.startswith("fc"))
    before = _backbone_state(model)
    with torch.no_grad():
        alone = model(x[:1])
        in_batch = model(x[:8])[:1]  # train mode: BN would use batch statistics if it could
    torch.testing.assert_close(alone, in_batch, rtol=1e-5, atol=1e-5)
    after = _backbone_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats not updated


def test_frozen_model_copies_and_pickles(data):
    """MLflow logs the full network by pickling it; the class must survive that."""
    x, _ = data
    model, _ = build_resnet("resnet18", weights="none", freeze_backbone=True)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for other in (copy.deepcopy(model), torch.load(buffer, weights_only=False)):
        assert isinstance(other, FrozenBackboneResNet)
        other.train()
        assert not other.bn1.training and other.fc.training
        with torch.no_grad():
            torch.testing.assert_close(other.eval()(x[:2]), model.eval()(x[:2]))


@pytest.mark.parametrize("freeze", [True, False])
def test_backbone_features_feed_the_head(data, freeze):
    x, _ = data
    model, _ = build_resnet("resnet18", 7, weights="none", freeze_backbone=freeze)
    model.train()
    features = backbone_features(model, x, chunk=3)
    assert features.shape == (14, model.fc.in_features) and features.dtype == torch.float32
    assert features.device.type == "cpu" and not features.is_inference()
    assert model.training and model.fc.training  # mode restored
    rows = VAL[::-1]  # any order; a negative-stride array is fine
    picked = backbone_features(model, x, index=rows, chunk=64)
    torch.testing.assert_close(picked, features[rows.copy()], rtol=1e-5, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a tensor index converts without numpy's __array__
        as_tensor = backbone_features(model, x, index=torch.from_numpy(rows.copy()), chunk=64)
    torch.testing.assert_close(as_tensor, picked, rtol=0, atol=0)
    head = resnet_head(model)
    assert head is model.fc
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(head(features), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="chunk"):
        backbone_features(model, x, chunk=0)


# --------------------------------------------------------------------------- the recipe


def test_cached_features_train_the_same_head_as_the_full_network(data, tmp_path):
    x, y = data
    cfg = _cfg(freeze=True)
    epochs_seen = []
    reference, ref_history = _reference(cfg, x, y)

    seed_everything(SEED)
    fit_ = finetune_resnet_fold(
        cfg,
        "resnet18",
        x,
        y,
        (TRAIN, VAL),
        _context(tmp_path, callbacks=[lambda stats, model: epochs_seen.append(stats.epoch)]),
    )
    assert fit_.notes == {"weights": "random"}
    assert epochs_seen == [1, 2, 3, 4] and len(fit_.history) == 4
    assert fit_.model is fit_.export.fc  # the head, trained in place in the full network
    assert fit_.train[0].shape == (10, 512) and fit_.val[0].shape == (4, 512)
    assert torch.equal(fit_.example, x[VAL[:2]])

    # Same head weights, epoch losses and learning rates as running the whole network each epoch.
    for name in ("weight", "bias"):
        torch.testing.assert_close(
            getattr(fit_.model, name), getattr(reference.fc, name), rtol=1e-5, atol=1e-5
        )
    for ours, ref in zip(fit_.history, ref_history, strict=True):
        assert ours.lr == ref.lr
        assert ours.train_loss == pytest.approx(ref.train_loss, rel=1e-5, abs=1e-6)
        assert ours.val_loss == pytest.approx(ref.val_loss, rel=1e-5, abs=1e-6)

    # What the driver scores (head on features) is what the full network gives on the images.
    expected = predict_proba(reference, x[VAL], device="cpu")
    np.testing.assert_allclose(
        predict_proba(fit_.model, fit_.val[0], device="cpu"), expected, atol=1e-5
    )
    np.testing.assert_allclose(
        predict_proba(fit_.export, fit_.example, device="cpu"), expected[:2], atol=1e-5
    )

    # The backbone (parameters and BN buffers) is the fold's init, untouched by training; the
    # head did train.
    seed_everything(SEED)
    init_model, _ = build_resnet("resnet18", 7, "none", freeze_backbone=True)
    assert not torch.equal(fit_.model.weight, init_model.fc.weight)
    init, trained = _backbone_state(init_model), _backbone_state(fit_.export)
    assert set(init) == set(trained)
    assert all(torch.equal(init[k], trained[k]) for k in init)


def test_driver_scores_and_checkpoint_match_the_full_network(data, tmp_path, monkeypatch):
    x, y = data
    cfg = _cfg(freeze=True, epochs=3)
    reference, _ = _reference(cfg, x, y, seed=fold_seed(SEED, 0))  # the driver's fold seed
    expected = predict_proba(reference, x[VAL], device="cpu")
    logged = []
    cv = cross_validate(
        [0],
        SEED,
        lambda fold: finetune_resnet_fold(cfg, "resnet18", x, y, (TRAIN, VAL), fold),
        classes=CLASSES,
        device=torch.device("cpu"),
        out=tmp_path,
        on_fold_end=lambda k, fit_: logged.append(fit_),
    )
    np.testing.assert_allclose(cv.predictions[0], expected, atol=1e-5)
    saved = np.load(tmp_path / "val_proba.npz")["fold0"]
    np.testing.assert_allclose(saved, expected, atol=1e-5)

    # fold0.pt holds the full network: a plain ResNet loads it (strict) and gives the same
    # probabilities, as predict and evaluate use it.
    state, meta = load_checkpoint(tmp_path / "fold0.pt")
    assert meta["arch"] == "resnet18" and meta["weights"] == "random" and meta["n_classes"] == 7
    plain, _ = build_resnet("resnet18", 7, weights="none")
    plain.load_state_dict(state, strict=True)
    np.testing.assert_allclose(predict_proba(plain, x[VAL], device="cpu"), expected, atol=1e-5)
    assert load_resnet_predictor(tmp_path / "fold0.pt", "resnet18", 32).classes == CLASSES

    # The MLflow hook logs fold0.pt (the full network) as a pyfunc of the 32-pixel images it
    # was fit on, also though the fit's own inputs are the head's features.
    captured = {}

    def log_model(package, name):
        captured.update(n=name, config=json.loads(Path(package["artifacts"]["config"]).read_text()))
        captured.update(checkpoint=package["artifacts"]["checkpoint"])

    monkeypatch.setattr(tracking, "log_model", log_model)
    packager = packaged.fold_packager("resnet18_fold{k}", tmp_path)
    tracking.fold_model_logger("resnet18_fold{k}", packager)(0, logged[0])
    assert captured["n"] == "resnet18_fold0" and captured["checkpoint"] == str(
        tmp_path / "fold0.pt"
    )
    assert captured["config"] == {"kind": "resnet18", "input_size": 32}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fine_tuning_path_is_unchanged(data, tmp_path, monkeypatch, precision):
    """freeze_backbone false: exactly build, optimizer over every layer, fit, as before; in bf16
    the recipe hands fit its training images already in bfloat16, with the same result."""
    from emoprune.training import recipes

    fitted_on = []

    def recording_fit(model, train, val, **kw):
        fitted_on.append((train[0].dtype, val[0].dtype))
        return fit(model, train, val, **kw)

    monkeypatch.setattr(recipes, "fit", recording_fit)
    x, y = data
    cfg = _cfg(freeze=False, epochs=2)
    seed_everything(SEED)
    context = _context(tmp_path, precision=precision)
    ours = finetune_resnet_fold(cfg, "resnet18", x, y, (TRAIN, VAL), context)
    assert ours.export is None and ours.example is None
    # The driver scores float32 images in either precision; in bf16 as rows of all the images,
    # gathered batch by batch, not a float32 copy of the training part.
    if precision == "bf16":
        assert ours.train[0] is x and np.array_equal(ours.train_rows, TRAIN)
    else:
        assert torch.equal(ours.train[0], x[TRAIN]) and ours.train_rows is None
    assert torch.equal(ours.val[0], x[VAL])
    train_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    assert fitted_on == [(train_dtype, torch.float32)]

    model, history = _reference(cfg, x, y, frozen=False, precision=precision)
    assert not isinstance(model, FrozenBackboneResNet)
    got, want = ours.model.state_dict(), model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert [h.train_loss for h in ours.history] == [h.train_loss for h in history]
    state, _ = load_checkpoint(tmp_path / "fold0.pt")
    assert all(torch.equal(state[k], want[k]) for k in want)

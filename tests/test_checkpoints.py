"""Checkpoints: round trip, atomic writes, and one-line UserErrors for unreadable files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from emoprune.errors import UserError
from emoprune.models.cnn import CNN
from emoprune.training.checkpoints import (
    build_cnn,
    cnn_meta,
    load_checkpoint,
    load_cnn_checkpoint,
    save_checkpoint,
    save_cnn,
)


class Payload:
    """Unpickling this creates ``marker``: proof that a loader ran arbitrary code. (os.mkdir is
    importable anywhere, so a non-weights_only loader really would run it.)"""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def small_cnn() -> CNN:
    torch.manual_seed(0)
    return CNN(in_size=67, conv_activation="relu", fc_activation="tanh", hidden=(20, 10, 5))


def test_round_trip(tmp_path, small_cnn):
    path = tmp_path / "nested" / "dir" / "model.pt"  # parents are created
    save_cnn(
        path,
        small_cnn,
        epoch=7,
        mean=np.array([0.1, 0.2, 0.3]),
        std=[0.4, 0.5, 0.6],
        params={"lr": 1e-3, "seed": np.int64(3)},
    )

    model, loaded_meta, optimizer = load_cnn_checkpoint(path)
    assert loaded_meta == {
        "n_classes": 7,
        "conv_activation": "relu",
        "fc_activation": "tanh",
        "hidden": [20, 10, 5],
        "in_size": 67,
        "epoch": 7,
        "mean": [0.1, 0.2, 0.3],
        "std": [0.4, 0.5, 0.6],
        "params": {"lr": 1e-3, "seed": 3},
    }
    assert optimizer is None
    assert model.hidden == (20, 10, 5) and model.fc_activation == "tanh"
    x = torch.randn(3, 3, 67, 67)
    torch.testing.assert_close(model.eval()(x), small_cnn.eval()(x), rtol=0, atol=0)

    state_dict, _ = load_checkpoint(path)
    assert state_dict.keys() == {f"model.{k}" for k in small_cnn.state_dict()}


def test_paper_cnn_round_trip(tmp_path):
    model = CNN()
    save_cnn(tmp_path / "m.pt", model)
    loaded, meta, _ = load_cnn_checkpoint(tmp_path / "m.pt")
    assert meta["hidden"] == [512, 128, 64] and meta["in_size"] == 227
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_atomic_write_leaves_no_temp_file(tmp_path, small_cnn):
    path = tmp_path / "model.pt"
    save_checkpoint(path, state_dict=small_cnn.state_dict(), meta=cnn_meta(small_cnn))
    save_checkpoint(path, state_dict=small_cnn.state_dict(), meta=cnn_meta(small_cnn, epoch=2))
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
    assert load_checkpoint(path)[1]["epoch"] == 2
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert path.stat().st_mode == plain.stat().st_mode  # usual permissions, not a temp file's 0600


def test_failed_write_keeps_old_file_and_no_temp(tmp_path, small_cnn):
    path = tmp_path / "model.pt"
    save_checkpoint(path, state_dict=small_cnn.state_dict(), meta=cnn_meta(small_cnn, epoch=1))
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(path, state_dict=small_cnn.state_dict(), meta={"bad": object()})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    original = torch.save
    torch.save = boom
    try:
        with pytest.raises(OSError, match="disk full"):
            save_checkpoint(path, state_dict=small_cnn.state_dict(), meta=cnn_meta(small_cnn))
    finally:
        torch.save = original
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
    assert load_checkpoint(path)[1]["epoch"] == 1


def assert_one_line_user_error(path, match: str | None = None):
    with pytest.raises(UserError, match=match) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert message.startswith(f"cannot load checkpoint {path}: ")
    return message


def test_missing_file(tmp_path):
    assert_one_line_user_error(tmp_path / "nope.pt", "no such file")
    with pytest.raises(UserError, match="no such file"):
        load_cnn_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(tmp_path, small_cnn):
    path = tmp_path / "model.pt"
    save_checkpoint(path, state_dict=small_cnn.state_dict(), meta=cnn_meta(small_cnn))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_one_line_user_error(path, "corrupt or truncated")


def test_random_bytes(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_one_line_user_error(path, "not a torch checkpoint")
    path.write_bytes(b"")
    assert_one_line_user_error(path, "empty or truncated")


def test_arbitrary_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": {}, "meta": {"x": Payload(marker)}}, path)  # pickles os.mkdir call
    assert_one_line_user_error(path, "refusing to unpickle .*mkdir")
    assert not marker.exists()  # weights_only refused it before running any code


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    assert_one_line_user_error(path, "not a")


def test_weights_that_do_not_fit_the_meta(tmp_path, small_cnn):
    path = tmp_path / "model.pt"
    meta = cnn_meta(small_cnn, hidden=[21, 10, 5])
    state = {f"model.{k}": v for k, v in small_cnn.state_dict().items()}
    save_checkpoint(path, state_dict=state, meta=meta)
    with pytest.raises(UserError, match="do not fit") as info:
        load_cnn_checkpoint(path)
    assert "\n" not in str(info.value)


def test_build_cnn_needs_architecture_keys():
    with pytest.raises(UserError, match="hidden"):
        build_cnn({"n_classes": 7, "activation": "relu"})
    with pytest.raises(UserError):
        build_cnn({"n_classes": 7, "activation": "swish", "hidden": [1, 2, 3]})
    model = build_cnn({"n_classes": 5, "activation": "relu", "hidden": [4, 3, 2]})
    assert model.fc4.out_features == 5 and model.hidden == (4, 3, 2)


def test_optimizer_state_in_meta_round_trips(tmp_path, small_cnn):
    # Resumable checkpoints keep Adam's state (tensors, int keys, tuples) inside meta.
    opt = torch.optim.Adam(small_cnn.parameters(), lr=1e-3)
    small_cnn(torch.randn(2, 3, 67, 67)).sum().backward()
    opt.step()
    path = tmp_path / "resume.pt"
    save_checkpoint(
        path,
        state_dict=small_cnn.state_dict(),
        meta=cnn_meta(small_cnn, optimizer=opt.state_dict()),
    )
    _, meta = load_checkpoint(path)
    restored = torch.optim.Adam(small_cnn.parameters(), lr=1e-3)
    restored.load_state_dict(meta["optimizer"])
    for key, value in opt.state_dict()["state"][0].items():
        assert torch.equal(value, restored.state_dict()["state"][0][key])
    assert restored.param_groups[0]["betas"] == opt.param_groups[0]["betas"]

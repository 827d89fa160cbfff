"""The ImageNet weights as a tracked input: kept, copied from torch's cache, or downloaded with
torch's hash check, from an HTTP server on 127.0.0.1; offline, wrong-hash and corrupt files fail
in one line and leave nothing behind."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import subprocess_env
from emoprune.errors import UserError
from emoprune.models import resnet
from emoprune.models.resnet import build_resnet, place_weights, placed_weights, weights_file
from servers import file_server, free_port

REPO = Path(__file__).resolve().parents[1]


def state_bytes(mark: float) -> bytes:
    """A resnet18 state dict (float16, so half the size) whose conv1 weights are all ``mark``."""
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        model.conv1.weight.fill_(mark)
    buf = io.BytesIO()
    torch.save({k: v.half() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def served():
    """(base URL, file name whose hash prefix matches its body, body): torch's naming rule."""
    body = state_bytes(0.25)
    name = f"resnet18-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    with file_server({f"/{name}": body, f"/{weights_file('resnet18')}": body}) as url:
        yield url, name, body


@pytest.fixture
def home(monkeypatch, tmp_path):
    """An empty TORCH_HOME; returns its hub checkpoints folder."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(resnet.MIRROR_ENV, raising=False)
    return tmp_path / "torch-home" / "hub" / "checkpoints"


def no_leftovers(dest: Path) -> bool:
    return not dest.exists() or not any(p.name.startswith(".") for p in dest.iterdir())


def test_a_missing_file_is_downloaded_hash_checked_into_the_tracked_folder(
    served, home, tmp_path, monkeypatch
):
    url, name, body = served
    monkeypatch.setattr(resnet, "weights_url", lambda arch: f"{url}/{name}")
    dest = tmp_path / "models" / "pretrained"
    record, how = place_weights("resnet18", dest)
    assert how == f"downloaded from {url}/{name}"
    assert record == {"file": name, "sha256": hashlib.sha256(body).hexdigest()}
    assert (dest / name).read_bytes() == body and no_leftovers(dest)
    assert not (home / name).exists()  # into the tracked folder, not torch's cache
    model, used = build_resnet("resnet18", weights="imagenet", weights_dirs=[dest])
    assert used == "imagenet" and torch.all(model.conv1.weight == 0.25)
    # Already there: kept, no second download.
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", pytest.fail)
    assert place_weights("resnet18", dest) == (record, "kept (already in place)")


def test_a_file_that_fails_torchvisions_hash_check_is_refused(served, home, tmp_path, monkeypatch):
    url, _, _ = served
    # The real file name, resnet18-f37072fd.pth, on a mirror that serves other bytes under it.
    monkeypatch.setenv(resnet.MIRROR_ENV, url)
    dest = tmp_path / "pretrained"
    with pytest.raises(UserError, match="hash check") as info:
        place_weights("resnet18", dest)
    assert "\n" not in str(info.value) and "f37072fd" in str(info.value)
    assert not (dest / weights_file("resnet18")).exists() and no_leftovers(dest)


def test_offline_fails_within_seconds_and_says_what_to_put_where(home, tmp_path, monkeypatch):
    monkeypatch.setenv(resnet.MIRROR_ENV, f"http://127.0.0.1:{free_port()}")  # nobody listens
    start = time.perf_counter()
    with pytest.raises(UserError, match="may be offline") as info:
        place_weights("resnet18", tmp_path / "pretrained")
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and str(tmp_path / "pretrained") in message
    assert "\n" not in message and no_leftovers(tmp_path / "pretrained")


def test_a_cached_file_is_copied_without_the_network(home, tmp_path, monkeypatch):
    home.mkdir(parents=True)
    (home / weights_file("resnet18")).write_bytes(state_bytes(0.5))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", pytest.fail)
    dest = tmp_path / "pretrained"
    record, how = place_weights("resnet18", dest)
    assert how == "copied from the torch hub cache" and record["file"] == weights_file("resnet18")
    assert (dest / record["file"]).read_bytes() == (home / record["file"]).read_bytes()


def test_a_corrupt_file_is_never_placed(home, tmp_path, monkeypatch):
    home.mkdir(parents=True)
    (home / weights_file("resnet18")).write_bytes(b"not a checkpoint")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", pytest.fail)
    dest = tmp_path / "pretrained"
    with pytest.raises(UserError, match="corrupt"):
        place_weights("resnet18", dest)
    assert not (dest / weights_file("resnet18")).exists()


def test_the_pipeline_reads_only_its_tracked_folder(home, tmp_path):
    # A file in torch's cache must not decide a pipeline result: weights_dirs says where to look.
    home.mkdir(parents=True)
    (home / weights_file("resnet18")).write_bytes(state_bytes(0.5))
    assert build_resnet("resnet18", weights="auto", weights_dirs=[tmp_path])[1] == "random"
    with pytest.raises(UserError, match="make weights"):
        build_resnet("resnet18", weights="imagenet", weights_dirs=[tmp_path])
    assert build_resnet("resnet18", weights="auto")[1] == "imagenet"  # default: torch's cache


def _stage(tmp_path: Path, weights: str, mirror: str) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(f"finetune:\n  weights: {weights}\n")
    env = subprocess_env(TORCH_HOME=str(tmp_path / "torch-home"), **{resnet.MIRROR_ENV: mirror})
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / "pretrained.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_stage_falls_back_under_auto_and_stops_under_imagenet(tmp_path):
    offline = f"http://127.0.0.1:{free_port()}"
    proc = _stage(tmp_path, "auto", offline)
    assert proc.returncode == 0, proc.stderr
    assert "warning: [pretrained] cannot download" in proc.stdout
    index = json.loads((tmp_path / "models/pretrained/weights.json").read_text())
    assert index == {"weights": "auto", "archs": {"resnet18": {"file": None}}}
    assert placed_weights(tmp_path / "models/pretrained") == {}
    proc = _stage(tmp_path, "imagenet", offline)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: [pretrained] cannot download")
    assert len(proc.stderr.strip().splitlines()) == 1

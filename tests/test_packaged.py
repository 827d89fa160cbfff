"""Self-contained MLflow models: every kind's pyfunc gives predict's probabilities from uint8
frames, carries its signature, example and pinned requirements, and loads without emoprune."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest
import torch
from PIL import Image

from emoprune import predict
from emoprune.cli import main
from emoprune.features.pca import fit_descriptor_pca
from emoprune.features.phog import phog_length
from emoprune.models.cnn import CNN
from emoprune.models.mlp import mlp
from emoprune.models.resnet import build_resnet
from emoprune.pipeline import packaged, tracking
from emoprune.pruning.mask import PruneMask
from emoprune.training.checkpoints import save_checkpoint, save_cnn

CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
MEAN, STD = [0.45, 0.40, 0.35], [0.25, 0.22, 0.20]
LPQ = {"win_size": 3, "decorrelate": True, "rho": 0.9}
PHOG = {"bins": 8, "angle": 360, "levels": 3}
FRAMES = np.random.default_rng(7).integers(0, 256, (3, 50, 70, 3), dtype=np.uint8)


def _cnn(path: Path, pruned: dict | None = None) -> None:
    torch.manual_seed(0)
    model = CNN(hidden=(16, 8, 6), in_size=67)
    extra = {}
    if pruned:  # as save_pruned writes a pruned fold: the masked network with its mask
        mask = PruneMask(model, tuple(pruned))
        for layer, idx in pruned.items():
            mask.add(layer, idx)
        mask.apply()
        extra["pruned"] = mask.state()
    save_cnn(path, model, fold=0, mean=MEAN, std=STD, classes=CLASSES, epoch=3, **extra)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{kind: (saved pyfunc folder, predict's local predictor of the same checkpoint)}."""
    root = tmp_path_factory.mktemp("packaged")
    _cnn(root / "cnn.pt")
    _cnn(root / "pruned.pt", {"fc1": [0, 3, 5], "fc2": [1]})
    torch.manual_seed(0)
    resnet, _ = build_resnet("resnet18", 7, weights="none")
    meta = {"fold": 1, "n_classes": 7, "classes": CLASSES}
    save_checkpoint(
        root / "r18.pt", state_dict=resnet.state_dict(), meta={"arch": "resnet18", **meta}
    )
    rng = np.random.default_rng(0)
    pcas = {"lpq": fit_descriptor_pca(rng.random((20, 256)), 3)}
    pcas["phog"] = fit_descriptor_pca(rng.random((20, phog_length(64, 64))), 2)
    pca_meta = {n: p.to_meta() for n, p in pcas.items()}
    save_checkpoint(
        root / "mlp.pt",
        state_dict=mlp(5, [4], 7).state_dict(),
        meta={"n_inputs": 5, "hidden": [4], "pca": pca_meta, **meta},
    )
    (root / "params.json").write_text(json.dumps({"lpq": LPQ, "phog": PHOG, "image_size": 64}))
    local = {
        "cnn": predict.load_cnn_predictor(root / "cnn.pt", "cnn"),
        "pruned": predict.load_cnn_predictor(root / "pruned.pt", "pruned"),  # masked, unshrunk
        "resnet18": predict.load_resnet_predictor(root / "r18.pt", "resnet18", 32),
        "mlp": predict.load_mlp_predictor(root / "mlp.pt", root / "params.json"),
    }
    names = {"cnn": "model_fold0", "pruned": "shrunk_fold0", "resnet18": "x", "mlp": "model_fold1"}
    out = {}
    for kind, ckpt in (("cnn", "cnn"), ("pruned", "pruned"), ("resnet18", "r18"), ("mlp", "mlp")):
        package = packaged.package(
            root / f"{ckpt}.pt",
            root,
            name=names[kind],
            input_size=32,
            feature_params=root / "params.json",
        )
        mlflow.pyfunc.save_model(root / f"model_{kind}", **package)
        out[kind] = (root / f"model_{kind}", local[kind])
    return out


@pytest.mark.parametrize("kind", ["cnn", "pruned", "resnet18", "mlp"])
def test_pyfunc_gives_the_local_predictors_probabilities(models, kind):
    path, local = models[kind]
    loaded = mlflow.pyfunc.load_model(str(path))
    got = loaded.predict(FRAMES)
    want = local([Image.fromarray(f) for f in FRAMES])
    assert got.shape == want.shape == (3, 7) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, atol=1e-5 if kind == "pruned" else 1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0)
    meta = loaded.metadata.metadata
    assert packaged.emoprune_metadata(meta) is not None
    assert meta["kind"] == kind and meta["classes"] == CLASSES
    assert meta["fold"] == (1 if kind in ("resnet18", "mlp") else 0)
    assert meta["input_size"] == {"cnn": 67, "pruned": 67, "resnet18": 32, "mlp": 64}[kind]
    network = loaded.unwrap_python_model().classifier.network
    if kind == "pruned":  # the shrunk network runs: 16 - 3 and 8 - 1 units left
        assert network.hidden == (13, 7, 6) and meta["hidden"] == [13, 7, 6]
    # Frames already of the model's size are used as they are (the same squash, once).
    size = meta["input_size"]
    resized = np.stack([predict.resize_square(Image.fromarray(f), size) for f in FRAMES])
    np.testing.assert_allclose(loaded.predict(resized), got, atol=1e-12)


def test_signature_example_and_pinned_requirements(models):
    path, _ = models["mlp"]
    info = mlflow.models.get_model_info(str(path))
    inputs, outputs = info.signature.inputs.to_dict()[0], info.signature.outputs.to_dict()[0]
    assert inputs["tensor-spec"] == {"dtype": "uint8", "shape": (-1, -1, -1, 3)}
    assert outputs["tensor-spec"] == {"dtype": "float64", "shape": (-1, 7)}
    example = mlflow.models.Model.load(str(path)).load_input_example(str(path))
    assert example.dtype == np.uint8 and example.shape == (2, 16, 20, 3)
    assert (path / "input_example.json").stat().st_size < 20_000
    pins = dict(line.split("==") for line in (path / "requirements.txt").read_text().split())
    for dist in ("torch", "torchvision", "numpy", "pillow", "scikit-learn", "scipy", "mlflow"):
        assert pins[dist] == importlib.metadata.version(dist).split("+")[0], dist
    assert (path / "code/emoprune/pipeline/packaged.py").is_file()
    assert not list(path.rglob("__pycache__"))


CHILD = """
import importlib.util, json, sys
assert importlib.util.find_spec("emoprune") is None, "emoprune is importable"
import mlflow.pyfunc, numpy as np
frames, out = np.load(sys.argv[1]), {}
for kind, path in json.loads(sys.argv[2]).items():
    for name in [m for m in sys.modules if m.split(".")[0] == "emoprune"]:
        del sys.modules[name]  # each model imports the emoprune of its own code/
    proba = mlflow.pyfunc.load_model(path).predict(frames)
    out[kind] = {"proba": proba.tolist(), "emoprune": sys.modules["emoprune"].__file__}
print(json.dumps(out))
"""


def test_models_load_where_emoprune_is_not_installed(models, tmp_path):
    # -S skips site, so the editable install's .pth (a path to the checkout's src/) is never
    # read; the venv's site-packages (holding no emoprune package) is the only library path.
    np.save(tmp_path / "frames.npy", FRAMES)
    paths = {kind: str(path) for kind, (path, _) in models.items()}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    done = subprocess.run(
        [sys.executable, "-S", "-c", CHILD, str(tmp_path / "frames.npy"), json.dumps(paths)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    child = json.loads(done.stdout.splitlines()[-1])
    for kind, (path, _) in models.items():
        here = mlflow.pyfunc.load_model(str(path)).predict(FRAMES)
        np.testing.assert_allclose(np.array(child[kind]["proba"]), here, atol=1e-12)
        assert Path(child[kind]["emoprune"]).is_relative_to(path / "code")


def test_stage_hook_logs_to_the_store_and_predict_reads_newest_version(
    models, tmp_path, clean_env, capsys
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    clean_env.setenv("MLFLOW_TRACKING_URI", uri)
    clean_env.chdir(tmp_path)
    out = tmp_path / "outputs/models/pruned"
    out.mkdir(parents=True)
    _cnn(out / "fold0.pt", {"fc1": [2], "fc3": [0, 1]})
    before = sorted(out.rglob("*"))
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "mlartifacts").as_uri())
    fit = SimpleNamespace(example=None, val=(torch.zeros(2, 3, 67, 67), None))
    with mlflow.start_run(experiment_id=exp):
        log = tracking.fold_model_logger("shrunk_fold{k}", packaged.fold_packager("x", out))
        start = time.perf_counter()
        log(0, fit)
        seconds = time.perf_counter() - start
        model = mlflow.last_logged_model()
    assert model.name == "shrunk_fold0" and seconds < 30
    assert sorted(out.rglob("*")) == before  # nothing stray in the DVC-tracked outputs
    mlflow.register_model(f"models:/{model.model_id}", "emo")
    capsys.readouterr()
    image = tmp_path / "face.png"
    Image.fromarray(FRAMES[0]).save(image)
    assert main(["predict", "--uri", "models:/emo@latest", "--top", "2", str(image)]) == 0
    path, cls, prob, ranked = capsys.readouterr().out.strip().split("\t")
    ref = predict.load_cnn_predictor(out / "fold0.pt", "pruned")([Image.open(image)])[0]
    assert path == str(image) and cls == CLASSES[int(ref.argmax())] and prob == f"{ref.max():.2f}"

"""`emoprune predict`: checkpoints of every family -> one line per image, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import subprocess_env
from emoprune import predict
from emoprune.cli import main
from emoprune.data.resize import resize_one
from emoprune.features import compute_descriptors
from emoprune.features.pca import fit_descriptor_pca
from emoprune.features.phog import phog_length
from emoprune.models.cnn import CNN
from emoprune.models.inputs import to_tensor_images
from emoprune.models.mlp import mlp
from emoprune.training.checkpoints import load_cnn_checkpoint, save_checkpoint, save_cnn
from servers import free_port

CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
MEAN, STD = [0.45, 0.40, 0.35], [0.25, 0.22, 0.20]
CNN_CKPT = Path("outputs/models/cnn/fold0.pt")


def _noise_image(path: Path, width: int, height: int, seed: int, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path)
    return path


@pytest.fixture
def project(tmp_path, monkeypatch, clean_env):
    """A fake pipeline-outputs tree (CNN folds 0 and 1) and a PNG + a JPEG; cwd is its root."""
    monkeypatch.chdir(tmp_path)
    for fold in (0, 1):
        torch.manual_seed(fold)
        model = CNN(hidden=(16, 8, 6), in_size=67)
        save_cnn(
            f"outputs/models/cnn/fold{fold}.pt",
            model,
            fold=fold,
            mean=MEAN,
            std=STD,
            classes=CLASSES,
            epoch=3,
        )
    (tmp_path / "imgs").mkdir()
    png = _noise_image(tmp_path / "imgs/small.png", 100, 80, seed=1)
    jpg = _noise_image(tmp_path / "imgs/frame.jpg", 720, 576, seed=2)
    return tmp_path, ["imgs/small.png", "imgs/frame.jpg"], (png, jpg)


def _direct_cnn_proba(ckpt: Path, image: str) -> np.ndarray:
    """The reference: the checkpoint's model on resize_one + to_tensor_images, softmaxed."""
    model, meta, _ = load_cnn_checkpoint(ckpt)
    arr = resize_one(image, [meta["in_size"]])[0].copy()  # writable, as torch wants
    x = to_tensor_images(arr[None], meta["mean"], meta["std"])
    with torch.no_grad():
        return torch.softmax(model.eval()(x).double(), 1)[0].numpy()


def _lines(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


def test_cnn_prints_one_line_per_image_matching_the_model(project, capsys):
    _, names, _ = project
    assert main(["predict", *names]) == 0
    out, err = capsys.readouterr()
    rows = _lines(out)
    assert [r[0] for r in rows] == names and err == ""
    for (_, cls, prob), image in zip(rows, names):
        ref = _direct_cnn_proba(CNN_CKPT, image)
        assert cls == CLASSES[int(ref.argmax())]
        assert 0.0 <= float(prob) <= 1.0 and prob == f"{ref.max():.2f}"
    # The unrounded probabilities are the model's on the same preprocessed tensor.
    got = predict.load_predictor("cnn", 0)([predict.read_image(n) for n in names])
    ref = np.stack([_direct_cnn_proba(CNN_CKPT, n) for n in names])
    assert got.shape == (2, 7) and np.allclose(got, ref, atol=1e-6)
    assert np.allclose(got.sum(1), 1.0)


def test_fold_picks_that_folds_checkpoint(project, capsys):
    _, names, _ = project
    assert main(["predict", names[0], "--fold", "1", "--top", "7"]) == 0
    ranked = _lines(capsys.readouterr().out)[0][3].split(", ")
    probs = np.array([float(r.split()[1]) for r in ranked])
    ref = _direct_cnn_proba(Path("outputs/models/cnn/fold1.pt"), names[0])
    assert np.allclose(np.sort(probs)[::-1], probs)
    assert np.allclose(probs, np.sort(ref)[::-1], atol=0.006)
    assert {r.split()[0] for r in ranked} == set(CLASSES)


def test_top_k_adds_a_ranked_fourth_field(project, capsys):
    _, names, _ = project
    assert main(["predict", "--top", "3", names[1]]) == 0
    _, cls, prob, ranked = _lines(capsys.readouterr().out)[0]
    items = [r.rsplit(" ", 1) for r in ranked.split(", ")]
    assert len(items) == 3 and items[0] == [cls, prob]
    assert [float(p) for _, p in items] == sorted((float(p) for _, p in items), reverse=True)


def test_greyscale_and_rgba_frames_are_converted(project, capsys):
    root, _, _ = project
    _noise_image(root / "imgs/grey.png", 64, 64, seed=3, mode="L")
    _noise_image(root / "imgs/alpha.png", 90, 120, seed=4, mode="RGBA")
    assert main(["predict", "imgs/grey.png", "imgs/alpha.png"]) == 0
    assert len(_lines(capsys.readouterr().out)) == 2


def test_bad_images_get_one_line_errors_and_the_good_one_still_prints(project, capsys):
    root, names, (png, _) = project
    data = png.read_bytes()
    (root / "imgs/truncated.png").write_bytes(data[: len(data) // 2])
    (root / "imgs/notes.png").write_text("not a picture\n")
    args = ["imgs/truncated.png", names[0], "imgs/notes.png", "imgs/absent.png"]
    assert main(["predict", *args]) == 2
    out, err = capsys.readouterr()
    assert [r[0] for r in _lines(out)] == [names[0]]
    errors = err.splitlines()
    assert len(errors) == 3 and "Traceback" not in err
    assert errors[0].startswith("error: imgs/truncated.png: ")
    assert errors[1] == "error: imgs/notes.png: not an image"
    assert errors[2] == "error: imgs/absent.png: no such file"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--fold", "9"], "--fold 9"),
        (["--model", "pruned"], "outputs/models/pruned/fold0.pt"),
        (["--model", "resnet34"], "outputs/models/resnet/resnet34/fold0.pt"),
        (["--model", "bogus"], "--model"),
        (["--fold", "-1"], "--fold"),
        (["--top", "0"], "--top"),
        (["--model", "mlp", "--uri", "runs:/abc/model_fold0"], "--uri"),
    ],
)
def test_option_and_model_mistakes_are_one_line_exit_2(project, capsys, args, expected):
    _, names, _ = project
    assert main(["predict", names[0], *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith("error: ") and expected in err and "Traceback" not in err


def test_missing_and_corrupt_checkpoints_name_the_file(project, capsys):
    _, names, _ = project
    CNN_CKPT.write_bytes(b"\x00garbage" * 10)
    assert main(["predict", names[0]]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and str(CNN_CKPT) in err
    for fold in (0, 1):
        Path(f"outputs/models/cnn/fold{fold}.pt").unlink()
    assert main(["predict", names[0]]) == 2
    err = capsys.readouterr().err
    expected = f"error: {CNN_CKPT}: no such file; run `dvc repro` in the project root first"
    assert err.splitlines() == [expected]


def test_mlp_checkpoint_end_to_end(project, capsys):
    _, names, _ = project
    size, phog_kw = 64, {"bins": 8, "angle": 360, "levels": 3}
    lpq_kw = {"win_size": 3, "decorrelate": True, "rho": 0.9}
    Path("outputs/features").mkdir(parents=True)
    Path("outputs/features/params.json").write_text(
        json.dumps({"lpq": lpq_kw, "phog": phog_kw, "image_size": size, "gray": "rgb2gray"})
    )
    rng = np.random.default_rng(0)
    pcas = {
        "lpq": fit_descriptor_pca(rng.random((20, 256)), 3),
        "phog": fit_descriptor_pca(rng.random((20, phog_length(size, size))), 2),
    }
    torch.manual_seed(0)
    model = mlp(5, [4], 7)
    save_checkpoint(
        "outputs/models/mlp/fold0.pt",
        state_dict=model.state_dict(),
        meta={
            "n_inputs": 5,
            "hidden": [4],
            "n_classes": 7,
            "fold": 0,
            "classes": CLASSES,
            "pca": {n: p.to_meta() for n, p in pcas.items()},
        },
    )

    assert main(["predict", "--model", "mlp", names[1]]) == 0
    [(path, cls, prob)] = _lines(capsys.readouterr().out)
    arr = resize_one(names[1], [size])[0][None]
    lpq, phog = compute_descriptors(arr, lpq_kwargs=lpq_kw, phog_kwargs=phog_kw)
    x = np.hstack([pcas["lpq"].transform(lpq), pcas["phog"].transform(phog)]).astype(np.float32)
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(x)).double(), 1)[0].numpy()
    assert path == names[1] and cls == CLASSES[int(ref.argmax())] and prob == f"{ref.max():.2f}"
    got = predict.load_predictor("mlp", 0)([predict.read_image(names[1])])
    assert np.allclose(got[0], ref, atol=1e-6)  # unrounded: a near-uniform random MLP

    Path("outputs/features/params.json").unlink()  # the MLP needs the features' params
    assert main(["predict", "--model", "mlp", names[1]]) == 2
    assert "outputs/features/params.json" in capsys.readouterr().err


def test_resnet_checkpoint_end_to_end(project, capsys):
    from emoprune.models.resnet import build_resnet, prepare_inputs

    _, names, _ = project
    torch.manual_seed(0)
    model, _ = build_resnet("resnet18", 7, weights="none")
    save_checkpoint(
        "outputs/models/resnet/resnet18/fold0.pt",
        state_dict=model.state_dict(),
        meta={
            "arch": "resnet18",
            "weights": "random",
            "fold": 0,
            "n_classes": 7,
            "classes": CLASSES,
        },
    )
    got = predict.load_predictor("resnet18", 0)([predict.read_image(names[0])])
    arr = resize_one(names[0], [224])[0][None].copy()
    with torch.no_grad():
        ref = torch.softmax(model.eval()(prepare_inputs(arr)), 1)
    assert np.allclose(got, ref.numpy(), atol=1e-5)
    assert main(["predict", "--model", "resnet18", names[0]]) == 0
    assert _lines(capsys.readouterr().out)[0][1] == CLASSES[int(ref.argmax())]


def test_uri_loads_a_packaged_model_without_the_local_outputs(project, capsys):
    import shutil

    import mlflow.pyfunc

    from emoprune.pipeline import packaged

    root, names, _ = project
    package = packaged.package(CNN_CKPT, root, kind="cnn")
    mlflow.pyfunc.save_model(root / "logged", **package)
    assert main(["predict", *names]) == 0
    local = capsys.readouterr().out
    shutil.rmtree(root / "outputs")  # the model carries its normalisation and classes
    uri = (root / "logged").as_uri()
    assert main(["predict", "--uri", uri, "--top", "7", *names]) == 0
    logged = capsys.readouterr().out
    assert [r[:3] for r in _lines(logged)] == _lines(local) and len(local.splitlines()) == 2
    assert not (root / "mlflow.db").exists()  # a file URI needs no tracking store


def test_a_tracked_uri_is_downloaded_once_and_removed_with_its_predictor(
    project, capsys, monkeypatch, tmp_path_factory
):
    """MLflow, left to download a ``runs:/`` model, leaves its folder in the temporary
    directory for good: one such folder per call of ``emoprune predict --uri``."""
    import gc
    import tempfile

    import mlflow

    from emoprune.pipeline import packaged, tracking

    root, names, _ = project
    # Where predict looks (./mlflow.db); an earlier test may have left mlflow pointed elsewhere.
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    with mlflow.start_run(experiment_id=mlflow.create_experiment("emoprune")) as run:
        tracking.log_model(packaged.package(CNN_CKPT, root, kind="cnn"), "model_fold0")
    assert main(["predict", *names]) == 0
    local = capsys.readouterr().out
    scratch = tmp_path_factory.mktemp("scratch")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    uri = f"runs:/{run.info.run_id}/model_fold0"
    predictor = predict.load_predictor(uri=uri)
    (held,) = scratch.iterdir()  # one download, read from while the predictor lives
    assert held.name.startswith("emoprune-predict-") and any(held.rglob("MLmodel"))
    del predictor
    gc.collect()
    assert not any(scratch.iterdir())
    assert main(["predict", "--uri", uri, *names]) == 0
    assert [r[:3] for r in _lines(capsys.readouterr().out)] == _lines(local)
    gc.collect()
    assert not any(scratch.iterdir())


def test_uri_mistakes_are_one_line_errors_naming_the_uri(project, capsys):
    import mlflow.pytorch

    root, names, _ = project
    model, _, _ = load_cnn_checkpoint(CNN_CKPT)
    # What the stages logged before models carried their preprocessing: no emoprune metadata.
    mlflow.pytorch.save_model(
        model, root / "old", serialization_format="pickle", pip_requirements=["torch"]
    )
    capsys.readouterr()  # mlflow's warning about pickles
    old, absent = (root / "old").as_uri(), (root / "absent").as_uri()
    for uri, reason in (
        (old, "no emoprune metadata"),
        (absent, "cannot load the model"),
        ("http://127.0.0.1:9/models/m", "must lie under a server's /api/2.0/mlflow-artifacts"),
        # at once, not after MLflow's minutes of retries
        (f"http://127.0.0.1:{free_port()}{predict.ARTIFACTS_API}/0/m", "is unreachable"),
    ):
        assert main(["predict", "--uri", uri, names[0]]) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err
        assert err.startswith(f"error: --uri {uri}: ") and reason in err
    assert main(["predict", "--uri", old, "--fold", "1", names[0]]) == 2
    assert "drop --fold" in capsys.readouterr().err


def test_predictor_and_formatting_without_files():
    torch.manual_seed(0)
    model = CNN(n_classes=3, hidden=(8, 8, 8), in_size=67)
    pred = predict.cnn_predictor(model, MEAN, STD, 67, ["a", "b", "c"])
    images = [Image.new("RGB", (30, 50), (200, 10, 10)), Image.new("RGB", (640, 480), "white")]
    proba = pred(images)
    assert proba.shape == (2, 3) and np.allclose(proba.sum(1), 1.0)
    row = np.array([0.1, 0.7, 0.2])
    assert predict.format_line("x.png", row, ["a", "b", "c"]) == "x.png\tb\t0.70"
    assert (
        predict.format_line("x.png", row, ["a", "b", "c"], top=5)
        == "x.png\tb\t0.70\tb 0.70, c 0.20, a 0.10"
    )


def test_console_module_entry(project):
    root, names, _ = project
    done = subprocess.run(
        [sys.executable, "-m", "emoprune.cli", "predict", *names, "nope.png"],
        cwd=root,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and done.stderr == "error: nope.png: no such file\n"
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == names

"""``emoprune predict``: classify image files with a model the pipeline trained.

Each model family becomes a ``Predictor``: a callable mapping a list of RGB PIL images of any
size to (N, C) softmax probabilities, with the class names. Building one from a model object
(``cnn_predictor``, ``resnet_predictor``, ``mlp_predictor``) is pure and testable without files;
``load_predictor`` finds and loads the pipeline's checkpoints under ``outputs/models/``, or an
MLflow model the pipeline logged (``--uri``; ``load_uri_predictor``), which carries its own
preprocessing.

Preprocessing repeats the pipeline's exactly (the same Pillow BILINEAR squash as the resize stage,
the training fold's normalisation, the same descriptors and per-fold PCA), so a frame gets the
probabilities the evaluate stage would give it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from PIL import Image
from torch import nn

from emoprune.data.images import BadImage, inspect_image, load_rgb
from emoprune.errors import UserError

MODELS = ("cnn", "pruned", "resnet18", "resnet34", "resnet50", "mlp")
CNN_FAMILY = ("cnn", "pruned")
MODELS_DIR = Path("outputs/models")
FEATURE_PARAMS = Path("outputs/features/params.json")
RESIZE_META = Path("outputs/resize/meta.json")
RESNET_SIZE = 224  # params.yaml resize.resnet; ResNet's adaptive pooling accepts any size anyway
MLP_SIZE = 227  # descriptors are computed on the CNN-sized frames (resize.cnn)
BATCH = 32  # images decoded and scored at a time: bounds memory for long file lists
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"  # an MLflow server's artifact download API


@dataclass(frozen=True)
class Predictor:
    """A loaded model: ``predictor(images)`` -> (N, len(classes)) float probabilities."""

    name: str
    classes: tuple[str, ...]
    proba: Callable[[Sequence[Image.Image]], np.ndarray]
    # A downloaded model's folder (a TemporaryDirectory), removed when the Predictor goes: the
    # model's code is imported from there, so it must outlive loading.
    files: Any = None

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        proba = self.proba(images)
        if proba.shape != (len(images), len(self.classes)):
            # e.g. an --uri model trained on other classes than the local checkpoint names
            raise UserError(
                f"model {self.name} gives {proba.shape[1]} class scores per image, "
                f"but {len(self.classes)} classes are named"
            )
        return proba


# --------------------------------------------------------------------------- preprocessing


def resize_square(img: Image.Image, size: int) -> np.ndarray:
    """An RGB image of any size -> (size, size, 3) uint8, squashed as the resize stage does."""
    return np.asarray(
        img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8
    )


def stack_resized(images: Sequence[Image.Image], size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 stack of ``images``."""
    return np.stack([resize_square(img, size) for img in images])


def softmax_proba(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """(N, C) float64 softmax probabilities of ``model`` on inputs ``x`` (N, ...), on the CPU."""
    model.eval()
    with torch.inference_mode():
        logits = model(x)
    return torch.softmax(logits.double(), dim=1).numpy()


def _classes(meta: Mapping[str, Any], n_classes: int, where: str | Path) -> tuple[str, ...]:
    classes = meta.get("classes")
    if classes is None:  # an older checkpoint: name the classes by index rather than fail
        return tuple(str(i) for i in range(n_classes))
    if len(classes) != n_classes:
        raise UserError(
            f"{where}: meta lists {len(classes)} classes but the model has {n_classes} outputs"
        )
    return tuple(str(c) for c in classes)


# --------------------------------------------------------------------------- model -> Predictor


def cnn_predictor(
    model: nn.Module,
    mean: Sequence[float],
    std: Sequence[float],
    in_size: int,
    classes: Sequence[str],
    name: str = "cnn",
) -> Predictor:
    """A CNN taking normalised (N, 3, in_size, in_size) inputs."""
    from emoprune.models.inputs import to_tensor_images

    mean_a, std_a = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)

    def proba(images: Sequence[Image.Image]) -> np.ndarray:
        return softmax_proba(model, to_tensor_images(stack_resized(images, in_size), mean_a, std_a))

    return Predictor(name, tuple(classes), proba)


def resnet_predictor(
    model: nn.Module, classes: Sequence[str], size: int = RESNET_SIZE, name: str = "resnet"
) -> Predictor:
    """A fine-tuned ResNet: ImageNet-normalised (N, 3, size, size) inputs."""
    from emoprune.models.resnet import prepare_inputs

    def proba(images: Sequence[Image.Image]) -> np.ndarray:
        return softmax_proba(model, prepare_inputs(stack_resized(images, size)))

    return Predictor(name, tuple(classes), proba)


def mlp_predictor(
    model: nn.Module,
    pcas: Mapping[str, Any],
    classes: Sequence[str],
    *,
    lpq_kwargs: Mapping[str, Any],
    phog_kwargs: Mapping[str, Any],
    size: int = MLP_SIZE,
    name: str = "mlp",
) -> Predictor:
    """The PCA + MLP baseline: LPQ and PHOG of the ``size`` frame, each through its fold's PCA.

    ``pcas`` maps "lpq" and "phog" to ``DescriptorPCA``s; their scores are stacked in that order,
    as train_mlp did, into (N, n_inputs) float32.
    """
    from emoprune.features import compute_descriptors

    def proba(images: Sequence[Image.Image]) -> np.ndarray:
        lpq, phog = compute_descriptors(
            stack_resized(images, size), lpq_kwargs=lpq_kwargs, phog_kwargs=phog_kwargs
        )
        x = np.hstack([pcas["lpq"].transform(lpq), pcas["phog"].transform(phog)])
        return softmax_proba(model, torch.from_numpy(x.astype(np.float32)))

    return Predictor(name, tuple(classes), proba)


# --------------------------------------------------------------------------- files -> Predictor


def model_path(model: str, fold: int, root: str | Path = ".") -> Path:
    """Where the pipeline writes ``model``'s checkpoint of ``fold``; UserError if it is absent.

    A missing fold is told apart from a missing model: the message lists the folds there are.
    """
    if model not in MODELS:
        raise UserError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    if fold < 0:
        raise UserError(f"--fold must be >= 0, got {fold}")
    sub = Path("resnet") / model if model.startswith("resnet") else Path(model)
    folder = Path(root) / MODELS_DIR / sub
    path = folder / f"fold{fold}.pt"
    if path.is_file():
        return path
    folds = sorted(
        int(m.group(1))
        for p in folder.glob("fold*.pt")
        if (m := re.fullmatch(r"fold(\d+)\.pt", p.name))
    )
    if folds:
        raise UserError(
            f"--fold {fold}: no such fold for {model} ({folder} has folds "
            f"{', '.join(map(str, folds))})"
        )
    hint = " (is it in params.yaml finetune.archs?)" if model.startswith("resnet") else ""
    raise UserError(f"{path}: no such file; run `dvc repro` in the project root first{hint}")


def load_cnn_predictor(path: Path, name: str) -> Predictor:
    from emoprune.training.checkpoints import load_cnn_checkpoint

    try:
        model, meta, _ = load_cnn_checkpoint(path)
    except UserError as exc:
        # build_cnn's messages ("checkpoint meta lacks ...") do not say which file.
        if str(path) in str(exc):
            raise
        raise UserError(f"{path}: {exc}") from None
    mean, std = _norm_stats(meta, path)
    return cnn_predictor(
        model, mean, std, int(meta.get("in_size", 227)), _classes(meta, model.n_classes, path), name
    )


def _norm_stats(meta: Mapping[str, Any], path: Path) -> tuple[list[float], list[float]]:
    mean, std = meta.get("mean"), meta.get("std")
    if mean is None or std is None or len(mean) != 3 or len(std) != 3:
        raise UserError(f"{path}: checkpoint lacks the training fold's mean/std (3 floats each)")
    return [float(v) for v in mean], [float(v) for v in std]


def resnet_size(root: str | Path = ".") -> int:
    """The side the ResNets were trained at: the resize stage's record, else the default 224."""
    try:
        meta = json.loads((Path(root) / RESIZE_META).read_text())
        return int(meta["sizes"]["resnet"])
    except (OSError, ValueError, KeyError, TypeError):
        return RESNET_SIZE


def load_resnet_predictor(path: Path, arch: str, size: int = RESNET_SIZE) -> Predictor:
    from emoprune.models.resnet import build_resnet
    from emoprune.training.checkpoints import load_checkpoint

    state, meta = load_checkpoint(path)
    arch = str(meta.get("arch", arch))
    try:
        n_classes = int(meta["n_classes"])
        model, _ = build_resnet(arch, n_classes, weights="none")
        model.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UserError(
            f"cannot load checkpoint {path}: not a {arch} checkpoint ({reason})"
        ) from None
    return resnet_predictor(model, _classes(meta, n_classes, path), size, arch)


def read_feature_params(path: str | Path = FEATURE_PARAMS) -> tuple[dict, dict, int]:
    """(lpq kwargs, phog kwargs, image size) the features stage used, from its params.json."""
    try:
        params = json.loads(Path(path).read_text())
        return dict(params["lpq"]), dict(params["phog"]), int(params.get("image_size", MLP_SIZE))
    except FileNotFoundError:
        raise UserError(
            f"{path}: no such file; run `dvc repro` in the project root first"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: unreadable feature params ({exc})") from None


def load_mlp_predictor(path: Path, feature_params: str | Path = FEATURE_PARAMS) -> Predictor:
    from emoprune.features.pca import DescriptorPCA
    from emoprune.models.mlp import mlp
    from emoprune.training.checkpoints import load_checkpoint

    state, meta = load_checkpoint(path)
    try:
        n_classes = int(meta["n_classes"])
        model = mlp(int(meta["n_inputs"]), [int(h) for h in meta["hidden"]], n_classes)
        model.load_state_dict(state)
        pcas = {name: DescriptorPCA.from_meta(meta["pca"][name]) for name in ("lpq", "phog")}
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UserError(
            f"cannot load checkpoint {path}: not an MLP checkpoint ({reason})"
        ) from None
    n_pca = sum(p.components.shape[0] for p in pcas.values())
    if n_pca != int(meta["n_inputs"]):
        raise UserError(f"{path}: PCA gives {n_pca} inputs but the MLP takes {meta['n_inputs']}")
    lpq_kw, phog_kw, size = read_feature_params(feature_params)
    return mlp_predictor(
        model,
        pcas,
        _classes(meta, n_classes, path),
        lpq_kwargs=lpq_kw,
        phog_kwargs=phog_kw,
        size=size,
    )


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def load_uri_predictor(uri: str) -> Predictor:
    """The Predictor of an MLflow model the pipeline logged (``pipeline.packaged``), of any kind.

    Such a model carries its own preprocessing: it takes uint8 (N, H, W, 3) RGB frames, so the
    images are only squashed to the side its metadata names (``input_size``, the resize stage's
    BILINEAR squash, which the model then keeps as it is) and stacked. The class names come from
    its metadata too; nothing is read from the local pipeline outputs. ``runs:/`` and
    ``models:/`` URIs use the project's tracking store (``$MLFLOW_TRACKING_URI`` or
    ``mlflow.db``); ``models:/NAME@latest`` is MLflow's own name for the newest version. A URI
    that does not load, or a model without emoprune metadata (e.g. one logged before models
    carried their preprocessing), is a one-line ``UserError`` naming the URI.
    """
    from emoprune.pipeline import tracking

    source = uri.strip()
    parsed = urllib.parse.urlparse(source)
    if source.startswith(("runs:/", "models:/")):
        tracking.configure()
    elif parsed.scheme in ("http", "https"):
        if ARTIFACTS_API not in parsed.path:
            # MLflow reads an http(s) URI only as a path in a server's artifact API; any other
            # fails inside MLflow with an unhelpful ValueError.
            raise UserError(
                f"--uri {uri}: an http(s) URI must lie under a server's {ARTIFACTS_API}/; for "
                "a logged model use runs:/RUN_ID/NAME or models:/NAME@ALIAS with "
                "MLFLOW_TRACKING_URI set to the server"
            )
        try:
            tracking.check_reachable(source[: source.index(ARTIFACTS_API)], advice="start it")
        except UserError as exc:
            raise UserError(f"--uri {uri}: {exc}") from None
    # One image's prediction should print one line, not mlflow's download progress bars.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow.artifacts
    import mlflow.models
    import mlflow.pyfunc

    from emoprune.pipeline.packaged import emoprune_metadata

    files = None
    try:
        if parsed.scheme == "file":
            # The path a file: URI names (percent-escapes decoded), for both MLflow calls below.
            local = urllib.request.url2pathname(parsed.path)
        elif len(parsed.scheme) <= 1:  # a path (a one-letter scheme is a Windows drive)
            local = source
        else:
            # Left to MLflow, each of get_model_info and load_model would download the model
            # into a temporary folder of its own and never remove it.
            files = tempfile.TemporaryDirectory(prefix="emoprune-predict-")
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=files.name)
        info = mlflow.models.get_model_info(local)  # reads the MLmodel file alone
    except Exception as exc:  # noqa: BLE001 - MlflowException, OSError, YAML errors...
        raise UserError(f"--uri {uri}: cannot load the model ({_first_line(exc)})") from None
    meta = emoprune_metadata(info.metadata)
    if meta is None:
        raise UserError(
            f"--uri {uri}: not a model the pipeline logged with its preprocessing (no emoprune "
            f"metadata in its MLmodel); log it again with `dvc repro`"
        )
    try:
        model = mlflow.pyfunc.load_model(local)
    except Exception as exc:  # noqa: BLE001 - a missing artifact, unloadable code, ...
        raise UserError(f"--uri {uri}: cannot load the model ({_first_line(exc)})") from None
    size = int(meta["input_size"])

    def proba(images: Sequence[Image.Image]) -> np.ndarray:
        return np.asarray(model.predict(stack_resized(images, size)), dtype=np.float64)

    return Predictor(str(meta["kind"]), tuple(str(c) for c in meta["classes"]), proba, files)


def load_predictor(
    model: str | None = None,
    fold: int | None = None,
    uri: str | None = None,
    root: str | Path = ".",
) -> Predictor:
    """The Predictor for ``--model``/``--fold`` (from the pipeline outputs under ``root``) or
    for ``--uri`` (an MLflow model, which names its own kind, fold and classes).

    ``model`` None means cnn, ``fold`` None means 0; with ``uri`` neither may be given. Every
    failure a user can cause (missing file, corrupt checkpoint, unknown model or fold, an
    unloadable URI) is a one-line ``UserError`` naming the file or option.
    """
    if uri is not None:
        if model is not None or fold is not None:
            given = " and ".join(
                o for o, v in (("--model", model), ("--fold", fold)) if v is not None
            )
            raise UserError(f"--uri names the model, its fold and classes itself; drop {given}")
        return load_uri_predictor(uri)
    model = "cnn" if model is None else model
    fold = 0 if fold is None else fold
    if model not in MODELS:
        raise UserError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    path = model_path(model, fold, root)
    if model in CNN_FAMILY:
        return load_cnn_predictor(path, model)
    if model == "mlp":
        return load_mlp_predictor(path, Path(root) / FEATURE_PARAMS)
    return load_resnet_predictor(path, model, resnet_size(root))


# --------------------------------------------------------------------------- images -> lines


def read_image(path: str | Path) -> Image.Image:
    """``path`` as an RGB PIL image; BadImage with ingest's one-line reason if unusable."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise BadImage("no such file") from None
    except IsADirectoryError:
        raise BadImage("is a directory") from None
    except OSError as exc:
        raise BadImage(f"unreadable ({exc.strerror or exc})") from None
    inspect_image(data)  # fully decodes: truncated, bomb-sized or non-image files fail here
    return load_rgb(path)


def top_k(proba: np.ndarray, classes: Sequence[str], k: int = 1) -> list[tuple[str, float]]:
    """The ``k`` most probable (class, probability) pairs of one (C,) row, most probable first."""
    order = np.argsort(-np.asarray(proba), kind="stable")[: max(1, k)]
    return [(classes[i], float(proba[i])) for i in order]


def format_line(path: str, proba: np.ndarray, classes: Sequence[str], top: int = 1) -> str:
    """``path<TAB>class<TAB>prob``; with ``top`` > 1 a 4th field ``A 0.83, B 0.10, C 0.04``."""
    ranked = top_k(proba, classes, top)
    fields = [path, ranked[0][0], f"{ranked[0][1]:.2f}"]
    if top > 1:
        fields.append(", ".join(f"{c} {p:.2f}" for c, p in ranked))
    return "\t".join(fields)


def predict_files(
    predictor: Predictor,
    paths: Sequence[str],
    out: TextIO,
    err: TextIO,
    top: int = 1,
    batch: int = BATCH,
) -> int:
    """Print one line per image to ``out`` and ``error: <path>: <reason>`` per bad one to ``err``.

    Lines come in the order of ``paths``; images are scored ``batch`` at a time. Returns the
    number of images that failed.
    """
    failed = 0
    for start in range(0, len(paths), batch):
        good: list[tuple[str, Image.Image]] = []
        for path in paths[start : start + batch]:
            try:
                good.append((path, read_image(path)))
            except BadImage as exc:
                failed += 1
                print(f"error: {path}: {exc}", file=err, flush=True)
        if good:
            proba = predictor([img for _, img in good])
            for (path, _), row in zip(good, proba):
                print(format_line(path, row, predictor.classes, top), file=out)
            out.flush()
    return failed

"""A fold's model as a self-contained MLflow pyfunc: the network WITH the pipeline's preprocessing.

``mlflow.pyfunc.load_model(uri).predict(images)`` takes uint8 RGB frames (N, H, W, 3) of any H
and W and returns (N, C) float64 class probabilities (rows sum to 1), what the pipeline computes
for those frames. Each frame is squashed to the model's square input side with Pillow's BILINEAR
filter, as the resize stage does, then, by the model's kind:

- ``cnn``, ``pruned``, ``random``, ``magnitude``: normalised with the training fold's mean/std,
  through the CNN (the pruned CNN and its controls shrunk to their live units);
- ``resnet18``, ``resnet34``, ``resnet50``: ImageNet-normalised, through the fine-tuned ResNet;
- ``mlp``: LPQ and PHOG with the features stage's params, each through the fold's scaler + PCA,
  through the MLP.

A model holds its network as a weights-only checkpoint (``artifacts/``, the format of
``training.checkpoints``), its kind, input side and descriptor params (``artifacts/config.json``),
a copy of the emoprune package (``code/``, so it loads where emoprune is not installed) and
requirements pinned to the versions installed when it was logged. The pyfunc is "models from
code" (``packaged_entry.py`` names it), not a pickle. The model's ``metadata`` names the kind,
the fold, the classes and the input side (``input_size``): what ``emoprune predict --uri`` reads.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch
from PIL import Image
from torch import nn

import emoprune
from emoprune.choices import ARCHS, BASELINES

CNN_KINDS = ("cnn", "pruned", *BASELINES)  # the paper's CNN and its pruned variants
KINDS = (*CNN_KINDS, *ARCHS, "mlp")
FEATURE_PARAMS = Path("outputs/features/params.json")  # the features stage's LPQ/PHOG params
# Distributions the model's code imports to load and predict (mlflow + cloudpickle unpickle it).
REQUIREMENTS = (
    "mlflow",
    "cloudpickle",
    "numpy",
    "pillow",
    "scikit-learn",
    "scipy",
    "torch",
    "torchvision",
    "tqdm",
)
METADATA_KEYS = ("kind", "fold", "classes", "input_size")  # what marks an emoprune model
BATCH = 64  # frames preprocessed and scored at a time: bounds memory for long inputs
ENTRY = Path(__file__).with_name("packaged_entry.py")


# --------------------------------------------------------------------------- at predict time


def check_frames(frames: Any) -> np.ndarray:
    """``frames`` as a uint8 (N, H, W, 3) array; ValueError for anything else."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB frames (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return arr


def squash(frames: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, size, size, 3) uint8, each frame resized as the resize stage
    resizes a file (Pillow BILINEAR, the aspect ratio not kept). Frames already of that size are
    returned as they are: Pillow's resize to the same size is a plain copy."""
    frames = check_frames(frames)
    if frames.shape[1:3] == (size, size):
        return frames
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BILINEAR))
    return out


@dataclass
class Classifier:
    """A fold's network with its input pipeline: ``classifier(frames)`` maps uint8 (N, H, W, 3)
    RGB frames to (N, n_classes) float64 softmax probabilities.

    ``prepare`` maps the squashed (n, size, size, 3) uint8 frames to the network's inputs.
    """

    kind: str
    network: nn.Module
    size: int
    n_classes: int
    prepare: Callable[[np.ndarray], torch.Tensor]

    def __call__(self, frames: Any) -> np.ndarray:
        frames = check_frames(frames)
        out = np.empty((len(frames), self.n_classes), dtype=np.float64)
        self.network.eval()
        with torch.inference_mode():
            for start in range(0, len(frames), BATCH):
                x = self.prepare(squash(frames[start : start + BATCH], self.size))
                # Softmax in float64, as predict and evaluate compute it.
                out[start : start + BATCH] = torch.softmax(self.network(x).double(), 1).numpy()
        return out


def load_classifier(config: Mapping[str, Any], checkpoint: str | Path) -> Classifier:
    """The ``Classifier`` of a packaged model: ``config`` holds its kind, input side and
    descriptor params, ``checkpoint`` its network (``package`` wrote both)."""
    from emoprune.training.checkpoints import load_checkpoint, load_cnn_checkpoint

    # Imports per kind: loading a CNN never imports torchvision, scipy or scikit-learn.
    kind, size = str(config["kind"]), int(config["input_size"])
    if kind in CNN_KINDS:
        from emoprune.models.inputs import to_tensor_images

        model, meta, _ = load_cnn_checkpoint(checkpoint)
        mean, std = np.asarray(meta["mean"], np.float64), np.asarray(meta["std"], np.float64)
        return Classifier(
            kind, model, size, model.n_classes, lambda x: to_tensor_images(x, mean, std)
        )
    state, meta = load_checkpoint(checkpoint)
    n_classes = int(meta["n_classes"])
    if kind in ARCHS:
        from emoprune.models.resnet import build_resnet, prepare_inputs

        model, _ = build_resnet(kind, n_classes, weights="none")
        model.load_state_dict(state)
        return Classifier(kind, model, size, n_classes, prepare_inputs)
    if kind == "mlp":
        from emoprune.features import compute_descriptors
        from emoprune.features.pca import DescriptorPCA
        from emoprune.models.mlp import mlp

        model = mlp(int(meta["n_inputs"]), [int(h) for h in meta["hidden"]], n_classes)
        model.load_state_dict(state)
        pcas = {n: DescriptorPCA.from_meta(meta["pca"][n]) for n in ("lpq", "phog")}
        lpq_kw, phog_kw = dict(config["lpq"]), dict(config["phog"])

        def prepare(x: np.ndarray) -> torch.Tensor:
            lpq, phog = compute_descriptors(x, lpq_kwargs=lpq_kw, phog_kwargs=phog_kw)
            scores = np.hstack([pcas["lpq"].transform(lpq), pcas["phog"].transform(phog)])
            return torch.from_numpy(scores.astype(np.float32))  # as train_mlp stacked them

        return Classifier(kind, model, size, n_classes, prepare)
    raise ValueError(f"unknown model kind {kind!r}; one of {', '.join(KINDS)}")


class FoldModel(mlflow.pyfunc.PythonModel):
    """The pyfunc: ``predict(context, images)`` with uint8 (N, H, W, 3) RGB frames of any size
    returns (N, C) float64 class probabilities. ``load_context`` builds the ``Classifier`` from
    the ``config`` and ``checkpoint`` artifacts that ``package`` wrote."""

    def load_context(self, context):
        config = json.loads(Path(context.artifacts["config"]).read_text())
        self.classifier = load_classifier(config, context.artifacts["checkpoint"])

    # An ndarray hint: one MLflow neither converts inputs by nor warns about (it would for none).
    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> np.ndarray:
        return self.classifier(model_input)


# --------------------------------------------------------------------------- at logging time


def pip_requirements() -> list[str]:
    """``REQUIREMENTS`` pinned to the installed versions; a local tag (``2.5.1+cpu``) is dropped,
    so the pin does not tie the model to one wheel index."""
    return [f"{d}=={importlib.metadata.version(d).split('+')[0]}" for d in REQUIREMENTS]


def example_frames() -> np.ndarray:
    """The signature's input example: two synthetic uint8 frames (2, 16, 20, 3).

    Small, because it is stored as JSON in every model, and any size will do since the model
    squashes its inputs; synthetic, so no frame of the (licensed) data lands in the artifacts.
    """
    y, x = np.mgrid[0:16, 0:20]
    ramp = np.stack([x * 12, y * 15, (x + y) * 7], axis=-1).clip(0, 255).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    return np.stack([ramp, noise])


def signature(n_classes: int) -> Any:
    """uint8 (-1, -1, -1, 3) RGB frames in, float64 (-1, n_classes) probabilities out."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float64), (-1, n_classes))]),
    )


def kind_of(name: str, meta: Mapping[str, Any]) -> str:
    """The kind of the model a stage logs as ``name`` (``<prefix>_fold{k}``) from checkpoint
    ``meta``: a ResNet names its arch, an MLP has its PCA, a pruned CNN its mask (``shrunk_``
    for distinctiveness pruning, ``random_``/``magnitude_`` for the controls), else a CNN."""
    if "arch" in meta:
        return str(meta["arch"])
    if "pca" in meta:
        return "mlp"
    prefix = name.split("_fold")[0]
    if prefix in BASELINES:
        return prefix
    return "pruned" if "pruned" in meta or prefix == "shrunk" else "cnn"


def _shrunk_checkpoint(checkpoint: Path, scratch: Path) -> tuple[Path, list[int]]:
    """The CNN of a pruned fold's checkpoint (masked, with its mask in meta) shrunk to its live
    units, saved under ``scratch``: the network today's ``shrunk_fold{k}`` models run."""
    from emoprune.pruning.mask import PruneMask
    from emoprune.pruning.shrink import shrink
    from emoprune.training.checkpoints import load_cnn_checkpoint, save_cnn

    model, meta, _ = load_cnn_checkpoint(checkpoint)
    mask = None
    if meta.get("pruned"):  # else: the units whose weights are all zero (shrink's fallback)
        mask = PruneMask.from_state(model, meta["pruned"])
        mask.apply()
    small = shrink(model, mask)
    # The mask's indices refer to the full widths; the shrunk network has none removed.
    rest = {k: v for k, v in meta.items() if k != "pruned"}
    path = scratch / f"{checkpoint.stem}_shrunk.pt"
    save_cnn(path, small, **rest)
    return path, list(small.hidden)


def package(
    checkpoint: str | Path,
    scratch: str | Path,
    *,
    kind: str | None = None,
    name: str = "",
    fold: int | None = None,
    input_size: int | None = None,
    feature_params: str | Path = FEATURE_PARAMS,
) -> dict[str, Any]:
    """The keyword arguments of ``mlflow.pyfunc.log_model`` / ``save_model`` for the model in
    ``checkpoint`` (a ``fold<k>.pt`` the training stages write), with its preprocessing.

    ``kind`` None: from the checkpoint and the ``name`` it is logged as (``kind_of``). ``fold``
    None: the checkpoint's. ``input_size``: a ResNet's input side (its checkpoint does not say;
    the CNN's is in its meta, the MLP's in the features params). ``feature_params``: the features
    stage's params.json, read for an MLP. The config (and a pruned kind's shrunk network) are
    written to ``scratch``, which must outlive the logging call and which nothing else uses.
    """
    from emoprune.training.checkpoints import load_checkpoint

    checkpoint = Path(checkpoint)
    _, meta = load_checkpoint(checkpoint)
    kind = kind or kind_of(name, meta)
    n_classes = int(meta["n_classes"])
    classes = [str(c) for c in meta.get("classes") or range(n_classes)]
    artifact, config, extra = checkpoint, {"kind": kind}, {}
    if kind in CNN_KINDS:
        if meta.get("mean") is None or meta.get("std") is None:
            raise ValueError(f"{checkpoint}: no training-fold mean/std to normalise inputs with")
        config["input_size"] = int(meta.get("in_size", 227))
        if kind != "cnn":
            artifact, extra["hidden"] = _shrunk_checkpoint(checkpoint, Path(scratch))
        else:
            extra["hidden"] = [int(h) for h in meta["hidden"]]
    elif kind in ARCHS:
        if input_size is None:
            raise ValueError(f"{checkpoint}: a {kind} needs its input side (input_size)")
        config["input_size"] = int(input_size)
        extra["weights"] = str(meta.get("weights", "unknown"))
    elif kind == "mlp":
        params = json.loads(Path(feature_params).read_text())
        config |= {"input_size": int(params.get("image_size", 227))}
        config |= {"lpq": dict(params["lpq"]), "phog": dict(params["phog"])}
    else:
        raise ValueError(f"unknown model kind {kind!r}; one of {', '.join(KINDS)}")
    metadata = {
        "kind": kind,
        "fold": int(meta.get("fold", -1) if fold is None else fold),
        "classes": classes,
        "input_size": config["input_size"],
        "input": "uint8 RGB frames (N, H, W, 3) of any H, W; squashed to input_size (BILINEAR)",
        "output": f"float64 class probabilities (N, {n_classes}), in the order of classes",
        "emoprune_version": emoprune.__version__,
        **extra,
    }
    # A file, not `model_config`: MLflow would log that as params of the stage's run.
    config_file = Path(scratch) / "config.json"
    config_file.write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    return {
        # Models from code: MLflow runs this file to get the pyfunc (no cloudpickle).
        "python_model": str(ENTRY),
        "artifacts": {"checkpoint": str(artifact), "config": str(config_file)},
        "code_paths": [str(Path(emoprune.__file__).parent)],
        # Pinned, never inferred: inferring imports every module and takes minutes.
        "pip_requirements": pip_requirements(),
        "signature": signature(n_classes),
        "input_example": example_frames(),
        "metadata": metadata,
    }


def input_side(fit: Any) -> int | None:
    """The side of the square images ``fit`` (a ``FoldFit``) was trained on, None for inputs
    that are not images (the MLP's PCA scores)."""
    x = fit.example if fit.example is not None else fit.val[0]
    return int(x.shape[-1]) if x.ndim == 4 else None


def fold_packager(name: str, out: str | Path, feature_params: str | Path = FEATURE_PARAMS):
    """``tracking.fold_model_logger``'s ``package`` for a stage that logs its folds as ``name``
    (``model_fold{k}``, ``shrunk_fold{k}``, ...) and writes their checkpoints as
    ``out/fold<k>.pt``: ``(k, fit, scratch)`` -> ``package`` of fold k's checkpoint."""

    def package_fold(k: int, fit: Any, scratch: Path) -> dict[str, Any]:
        return package(
            Path(out) / f"fold{k}.pt",
            scratch,
            name=name.format(k=k),
            fold=k,
            input_size=input_side(fit),
            feature_params=feature_params,
        )

    return package_fold


def emoprune_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A model's MLmodel ``metadata`` if ``package`` made it (it has ``METADATA_KEYS``)."""
    if not metadata or any(k not in metadata for k in METADATA_KEYS):
        return None
    return dict(metadata)

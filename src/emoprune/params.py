"""params.yaml -> typed, validated, frozen objects.

Every section is a dataclass whose defaults are the paper's values. Loading rejects unknown keys,
wrong types and out-of-range values with a one-line ``UserError`` that names the key, e.g.
``params.yaml: prune.threshold must be in (0, 90), got 90``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emoprune.errors import UserError

EMOTIONS = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")


class _Check:
    """Range checks that name the key: ``_Check("prune")`` then ``c.between("threshold", ...)``."""

    def __init__(self, section: str, obj: Any):
        self.section, self.obj = section, obj

    def fail(self, key: str, rule: str) -> None:
        name = f"{self.section}.{key}" if self.section else key
        value = getattr(self.obj, key)
        shown = list(value) if isinstance(value, tuple) else value  # as written in YAML: [fc9]
        raise UserError(f"params.yaml: {name} must {rule}, got {shown!r}")

    def positive(self, *keys: str) -> None:
        for k in keys:
            if not getattr(self.obj, k) > 0:
                self.fail(k, "be > 0")

    def at_least(self, key: str, low: float) -> None:
        if not getattr(self.obj, key) >= low:
            self.fail(key, f"be >= {low}")

    def open_interval(self, key: str, low: float, high: float) -> None:
        if not low < getattr(self.obj, key) < high:
            self.fail(key, f"be in ({low:g}, {high:g})")

    def one_of(self, key: str, allowed: typing.Iterable[str]) -> None:
        allowed = tuple(allowed)
        value = getattr(self.obj, key)
        values = value if isinstance(value, tuple) else (value,)
        if any(v not in allowed for v in values):
            self.fail(key, f"be {'drawn from' if isinstance(value, tuple) else 'one of'} "
                      f"{', '.join(allowed)}")


@dataclass(frozen=True)
class MlflowParams:
    experiment: str = "emoprune"

    def check(self, c: _Check) -> None:
        if not self.experiment.strip():
            c.fail("experiment", "be a non-empty name")


@dataclass(frozen=True)
class DataParams:
    raw: str = "data/raw"
    classes: tuple[str, ...] = EMOTIONS

    def check(self, c: _Check) -> None:
        if len(self.classes) < 2 or len({k.lower() for k in self.classes}) != len(self.classes):
            c.fail("classes", "list at least two distinct class names")


@dataclass(frozen=True)
class CVParams:
    folds: int = 5
    seed: int = 42
    group_by: str = "none"

    def check(self, c: _Check) -> None:
        c.at_least("folds", 2)
        c.one_of("group_by", ("none", "clip"))


@dataclass(frozen=True)
class ResizeParams:
    cnn: int = 227
    resnet: int = 224

    def check(self, c: _Check) -> None:
        # 67 is the smallest input the CNN's conv stack accepts.
        c.at_least("cnn", 67)
        c.at_least("resnet", 32)


@dataclass(frozen=True)
class FeaturesParams:
    """LPQ (Ojansivu & Heikkila 2008) and PHOG (Bosch et al. 2007) settings."""

    lpq_win_size: int = 3
    lpq_decorrelate: bool = True
    lpq_rho: float = 0.90
    phog_bins: int = 8
    phog_angle: int = 360
    phog_levels: int = 3

    def check(self, c: _Check) -> None:
        if self.lpq_win_size < 3 or self.lpq_win_size % 2 == 0:
            c.fail("lpq_win_size", "be odd and >= 3")
        c.open_interval("lpq_rho", 0, 1)
        c.at_least("phog_bins", 1)
        if self.phog_angle not in (180, 360):
            c.fail("phog_angle", "be 180 or 360")
        c.at_least("phog_levels", 0)


@dataclass(frozen=True)
class MlpParams:
    """The paper's PCA baseline: top components of each descriptor -> a small sigmoid MLP."""

    pca_components: int = 5
    hidden: tuple[int, ...] = (32,)
    lr: float = 0.01
    epochs: int = 450
    batch_size: int = 32

    def check(self, c: _Check) -> None:
        c.at_least("pca_components", 1)
        if any(h < 1 for h in self.hidden):
            c.fail("hidden", "list positive widths")
        c.positive("lr", "epochs", "batch_size")


@dataclass(frozen=True)
class CnnParams:
    activation: str = "sigmoid"
    init: str = "glorot"  # glorot (scaled for the activation) | pytorch (torch's default)
    lr: float = 0.0006
    batch_size: int = 32
    epochs: int = 50
    augment: bool = False
    checkpoint_every: int = 10  # prune_cnn resumes from one of these (prune.start_epoch)
    trace_mode: str = "output_weights"  # how train_cnn measures its angle traces

    def check(self, c: _Check) -> None:
        c.one_of("activation", ("sigmoid", "relu", "tanh"))
        c.one_of("init", ("glorot", "pytorch"))
        c.positive("lr", "batch_size", "epochs", "checkpoint_every")
        c.one_of("trace_mode", PRUNE_MODES)


PRUNE_THRESHOLD_RANGE = (0, 90)  # degrees, open: 0 prunes nothing, 90 would prune everything
PRUNE_MODES = ("output_weights", "input_weights", "full_weights", "activations")
HIDDEN = ("fc1", "fc2", "fc3")


@dataclass(frozen=True)
class PruneParams:
    threshold: float = 25.0
    layers: tuple[str, ...] = ("fc2",)
    mode: str = "output_weights"
    complementary: str = "remove_both"
    start_epoch: int = 10
    every: int = 1

    def check(self, c: _Check) -> None:
        c.open_interval("threshold", *PRUNE_THRESHOLD_RANGE)
        if not self.layers:
            c.fail("layers", "list at least one of fc1, fc2, fc3")
        c.one_of("layers", HIDDEN)
        c.one_of("mode", PRUNE_MODES)
        c.one_of("complementary", ("remove_both", "fold"))
        c.at_least("start_epoch", 1)
        c.at_least("every", 1)


@dataclass(frozen=True)
class FinetuneParams:
    """torchvision's transfer-learning recipe: SGD + momentum, step LR, 25 epochs."""

    archs: tuple[str, ...] = ("resnet18",)
    weights: str = "auto"  # imagenet (cached file required) | none (random init) | auto
    freeze_backbone: bool = False
    folds: int | str = 1  # how many of the manifest's folds (from fold 0), or "all"
    epochs: int = 25
    batch_size: int = 16
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    step_size: int = 7
    gamma: float = 0.1

    def check(self, c: _Check) -> None:
        if not self.archs:
            c.fail("archs", "list at least one of resnet18, resnet34, resnet50")
        c.one_of("archs", ("resnet18", "resnet34", "resnet50"))
        c.one_of("weights", ("auto", "imagenet", "none"))
        if isinstance(self.folds, str) and self.folds != "all" or \
                isinstance(self.folds, int) and self.folds < 1:
            c.fail("folds", "be 'all' or a count >= 1")
        c.positive("epochs", "batch_size", "lr", "step_size", "gamma")
        if not 0 <= self.momentum < 1:
            c.fail("momentum", "be in [0, 1)")
        if self.weight_decay < 0:
            c.fail("weight_decay", "be >= 0")


@dataclass(frozen=True)
class EvaluateParams:
    latency_repeats: int = 10  # forward passes timed per model for inference ms/image

    def check(self, c: _Check) -> None:
        c.at_least("latency_repeats", 1)


@dataclass(frozen=True)
class Params:
    """The whole params.yaml."""

    seed: int = 42
    device: str = "auto"
    mlflow: MlflowParams = field(default_factory=MlflowParams)
    data: DataParams = field(default_factory=DataParams)
    cv: CVParams = field(default_factory=CVParams)
    resize: ResizeParams = field(default_factory=ResizeParams)
    features: FeaturesParams = field(default_factory=FeaturesParams)
    mlp: MlpParams = field(default_factory=MlpParams)
    cnn: CnnParams = field(default_factory=CnnParams)
    prune: PruneParams = field(default_factory=PruneParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)

    def check(self, c: _Check) -> None:
        c.at_least("seed", 0)
        c.one_of("device", ("auto", "cpu", "cuda"))
        # Pruning resumes from a train_cnn checkpoint and trains to the same total budget.
        if self.prune.start_epoch >= self.cnn.epochs:
            raise UserError(f"params.yaml: prune.start_epoch must be < cnn.epochs "
                            f"({self.cnn.epochs}), got {self.prune.start_epoch}")
        if isinstance(self.finetune.folds, int) and self.finetune.folds > self.cv.folds:
            raise UserError(f"params.yaml: finetune.folds must be 'all' or <= cv.folds "
                            f"({self.cv.folds}), got {self.finetune.folds}")
        if self.prune.start_epoch % self.cnn.checkpoint_every:
            raise UserError(f"params.yaml: prune.start_epoch must be a multiple of "
                            f"cnn.checkpoint_every ({self.cnn.checkpoint_every}), "
                            f"got {self.prune.start_epoch}")

    def section(self, name: str) -> dict[str, Any]:
        """One section as a plain dict (for logging as MLflow params)."""
        value = getattr(self, name)
        if dataclasses.is_dataclass(value):
            return dataclasses.asdict(value)
        return {name: value}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(item, "values")
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp)
    )


# YAML 1.1 (PyYAML) reads ``1e-4`` as a string: only ``1.0e-4`` is a float there. Users (and
# ``dvc exp run -S cnn.lr=1e-4``) write the short form, so it is taken as the number it means.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; int is accepted where float is expected."""
    if tp is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        value = float(value)
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise UserError(f"params.yaml: {key} must be {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_coerce(v, item, key) for v in value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except UserError:
                continue
        raise UserError(f"params.yaml: {key} must be {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise UserError(f"params.yaml: {key} must be {_type_name(tp)}, got {value!r}")
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[tp]
    if not ok or (tp is float and not math.isfinite(value)):
        raise UserError(f"params.yaml: {key} must be {_type_name(tp)}, got {value!r}")
    return float(value) if tp is float else value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise UserError(f"params.yaml: {prefix or 'the file'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise UserError(f"params.yaml: unknown key {where}")
    kwargs = {}
    for name in names & raw.keys():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], key)
        else:
            kwargs[name] = _coerce(raw[name], tp, key)
    obj = cls(**kwargs)
    obj.check(_Check(prefix, obj))
    return obj


def parse_params(raw: Any) -> Params:
    """Validate a params mapping (as read from YAML) into ``Params``."""
    return _build(Params, raw if raw is not None else {}, "")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml. Raises UserError with a one-line message."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found (run from the project root)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: invalid YAML{where}") from None
    return parse_params(raw)

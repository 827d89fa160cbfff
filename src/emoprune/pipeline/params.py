"""params.yaml -> typed, validated, frozen pydantic models; the paper's values are the defaults.

Loading rejects unknown keys, wrong types and out-of-range values with a one-line ``UserError``
that names the key and the value, e.g. ``params.yaml: prune.threshold must be in (0, 90), got
90.0`` or ``params.yaml: unknown key prunning (did you mean prune?)``. Only the first problem is
reported: one line a user can act on. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from emoprune.choices import (
    ARCHS,
    EMOTIONS,
    HIDDEN_LAYERS,
    PRUNE_THRESHOLD_RANGE,
    Activation,
    Arch,
    Baseline,
    Complementary,
    Device,
    GroupBy,
    HiddenLayer,
    Init,
    Precision,
    PruneMode,
    Weights,
)
from emoprune.errors import UserError

# YAML 1.1 (PyYAML) reads ``1e-4`` as a string: only ``1.0e-4`` is a float there. Users (and
# ``dvc exp run -S cnn.lr=1e-4``) write the short form, so it is taken as the number it means.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _exponent_string(value: Any) -> Any:
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


# Strict scalars: YAML's ``true`` is not the integer 1, and ``"5"`` is not 5.
Int = Annotated[int, Strict()]
Float = Annotated[float, BeforeValidator(_exponent_string), Strict(), Field(allow_inf_nan=False)]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]


def _rule(text: str) -> dict:
    """The rule a value breaks, said in the message instead of pydantic's constraint."""
    return {"must": text}


def _empty_rule(text: str) -> dict:
    """The rule an empty list breaks (other errors keep their own words)."""
    return {"too_short": text}


def _odd(value: int) -> int:
    if value % 2 == 0:
        raise ValueError("be odd and >= 3")
    return value


def _open_interval(low: float, high: float):
    def check(value: float) -> float:
        if not low < value < high:
            raise ValueError(f"be in ({low:g}, {high:g})")
        return value

    return AfterValidator(check)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MlflowParams(Section):
    experiment: Str = Field(
        "emoprune", min_length=1, pattern=r"\S", json_schema_extra=_rule("be a non-empty name")
    )


class DataParams(Section):
    raw: Str = "data/raw"
    classes: tuple[Str, ...] = EMOTIONS

    @model_validator(mode="after")
    def _distinct(self) -> DataParams:
        if len(self.classes) < 2 or len({k.lower() for k in self.classes}) != len(self.classes):
            raise _cross(
                "data.classes", "list at least two distinct class names", list(self.classes)
            )
        return self


class CVParams(Section):
    folds: Int = Field(5, ge=2)
    # Repeated stratified K-fold: repeat r reshuffles the folds with seed ``seed + r``, so
    # repeat 0 is the plain K-fold; R * folds splits in all (split id r * folds + fold).
    repeats: Int = Field(1, ge=1)
    seed: Int = 42
    group_by: GroupBy = "none"

    @property
    def n_splits(self) -> int:
        """How many train/validation splits the training stages run: repeats * folds."""
        return self.repeats * self.folds


class ResizeParams(Section):
    cnn: Int = Field(227, ge=67)  # the smallest input the CNN's conv stack accepts
    # At 32 px ResNet's last block sees 1x1 maps, where BatchNorm cannot train on a batch of one
    # frame (finetune.batch_size 1, or a last batch of one); from 33 px they are 2x2.
    resnet: Int = Field(224, ge=33)


class FeaturesParams(Section):
    """LPQ (Ojansivu & Heikkila 2008) and PHOG (Bosch et al. 2007) settings."""

    lpq_win_size: Annotated[Int, AfterValidator(_odd)] = Field(
        3, ge=3, json_schema_extra=_rule("be odd and >= 3")
    )
    lpq_decorrelate: Bool = True
    lpq_rho: Annotated[Float, _open_interval(0, 1)] = 0.90
    phog_bins: Int = Field(8, ge=1)
    phog_angle: Literal[180, 360] = Field(360, json_schema_extra=_rule("be 180 or 360"))
    phog_levels: Int = Field(3, ge=0)


def descriptor_lengths(features: FeaturesParams) -> dict[str, int]:
    """{"lpq": 256, "phog": ...}, each descriptor's length: LPQ is a histogram of 8-bit codes,
    PHOG has ``phog_bins`` per cell over 1 + 4 + ... + 4**levels cells (on frames large enough
    for the levels, which features checks)."""
    return {"lpq": 256, "phog": features.phog_bins * (4 ** (features.phog_levels + 1) - 1) // 3}


class MlpParams(Section):
    """The paper's PCA baseline: top components of each descriptor -> a small sigmoid MLP."""

    pca_components: Int = Field(5, ge=1)
    hidden: tuple[Annotated[Int, Field(ge=1)], ...] = Field(
        (32,), json_schema_extra=_rule("list positive widths")
    )
    lr: Float = Field(0.01, gt=0)
    epochs: Int = Field(450, gt=0)
    batch_size: Int = Field(32, gt=0)


class CnnParams(Section):
    """The paper's CNN. Conv ReLU (He init) + FC sigmoid (torch's default init) is the setup that
    reproduces the paper's regime on the real frames (docs/paper.md); the all-sigmoid Glorot net
    is ``conv_activation=sigmoid, conv_init=glorot, fc_init=glorot``."""

    conv_activation: Activation = "relu"
    fc_activation: Activation = "sigmoid"  # the hidden FC units, the ones pruning acts on
    conv_init: Init = "he"
    fc_init: Init = "pytorch"
    lr: Float = Field(0.0006, gt=0)
    batch_size: Int = Field(32, gt=0)
    epochs: Int = Field(50, gt=0)
    augment: Bool = False
    checkpoint_every: Int = Field(10, gt=0)  # prune_cnn resumes from one of these
    trace_mode: PruneMode = "output_weights"  # how train_cnn measures its angle traces


class PruneParams(Section):
    threshold: Annotated[Float, _open_interval(*PRUNE_THRESHOLD_RANGE)] = 25.0
    # fc1's 512 units: the paper's logged pruned ids (152, 190, 231, ...) exist only there.
    layers: tuple[HiddenLayer, ...] = Field(
        ("fc1",),
        min_length=1,
        json_schema_extra=_empty_rule(f"list at least one of {', '.join(HIDDEN_LAYERS)}"),
    )
    mode: PruneMode = "output_weights"
    complementary: Complementary = "remove_both"
    start_epoch: Int = Field(10, ge=1)
    every: Int = Field(1, ge=1)
    # Equal-size controls: the same counts removed at the same epochs, chosen otherwise.
    baselines: tuple[Baseline, ...] = ("random", "magnitude")


class FinetuneParams(Section):
    """torchvision's transfer-learning recipe: SGD + momentum, step LR, 25 epochs."""

    archs: tuple[Arch, ...] = Field(
        ("resnet18",),
        min_length=1,
        json_schema_extra=_empty_rule(f"list at least one of {', '.join(ARCHS)}"),
    )
    weights: Weights = "auto"  # imagenet (cached file required) | none (random init) | auto
    freeze_backbone: Bool = False
    # How many of the manifest's splits (from split 0: repeat 0's folds first), or "all".
    folds: Annotated[Int, Field(ge=1)] | Literal["all"] = Field(
        1, json_schema_extra=_rule("be 'all' or a count >= 1")
    )
    epochs: Int = Field(25, gt=0)
    batch_size: Int = Field(16, gt=0)
    lr: Float = Field(0.001, gt=0)
    momentum: Float = Field(0.9, ge=0, lt=1, json_schema_extra=_rule("be in [0, 1)"))
    weight_decay: Float = Field(0.0, ge=0)
    step_size: Int = Field(7, gt=0)
    gamma: Float = Field(0.1, gt=0)


class EvaluateParams(Section):
    latency_repeats: Int = Field(10, ge=1)  # forward passes timed per model for ms/image


class Params(Section):
    """The whole params.yaml."""

    seed: Int = Field(42, ge=0)
    device: Device = "auto"
    precision: Precision = "auto"  # the CNN and ResNet training steps
    mlflow: MlflowParams = MlflowParams()
    data: DataParams = DataParams()
    cv: CVParams = CVParams()
    resize: ResizeParams = ResizeParams()
    features: FeaturesParams = FeaturesParams()
    mlp: MlpParams = MlpParams()
    cnn: CnnParams = CnnParams()
    prune: PruneParams = PruneParams()
    finetune: FinetuneParams = FinetuneParams()
    evaluate: EvaluateParams = EvaluateParams()

    @model_validator(mode="after")
    def _across_sections(self) -> Params:
        # Pruning resumes from a train_cnn checkpoint and trains to the same total budget.
        start = self.prune.start_epoch
        if start >= self.cnn.epochs:
            raise _cross("prune.start_epoch", f"be < cnn.epochs ({self.cnn.epochs})", start)
        if start % self.cnn.checkpoint_every:
            raise _cross(
                "prune.start_epoch",
                f"be a multiple of cnn.checkpoint_every ({self.cnn.checkpoint_every})",
                start,
            )
        # Checks fall at start + every, start + 2 * every, ... <= cnn.epochs: with none, the
        # "pruned" CNN is the unpruned one and its report has no angles to show.
        room = self.cnn.epochs - start
        if self.prune.every > room:
            raise _cross(
                "prune.every",
                f"be <= cnn.epochs - prune.start_epoch ({room}) for a distinctiveness check to run",
                self.prune.every,
            )
        # A name twice would train (and write the outputs of) one model twice.
        for key, names in (
            ("prune.layers", self.prune.layers),
            ("prune.baselines", self.prune.baselines),
            ("finetune.archs", self.finetune.archs),
        ):
            if len(set(names)) < len(names):
                raise _cross(key, "name each one once", list(names))
        # The PCA baseline keeps that many components of each descriptor (per fold; train_mlp
        # also checks the folds' training frames, which only the data knows).
        name, length = min(descriptor_lengths(self.features).items(), key=lambda kv: kv[1])
        if self.mlp.pca_components > length:
            raise _cross(
                "mlp.pca_components",
                f"be <= {length}, the length of the {name.upper()} descriptor",
                self.mlp.pca_components,
            )
        # finetune.folds counts splits (from split 0), and with repeats there are R * K of them.
        folds, cv = self.finetune.folds, self.cv
        if isinstance(folds, int) and folds > cv.n_splits:
            bound = (
                f"cv.folds ({cv.folds})"
                if cv.repeats == 1
                else f"cv.folds * cv.repeats ({cv.n_splits})"
            )
            raise _cross("finetune.folds", f"be 'all' or <= {bound}", folds)
        return self

    def section(self, name: str) -> dict[str, Any]:
        """One section as a plain dict (for logging as MLflow params)."""
        value = getattr(self, name)
        return value.model_dump() if isinstance(value, BaseModel) else {name: value}


SECTIONS: tuple[str, ...] = tuple(Params.model_fields)  # seed, device, mlflow, data, ...
SECTIONS_DIR = Path("outputs/params")


def section_file(name: str) -> Path:
    """check_params' copy of one validated section, the dep through which a stage sees it."""
    return SECTIONS_DIR / f"{name}.json"


def _cross(key: str, rule: str, value: Any) -> PydanticCustomError:
    return PydanticCustomError(
        "emoprune_rule", "{key} must {rule}", {"key": key, "rule": rule, "value": value}
    )


# ------------------------------------------------------------------------------- messages

_TYPE_WORDS = {
    "int_type": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "model_type": "a mapping",
    "dict_type": "a mapping",
}
_PLURAL = {"an integer": "integers", "a number": "numbers", "a string": "strings"}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _field(model: type[BaseModel], loc: tuple) -> tuple[str, Any, type[BaseModel] | None]:
    """(dotted key, FieldInfo or None, the model owning the key) for an error's location."""
    names: list[str] = []
    info = None
    owner: type[BaseModel] | None = model
    for part in loc:
        if not isinstance(part, str) or owner is None or part not in owner.model_fields:
            break
        names.append(part)
        info = owner.model_fields[part]
        sub = info.annotation
        owner = sub if isinstance(sub, type) and issubclass(sub, BaseModel) else None
    return ".".join(names), info, owner


def _raw_value(raw: Any, key: str) -> Any:
    for part in key.split("."):
        raw = raw.get(part) if isinstance(raw, dict) else None
    return raw


def _shown(value: Any, info: Any) -> str:
    # A float field shows the number it would hold (``-1`` -> ``-1.0``), as the key reads it.
    if (
        info is not None
        and info.annotation is float
        and isinstance(value, int)
        and not isinstance(value, bool)
    ):
        value = float(value)
    return repr(list(value) if isinstance(value, tuple) else value)


def _item_words(info: Any, error_type: str) -> str:
    args = getattr(info.annotation, "__args__", ())
    item = args[0] if args else None
    if item is int or error_type == "int_type":
        return "integers"
    if item is float:
        return "numbers"
    return "strings"


def explain(error: ValidationError, raw: Any, model: type[BaseModel] | None = None) -> str:
    """The first problem of a ``ValidationError`` as one line naming the key and the value."""
    model = model or Params
    first = error.errors(include_url=False)[0]
    etype, loc, ctx = first["type"], tuple(first["loc"]), first.get("ctx") or {}
    if etype == "emoprune_rule":
        return f"params.yaml: {ctx['key']} must {ctx['rule']}, got {_shown(ctx['value'], None)}"
    key, info, owner = _field(model, loc)
    if etype == "extra_forbidden":
        unknown = str(loc[len(key.split(".")) if key else 0])
        where = f"{key}.{unknown}" if key else unknown
        known = list(owner.model_fields) if owner is not None else []
        close = difflib.get_close_matches(unknown, known, n=2, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        return f"params.yaml: unknown key {where}{hint}"
    value = _raw_value(raw, key) if key else raw
    shown = _shown(value, info)
    extra = (info.json_schema_extra or {}) if info is not None else {}
    in_list = len(loc) > len(key.split(".")) and isinstance(loc[len(key.split("."))], int)
    is_union = info is not None and typing.get_origin(info.annotation) in (
        typing.Union,
        types.UnionType,
    )
    if etype in ("model_type", "dict_type"):
        rule = "be a mapping"
    elif etype == "tuple_type":
        rule = f"be a list of {_item_words(info, etype)}"
    elif etype in _TYPE_WORDS and not is_union:
        word = _TYPE_WORDS[etype]
        rule = f"be a list of {_PLURAL.get(word, word)}" if in_list else f"be {word}"
    elif etype in extra:
        rule = extra[etype]
    elif "must" in extra:
        rule = extra["must"]
    elif etype == "literal_error":
        choices = ", ".join(a.strip("'") for a in ctx["expected"].replace(" or ", ", ").split(", "))
        rule = f"be {'drawn from' if in_list else 'one of'} {choices}"
    elif etype in _BOUNDS:
        bound = next(iter(ctx.values()))
        rule = f"be {_BOUNDS[etype]} {bound:g}"
    elif etype == "value_error":
        rule = str(ctx.get("error", first["msg"]))
    else:
        rule = first["msg"].lower()
    return f"params.yaml: {key or 'the file'} must {rule}, got {shown}"


def parse_params(raw: Any) -> Params:
    """Validate a params mapping (as read from YAML) into ``Params``."""
    raw = raw if raw is not None else {}
    if not isinstance(raw, dict):
        raise UserError(f"params.yaml: the file must be a mapping, got {raw!r}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise UserError(explain(exc, raw)) from None


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


def check_data_folder(raw: str, cwd: Path | None = None) -> None:
    """Raise UserError when ``raw`` (data.raw, relative to ``cwd``, the project) is no folder.

    check_params says it with a hint, before DVC stops ingest with a bare "No such file or
    directory". ``dvc exp run --temp``/``--queue`` run in a copy under .dvc/tmp/exps holding only
    what git and DVC track, so a relative data.raw naming an untracked folder is missing there.
    """
    cwd = Path.cwd() if cwd is None else cwd
    folder = cwd / raw
    if folder.is_dir():
        return
    what = "is not a folder" if folder.exists() else "not found"
    parts = cwd.parts
    in_exp_copy = any(parts[i : i + 3] == (".dvc", "tmp", "exps") for i in range(len(parts)))
    if in_exp_copy and not Path(raw).is_absolute():
        hint = (
            "`dvc exp run --temp/--queue` runs in a copy holding only what git and DVC track: "
            "set data.raw to an absolute path"
        )
    elif folder.resolve() == (cwd / "data" / "raw").resolve():
        hint = "put SFEW there or run `make sample`"
    else:
        hint = "put SFEW there or set data.raw to where it is"
    raise UserError(f"params.yaml: data.raw: {raw} {what} ({hint})")


__all__ = ["EMOTIONS", "Params", "check_data_folder", "explain", "load_params", "parse_params"]

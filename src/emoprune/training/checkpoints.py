"""Model checkpoints: ``{"state_dict", "meta"}`` written atomically, read with weights_only.

``meta`` is plain data (numbers, strings, lists, dicts) so that ``torch.load(weights_only=True)``
can read it back: never a pickle of arbitrary objects, so loading an untrusted file cannot run
code. For a CNN it holds at least the keys ``build_cnn`` needs (see ``cnn_meta``), plus whatever
the stage adds: params, epoch, the training fold's normalisation ``mean``/``std`` as lists, ...
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emoprune.errors import UserError
from emoprune.models.cnn import CNN
from emoprune.training.loop import EpochStats

CNN_META_KEYS = ("n_classes", "conv_activation", "fc_activation", "hidden", "in_size")


def _plain(value: Any, where: str) -> Any:
    """``value`` with numpy arrays/scalars turned into Python data; TypeError for anything that
    ``weights_only`` loading would refuse (so an unloadable checkpoint is never written)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):  # e.g. optimizer moments kept in meta to resume
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"checkpoint {where} has a {type(value).__name__}; use plain data")


def save_checkpoint(
    path: str | os.PathLike, *, state_dict: Mapping[str, torch.Tensor], meta: dict
) -> None:
    """Write ``{"state_dict", "meta"}`` to ``path`` atomically (temp file, fsync, os.replace).

    A crash mid-write leaves either the old file or none, never a truncated checkpoint that a
    later stage (or DVC) would pick up. Tensors are saved on the CPU so any machine can load them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "meta": _plain(dict(meta), "meta"),
    }
    # Same directory, so os.replace is an atomic rename; not mkstemp, whose 0600 mode would stick
    # to the checkpoint instead of the usual umask-derived mode.
    tmp_name = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    f = open(tmp_name, "xb")  # outside the try: if this fails there is nothing of ours to remove
    try:
        with f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a stray temp file next to the checkpoint.
        tmp_name.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories can't be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, meta) from ``path``, on the CPU. Any unreadable file is a one-line UserError."""
    if not Path(path).exists():
        raise UserError(f"cannot load checkpoint {path}: no such file")
    if not Path(path).is_file():
        raise UserError(f"cannot load checkpoint {path}: not a file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, random bytes, refused pickle, ...: all the file's fault
        raise UserError(f"cannot load checkpoint {path}: {_load_failure(e)}") from None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("state_dict"), dict)
        or not isinstance(payload.get("meta"), dict)
    ):
        raise UserError(f"cannot load checkpoint {path}: not a {{state_dict, meta}} checkpoint")
    return payload["state_dict"], payload["meta"]


def _load_failure(e: Exception) -> str:
    """A one-line reason for a failed ``torch.load`` (torch's own messages span paragraphs)."""
    message = str(e)
    if isinstance(e, EOFError):
        return "file is empty or truncated"
    if "zip archive" in message:
        return "file is corrupt or truncated (unreadable zip archive)"
    refused = re.search(r"GLOBAL (\S+)", message)  # torch phrases this several ways
    if refused:
        return f"refusing to unpickle {refused.group(1)} (only tensors and plain data are loaded)"
    detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
    if detail:
        return f"not a torch checkpoint ({detail.group(1).strip()})"
    if "Weights only load failed" in message:
        return "not a weights-only torch checkpoint"
    first_line = (message.strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first_line}"


def cnn_meta(model: CNN, **extra: Any) -> dict:
    """The meta ``build_cnn`` needs to rebuild ``model``'s architecture, plus ``extra`` entries."""
    return {
        "n_classes": model.n_classes,
        "conv_activation": model.conv_activation,
        "fc_activation": model.fc_activation,
        "hidden": list(model.hidden),
        "in_size": model.in_size,
        **extra,
    }


def build_cnn(meta: Mapping[str, Any]) -> CNN:
    """An untrained CNN with the architecture described by ``meta`` (see ``CNN_META_KEYS``).

    Checkpoints written before the conv and FC activations were separate carry one
    ``activation`` for both; they still load.
    """
    meta = dict(meta)
    if "activation" in meta:
        meta.setdefault("conv_activation", meta["activation"])
        meta.setdefault("fc_activation", meta["activation"])
    missing = [
        k for k in ("n_classes", "conv_activation", "fc_activation", "hidden") if k not in meta
    ]
    if missing:
        raise UserError(f"checkpoint meta lacks {missing}; cannot rebuild the CNN")
    try:
        return CNN(
            n_classes=int(meta["n_classes"]),
            conv_activation=str(meta["conv_activation"]),
            fc_activation=str(meta["fc_activation"]),
            hidden=[int(h) for h in meta["hidden"]],
            in_size=int(meta.get("in_size", 227)),
        )
    except (ValueError, TypeError) as e:
        raise UserError(f"checkpoint meta does not describe a CNN: {e}") from None


def checkpoint_path(folder: str | Path, fold: int, epoch: int | None = None) -> Path:
    """``fold{k}.pt`` for the final model, ``fold{k}_epoch{e}.pt`` for a resumable checkpoint."""
    name = f"fold{fold}.pt" if epoch is None else f"fold{fold}_epoch{epoch:03d}.pt"
    return Path(folder) / name


def save_cnn(
    path: str | Path, model: CNN, optimizer: torch.optim.Optimizer | None = None, **meta: Any
) -> None:
    """Save weights (+ optimizer state, to resume with Adam's moments intact) and meta.

    The architecture keys of ``meta`` always come from ``model`` itself, never from a stale meta.
    """
    state = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    extra = {k: v for k, v in meta.items() if k not in cnn_meta(model)}
    if optimizer is not None:
        extra["optimizer"] = optimizer.state_dict()
    save_checkpoint(path, state_dict=state, meta=cnn_meta(model, **extra))


def load_cnn_checkpoint(path: str | Path) -> tuple[CNN, dict, dict | None]:
    """(model, meta, optimizer state or None) from a ``save_cnn`` file; UserError if unusable."""
    from emoprune.training.checkpoints import build_cnn

    state, meta = load_checkpoint(path)
    model = build_cnn(meta)
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(
            f"cannot load checkpoint {path}: weights do not fit the CNN "
            f"({' '.join(str(exc).split())[:200]})"
        ) from None
    return model, meta, meta.pop("optimizer", None)


class CheckpointEvery:
    """fit callback: save a resumable checkpoint every ``every`` epochs (not the last one)."""

    def __init__(
        self,
        folder: Path,
        fold: int,
        every: int,
        last: int,
        optimizer: torch.optim.Optimizer,
        meta: dict,
    ):
        self.folder, self.fold, self.every, self.last = folder, fold, every, last
        self.optimizer, self.meta = optimizer, meta

    def __call__(self, stats: EpochStats, model: nn.Module) -> None:
        if stats.epoch % self.every == 0 and stats.epoch < self.last:
            save_cnn(
                checkpoint_path(self.folder, self.fold, stats.epoch),
                model,
                self.optimizer,
                epoch=stats.epoch,
                **self.meta,
            )


def load_resumable(folder: str | Path, fold: int, epoch: int) -> tuple[CNN, dict, dict]:
    """(model, meta, Adam state) of fold ``fold``'s checkpoint at ``epoch``, to train on from."""
    path = checkpoint_path(folder, fold, epoch)
    model, meta, opt_state = load_cnn_checkpoint(path)
    if opt_state is None:
        raise UserError(f"{path}: no optimizer state to resume from")
    return model, meta, opt_state

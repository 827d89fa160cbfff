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

from emoprune.errors import UserError
from emoprune.models.cnn import CNN

CNN_META_KEYS = ("n_classes", "activation", "hidden", "in_size")


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
        "activation": model.activation,
        "hidden": list(model.hidden),
        "in_size": model.in_size,
        **extra,
    }


def build_cnn(meta: Mapping[str, Any]) -> CNN:
    """An untrained CNN with the architecture described by ``meta`` (see ``CNN_META_KEYS``)."""
    missing = [k for k in ("n_classes", "activation", "hidden") if k not in meta]
    if missing:
        raise UserError(f"checkpoint meta lacks {missing}; cannot rebuild the CNN")
    try:
        return CNN(
            n_classes=int(meta["n_classes"]),
            activation=str(meta["activation"]),
            hidden=[int(h) for h in meta["hidden"]],
            in_size=int(meta.get("in_size", 227)),
        )
    except (ValueError, TypeError) as e:
        raise UserError(f"checkpoint meta does not describe a CNN: {e}") from None

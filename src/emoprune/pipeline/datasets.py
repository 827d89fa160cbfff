"""MLflow datasets: which version of the data, and which part of it, a run trained or scored on.

Each split a stage uses becomes two MLflow datasets, ``<raw> fold<k> train`` (context
``training``) and ``<raw> fold<k> validation`` (context ``validation``, or ``evaluation`` for
the evaluate stage): the manifest's rows of that part, with the DVC hash of the raw folder as
the digest. The run page's "Datasets used" then names the data version, and two runs trained on
different copies of the data show different digests.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

MANIFEST = Path("outputs/ingest/manifest.csv")
_LOGGED: set[tuple[str, int, str]] = set()


def data_version(raw: str | Path = "data/raw", root: str | Path = ".") -> str | None:
    """DVC's hash of the frames folder ``raw`` (params.yaml ``data.raw``): the ingest stage's
    dependency on it in dvc.lock (what DVC hashed when ingest last ran, so in a repro this one's),
    else data.dvc's when it tracks ``raw`` (what `dvc commit` wrote); None when neither names
    ``raw``. ``.dir`` is dropped: MLflow's digest field holds 36 characters."""
    from emoprune.pipeline.tracking import read_yaml

    root = Path(root)
    wanted = (root / raw).resolve()  # an absolute data.raw stays itself
    outs = read_yaml(root / "data.dvc").get("outs") or []
    deps = (read_yaml(root / "dvc.lock").get("stages", {}).get("ingest") or {}).get("deps") or []
    for entry in [*deps, *outs]:
        if entry.get("md5") and (root / str(entry.get("path", ""))).resolve() == wanted:
            return str(entry["md5"]).removesuffix(".dir")[:36]
    return None


def split_frames(
    manifest: Any, splits: Iterable[tuple[int, Sequence[int], Sequence[int]]]
) -> list[tuple[int, str, Any]]:
    """[(k, "train" | "validation", the manifest's rows of that part)] for ``splits`` of
    (split id, train indices, validation indices); ``manifest`` is a DataFrame."""
    out = []
    for k, train, val in splits:
        for part, rows in (("train", train), ("validation", val)):
            out.append((k, part, manifest.iloc[list(rows)].reset_index(drop=True)))
    return out


def log_split_inputs(
    folds: Any,
    ids: Sequence[int],
    raw: str,
    *,
    scored: bool = False,
    manifest: str | Path = MANIFEST,
) -> int:
    """Log splits ``ids`` of ``folds`` (a ``data.folds.Folds``) as the active run's
    inputs; ``scored`` logs only the validation parts, as ``evaluation`` (the evaluate stage).
    A part already logged to the run is skipped (prune_cnn cross-validates three times).
    Returns the number of datasets logged (0 without a data version)."""
    import mlflow
    import pandas as pd

    digest = data_version(raw)
    if digest is None:
        return 0
    run_id = mlflow.active_run().info.run_id
    frame = pd.read_csv(manifest, dtype=str)
    logged = 0
    for k, part, rows in split_frames(frame, ((k, *folds.split(k)) for k in ids)):
        if (scored and part == "train") or (run_id, k, part) in _LOGGED:
            continue
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local path
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                rows, source=raw, name=f"{raw} fold{k} {part}", digest=digest, targets="emotion"
            )
        context = "training" if part == "train" else ("evaluation" if scored else "validation")
        tags = {
            "split": str(k),
            "repeat": str(folds.repeat_of(k)),
            "fold": str(folds.fold_of(k)),
            "part": part,
        }
        mlflow.log_input(dataset, context=context, tags=tags)
        _LOGGED.add((run_id, k, part))
        logged += 1
    return logged

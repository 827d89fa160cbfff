"""Atomic writers: an output appears whole, or not at all.

Every writer goes through a temporary sibling that is renamed into place on success, so a crash
or Ctrl-C never leaves a half-written file for DVC to cache or a user to trust.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    Works for files and folders: the caller creates whatever it wants at the yielded path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of an attempt killed with SIGKILL (no `finally` ran): DVC runs one stage per
    # workspace at a time, so any temporary sibling of ours is stale.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.rmdir()  # the caller decides whether it is a file or a folder
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        # surrogateescape: non-UTF-8 file names round-trip through the manifest.
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")


def json_text(obj: Any) -> str:
    """``obj`` as the JSON text ``write_json`` writes (numpy scalars and arrays become numbers)."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json_text(obj))


def write_tsv(
    path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> None:
    """Rows of dicts -> a TSV with a header (the format `dvc plots` reads)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    lines = ["\t".join(columns)]
    lines += ["\t".join(_cell(row.get(c)) for c in columns) for row in rows]
    write_text(path, "\n".join(lines) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _jsonable(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return value.as_posix()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def save_figure(fig: Any, path: str | Path) -> None:
    """Write a matplotlib figure as a PNG atomically (a Ctrl-C never leaves half an image), then
    close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

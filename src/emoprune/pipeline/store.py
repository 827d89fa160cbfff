"""Keep the project's local MLflow store valid when the project folder is copied or moved.

MLflow writes ABSOLUTE artifact locations into its database: each experiment's
``artifact_location``, each run's ``artifact_uri``, each logged model's, each model version's
``source``/``storage_location`` and each trace's ``mlflow.artifactLocation`` tag. After
``cp -r A B`` (or ``mv A B``) the store in B still names ``A/mlartifacts``: new runs in B would
write into A (or recreate A after a move) and B's UI would show A's files.

MLflow 3.17 has no relative artifact root to fall back on: ``create_experiment`` and the store's
default root go through ``resolve_uri_if_local``, which anchors a relative path to the cwd of the
moment, and a relative location read back later would be read against whatever the cwd then is
(a ``dvc exp run --temp`` copy, wherever ``mlflow ui`` was started). ``mlflow-artifacts:`` URIs
are resolved through an HTTP tracking server only, and stages talk to sqlite directly. So the
store is relocated instead: at stage start, when the stage's experiment in the project's own
sqlite store names another root's ``mlartifacts`` (a copy's origin, or a folder gone after a
move), that prefix is rewritten to this root's everywhere in the store, in one transaction.

Only the default local store (``<root>/mlflow.db``) is touched, never a server or another
database, and only locations under ``<old root>/mlartifacts``: an artifact location a user chose
elsewhere stays as it is. Each stage does this before it logs, and ``make ui`` before it serves.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

ARTIFACTS = "mlartifacts"

# Every column of MLflow 3.17's sqlite schema holding an artifact location MLflow wrote itself:
# (table, column, extra condition). Dataset sources are left alone: they name the user's data.
LOCATIONS = (
    ("experiments", "artifact_location", ""),
    ("runs", "artifact_uri", ""),
    ("logged_models", "artifact_location", ""),
    ("model_versions", "source", ""),
    ("model_versions", "storage_location", ""),
    ("trace_tags", "value", "key = 'mlflow.artifactLocation'"),
)


def local_path(location: str | None) -> tuple[PurePosixPath, bool] | None:
    """``(path, is_file_uri)`` for a local location (``file:`` URI or absolute path), else None."""
    if not location:
        return None
    if location.startswith("/"):
        return PurePosixPath(location), False
    parts = urlsplit(location)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path:
        return PurePosixPath(unquote(parts.path)), True
    return None


def rebase(location: str | None, old: Path | PurePosixPath, new: Path) -> str | None:
    """``location`` moved from under ``old/mlartifacts`` to under ``new/mlartifacts``, or None
    when it is not under the old one. The result keeps its form (URI or plain path)."""
    found = local_path(location)
    if found is None:
        return None
    path, is_uri = found
    old_art = PurePosixPath(old) / ARTIFACTS
    if path != old_art and old_art not in path.parents:
        return None
    moved = Path(new, ARTIFACTS, path.relative_to(old_art))
    return moved.as_uri() if is_uri else str(moved)


def root_of(location: str | None) -> PurePosixPath | None:
    """The project root an experiment location was made for: ``<root>/mlartifacts`` (what
    ``tracking.artifact_location`` makes) or ``<root>/mlartifacts/<id>`` (``make ui``'s
    ``--default-artifact-root``)."""
    found = local_path(location)
    if found is None:
        return None
    path = found[0]
    if path.name != ARTIFACTS and path.parent.name == ARTIFACTS and path.name.isdigit():
        path = path.parent
    return path.parent if path.name == ARTIFACTS else None


def was_project(folder: PurePosixPath, root: Path) -> bool:
    """Whether ``folder`` is a former place of the project at ``root``: another folder (not
    ``root`` under another name, e.g. through a symlink) that is gone (moved) or holds a
    project's store or pipeline (copied). A bare ``.../mlartifacts`` a user picked is neither."""
    old = Path(folder)
    if not old.exists():
        return True
    try:
        if old.samefile(root):
            return False
    except OSError:
        return False
    return (old / "mlflow.db").exists() or (old / "dvc.yaml").exists()


def old_roots(locations: Iterable[str | None], root: Path) -> list[PurePosixPath]:
    """The former roots of this project named by experiment ``locations``."""
    here = PurePosixPath(root)
    found = {r for r in map(root_of, locations) if r is not None and r != here}
    return sorted(r for r in found if was_project(r, root))


def project_db(root: Path, uri: str) -> Path | None:
    """The sqlite file when ``uri`` is this project's own store at ``<root>/mlflow.db`` and it
    exists; None for a server, another database or a store yet to be created."""
    match = re.fullmatch(r"sqlite:///([^?]+)(\?.*)?", uri)
    if not match:
        return None
    db = Path(match.group(1))
    return db if db == root / "mlflow.db" and db.is_file() else None


def _tables(con: sqlite3.Connection) -> dict[str, set[str]]:
    names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: {c[1] for c in con.execute(f"PRAGMA table_info('{t}')")} for t in names}


def _locations(con: sqlite3.Connection, experiment: str) -> list[str]:
    # Only the project's own experiment says where the project was: another experiment's
    # location, e.g. a user's ".../mlartifacts" on a disk not mounted now, proves nothing.
    query = "SELECT artifact_location FROM experiments WHERE name = ?"
    return [r[0] for r in con.execute(query, (experiment,))]


def relocate(
    db: Path, root: Path, experiment: str, timeout: float = 60
) -> dict[PurePosixPath, int]:
    """Rewrite every artifact location in the store under the former root's ``mlartifacts``
    (the one ``experiment`` names) to ``root``'s.

    Returns ``{old root: rows changed}``, empty when there was nothing to do. Safe to run from
    two processes at once (DVC's queue runs two workers on one file): the check is repeated
    under sqlite's write lock, so the second finds the work done.
    """
    con = sqlite3.connect(db, timeout=timeout, isolation_level=None)
    try:
        # A read first, without the write lock: the common case (nothing moved) costs no lock.
        if not old_roots(_locations(con, experiment), root):
            return {}
        con.execute("BEGIN IMMEDIATE")
        try:
            changed = _rewrite(con, root, experiment)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        return changed
    finally:
        con.close()


def _rewrite(con: sqlite3.Connection, root: Path, experiment: str) -> dict[PurePosixPath, int]:
    tables = _tables(con)
    changed: dict[PurePosixPath, int] = {}
    for old in old_roots(_locations(con, experiment), root):
        count = 0
        for table, column, extra in LOCATIONS:
            if column not in tables.get(table, ()):
                continue  # an older or newer schema without it
            where = f"instr({column}, '{ARTIFACTS}') > 0" + (f" AND {extra}" if extra else "")
            values = [
                r[0] for r in con.execute(f"SELECT DISTINCT {column} FROM {table} WHERE {where}")
            ]
            for value in values:
                moved = rebase(value, old, root)
                if moved is not None and moved != value:
                    cur = con.execute(
                        f"UPDATE {table} SET {column} = ? WHERE {column} = ?"
                        + (f" AND {extra}" if extra else ""),
                        (moved, value),
                    )
                    count += cur.rowcount
        changed[old] = count
    return changed


def relocate_if_moved(
    root: Path, uri: str, experiment: str, timeout: float = 60
) -> dict[PurePosixPath, int]:
    """Relocate the project's default local store if ``experiment`` shows the project was copied
    or moved, saying so in one line on stderr. Any other tracking URI is left alone."""
    db = project_db(root, uri)
    if db is None:
        return {}
    changed = relocate(db, root, experiment, timeout)
    for old, count in changed.items():
        print(
            f"[mlflow] the project moved: {count} artifact locations in {db.name} now point "
            f"at {root / ARTIFACTS} instead of {old / ARTIFACTS}",
            file=sys.stderr,
        )
    return changed

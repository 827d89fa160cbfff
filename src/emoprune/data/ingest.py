"""Scan an SFEW-layout folder, validate every frame, and fix the cross-validation folds once.

Layout: ``<raw>/<Emotion>/<Movie>_<clip>_<frame>.png``. Class folders match the params' class
names case-insensitively; the label is the index in ``data.classes``. Broken files are skipped
with a reason; structural problems (unknown or empty class, too few images) are user errors.

The manifest's ``fold`` column is repeat 0's fold; with ``cv.repeats`` R > 1, columns
``fold_r1`` ... ``fold_r{R-1}`` follow it (repeated stratified K-fold). With R = 1 there are no
extra columns, so the file is byte for byte what it was before repeats existed.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import os
import re
import stat
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emoprune.data.images import (
    IGNORED_NAMES,
    IMAGE_SUFFIXES,
    MAX_FILE_BYTES,
    BadImage,
    FrameInfo,
    inspect_frame,
)
from emoprune.errors import UserError

MANIFEST_COLUMNS = ("path", "emotion", "label", "width", "height", "fold", "clip", "sha1", "checks")
_REPEAT_COLUMN = re.compile(r"fold_r(\d+)")


def repeat_column(r: int) -> str:
    """The manifest column of repeat ``r``'s fold (r >= 1; repeat 0 is ``fold``)."""
    return f"fold_r{r}"


@dataclass
class Record:
    path: str  # POSIX path as the pipeline reads it (relative to the repo root)
    emotion: str
    label: int
    width: int
    height: int
    fold: int  # repeat 0's fold
    clip: str
    sha1: str
    checks: str  # "ok" or what was noted, e.g. "converted L to RGB"
    # Folds of repeats 1..R-1 (columns fold_r1 ...); empty with one repeat.
    later_folds: tuple[int, ...] = ()

    @property
    def folds(self) -> tuple[int, ...]:
        """This image's fold in every repeat, repeat order: (R,)."""
        return (self.fold, *self.later_folds)


@dataclass
class Skipped:
    path: str
    reason: str


SAMPLE_MARKER = "GENERATED_SAMPLE.txt"  # written by emoprune.data.sample beside the classes


def is_generated_sample(raw: str | Path) -> bool:
    """True when ``raw`` holds the generated sample rather than real frames."""
    return (Path(raw) / SAMPLE_MARKER).is_file()


def clip_of(filename: str) -> str:
    """``<Movie>_<clip>_<frame>.png`` -> ``<Movie>_<clip>``: frames of one clip look alike."""
    stem = Path(filename).stem
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def display_path(path: str | Path) -> str:
    """``path`` as one printable line: undecodable bytes as ``\\xff``, control chars escaped."""
    text = os.fsencode(Path(path).as_posix()).decode("utf-8", "backslashreplace")
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def _stat_failure(path: Path, exc: OSError) -> str:
    """Why ``path`` could not be stat'ed, for a file that ``rglob`` listed."""
    if exc.errno == errno.ELOOP:
        return "symlink loop (too many levels of symbolic links)"
    if path.is_symlink():
        return f"broken symlink (target {display_path(os.readlink(path))} not found)"
    return f"unreadable ({exc.strerror or exc})"


def _not_regular(mode: int) -> str:
    kind = (
        "named pipe"
        if stat.S_ISFIFO(mode)
        else "socket"
        if stat.S_ISSOCK(mode)
        else "device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "special file"
    )
    return f"not a regular file (a {kind})"


def _entries(folder: Path) -> list[Path]:
    """``folder``'s entries, none where it cannot be listed (the caller's error says more)."""
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def match_class_folders(raw: Path, classes: tuple[str, ...]) -> dict[str, Path]:
    """Map each class name to its folder under ``raw``; unknown or duplicate folders are errors."""
    if not raw.is_dir():
        raise UserError(f"{raw}: data folder not found (put SFEW there or run `make sample`)")
    wanted = {c.lower(): c for c in classes}
    found: dict[str, Path] = {}
    for entry in sorted(raw.iterdir()):
        if entry.name.lower() in IGNORED_NAMES or entry.name.startswith("."):
            continue
        if not entry.is_dir():
            continue  # stray files beside the class folders are not frames
        cls = wanted.get(entry.name.lower())
        if cls is None:
            expected = ", ".join(classes)
            # SFEW 2.0 ships Train/ and Val/ splits, each with the class folders inside.
            nested = any(sub.is_dir() and sub.name.lower() in wanted for sub in _entries(entry))
            hint = (
                "; it holds class folders itself: move them up into "
                f"{display_path(raw)} (merge the splits) or set data.raw to it"
                if nested
                else ""
            )
            raise UserError(
                f"{display_path(entry)}: unknown class folder (expected one of {expected}){hint}"
            )
        if cls in found:
            raise UserError(
                f"{display_path(entry)}: duplicate folder for class {cls} "
                f"(also {display_path(found[cls])})"
            )
        found[cls] = entry
    if not found:
        raise UserError(f"{raw}: no class folders (expected {', '.join(classes)})")
    missing = [c for c in classes if c not in found]
    if missing:
        raise UserError(f"{raw / missing[0]}: class folder missing (every class needs images)")
    return found


def scan(
    raw: str | Path, classes: tuple[str, ...], workers: int | None = None
) -> tuple[list[Record], list[Skipped]]:
    """Validate every frame under ``raw``. Records come sorted by (label, file name), fold -1.

    Frames are decoded on ``workers`` threads (default: one per core; Pillow's decoders and
    SHA-1 release the GIL), and reported in the same order as by one.
    """
    raw = Path(raw)
    # (label, class, path, shown, why it is skipped or None), in the order they are reported.
    entries: list[tuple[int, str, Path, str, str | None]] = []
    for label, (cls, folder) in enumerate(match_class_folders(raw, classes).items()):
        for path in sorted(folder.rglob("*")):
            if path.name.lower() in IGNORED_NAMES:
                continue
            failure: OSError | None = None
            try:
                st: os.stat_result | None = path.stat()  # follows symlinks
            except OSError as exc:
                st, failure = None, exc
            if st is not None and stat.S_ISDIR(st.st_mode):
                continue  # rglob lists its files too
            entries.append((label, cls, path, display_path(path), _precheck(path, st, failure)))

    records: list[Record] = []
    skipped: list[Skipped] = []
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        checked = pool.map(lambda e: None if e[4] else _inspect(e[2]), entries)
        for (label, cls, path, shown, why), result in zip(entries, checked):
            if why is None and isinstance(result, str):
                why = result
            if why is not None:
                skipped.append(Skipped(shown, why))
                continue
            info, sha1 = result
            records.append(
                Record(
                    path=(Path(raw) / path.relative_to(raw)).as_posix(),
                    emotion=cls,
                    label=label,
                    width=info.width,
                    height=info.height,
                    fold=-1,
                    clip=clip_of(path.name),
                    sha1=sha1,
                    checks=info.conversion or "ok",
                )
            )
    return records, skipped


def _precheck(path: Path, st: os.stat_result | None, failure: OSError | None) -> str | None:
    """Why ``path`` (stat ``st``, or None after ``failure``) is skipped before it is read."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file ({display_path(path.suffix) or 'no extension'})"
    if st is None:
        return _stat_failure(path, failure)
    if not stat.S_ISREG(st.st_mode):  # reading a FIFO or /dev/zero would never end
        return _not_regular(st.st_mode)
    if st.st_size > MAX_FILE_BYTES:
        return (
            f"too large ({st.st_size / 2**20:,.0f} MiB file, "
            f"over {MAX_FILE_BYTES / 2**20:,.0f} MiB)"
        )
    return None


def _inspect(path: Path) -> tuple[FrameInfo, str] | str:
    """A frame's ``FrameInfo`` and SHA-1, fully decoded; or why it is skipped."""
    try:
        data = path.read_bytes()
        return inspect_frame(data), hashlib.sha1(data).hexdigest()
    except BadImage as exc:
        return str(exc)
    except OSError as exc:  # removed or made unreadable meanwhile
        return f"unreadable ({exc.strerror or exc})"


def check_counts(
    records: list[Record],
    classes: tuple[str, ...],
    folds: int,
    class_folders: dict[str, Path] | None = None,
    skipped: list[Skipped] | None = None,
) -> Counter:
    """Every class needs at least ``folds`` usable images; returns the per-class counts.

    With ``class_folders`` and ``skipped`` (from ``scan``), the error also says why a class came
    up short: how many of its files were skipped, and the first one's reason.
    """
    counts = Counter(r.emotion for r in records)
    if not records:
        raise UserError("no usable images found in any class folder")
    for cls in classes:
        where = display_path(Path(class_folders[cls] if class_folders else cls))
        if counts[cls] >= folds:
            continue
        why = ""
        if class_folders and skipped is not None:
            mine = [s for s in skipped if s.path.startswith(where + "/")]
            if mine:
                first = mine[0]
                why = (
                    f" ({len(mine)} file{'s' if len(mine) > 1 else ''} skipped, e.g. "
                    f"{first.path[len(where) + 1 :]}: {first.reason})"
                )
            elif counts[cls] == 0:
                why = " (the folder holds no image files)"
        if counts[cls] == 0:
            raise UserError(f"{where}: no usable images in class {cls}{why}")
        raise UserError(
            f"{where}: {counts[cls]} usable images in class {cls}, fewer than cv.folds={folds}{why}"
        )
    return counts


def assign_folds(
    labels: np.ndarray, groups: np.ndarray | None, folds: int, seed: int
) -> np.ndarray:
    """Stratified K-fold ids (N,) in 0..folds-1; with ``groups``, a group never spans folds."""
    # Imported here: the stages that only read the manifest (resize, features) skip sklearn.
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    fold_of = np.full(len(labels), -1, dtype=np.int64)
    if groups is None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(labels)), labels)
    else:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(labels)), labels, groups)
    for k, (_, test) in enumerate(splits):
        fold_of[test] = k
    return fold_of


def assign_repeated_folds(
    labels: np.ndarray, groups: np.ndarray | None, folds: int, seed: int, repeats: int = 1
) -> np.ndarray:
    """Repeated stratified K-fold: (repeats, N) fold ids, row r = ``assign_folds`` with seed
    ``seed + r``, so row 0 is exactly the single K-fold assignment."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return np.stack([assign_folds(labels, groups, folds, seed + r) for r in range(repeats)])


def build_manifest(
    raw: str | Path,
    classes: tuple[str, ...],
    folds: int,
    seed: int,
    group_by: str = "none",
    repeats: int = 1,
) -> tuple[list[Record], list[Skipped]]:
    """Scan, validate, check counts and assign the folds of every repeat."""
    records, skipped = scan(raw, classes)
    check_counts(records, classes, folds, match_class_folders(Path(raw), classes), skipped)
    labels = np.array([r.label for r in records])
    # By the clip id alone: a clip whose frames sit in two emotion folders is still one clip.
    groups = np.array([r.clip for r in records]) if group_by == "clip" else None
    if groups is not None and len(set(groups)) < folds:
        raise UserError(
            f"cv.group_by=clip: only {len(set(groups))} clips, fewer than cv.folds={folds}"
        )
    assignment = assign_repeated_folds(labels, groups, folds, seed, repeats)
    for record, own in zip(records, assignment.T.tolist()):
        record.fold, record.later_folds = own[0], tuple(own[1:])
    return records, skipped


def fold_report(records: list[Record], folds: int) -> dict[str, Any]:
    """ingest's report of the folds: ``per_fold`` {fold: images} of repeat 0 and, only with
    R > 1 repeats (so a single repeat's report is unchanged), ``repeats`` and
    ``per_fold_by_repeat`` {repeat: {fold: images}}. Keys are strings, as JSON writes them."""

    def counts(repeat: int) -> dict[str, int]:
        c = Counter(r.folds[repeat] for r in records)
        return {str(k): c[k] for k in range(folds)}

    repeats = len(records[0].folds) if records else 1
    out: dict[str, Any] = {"per_fold": counts(0)}
    if repeats > 1:
        out["repeats"] = repeats
        out["per_fold_by_repeat"] = {str(r): counts(r) for r in range(repeats)}
    return out


def manifest_columns(repeats: int) -> tuple[str, ...]:
    """The manifest's header: ``fold_r1`` ... ``fold_r{repeats-1}`` right after ``fold``."""
    at = MANIFEST_COLUMNS.index("fold") + 1
    extra = tuple(repeat_column(r) for r in range(1, repeats))
    return MANIFEST_COLUMNS[:at] + extra + MANIFEST_COLUMNS[at:]


def manifest_csv(records: list[Record]) -> str:
    """The manifest's text; every record must carry the same number of repeats."""
    repeats = {len(r.folds) for r in records}
    if len(repeats) > 1:
        raise ValueError(f"records disagree on the number of repeats: {sorted(repeats)}")
    n = repeats.pop() if repeats else 1
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=manifest_columns(n), lineterminator="\n")
    writer.writeheader()
    for r in records:
        row = asdict(r)
        later = row.pop("later_folds")
        row.update({repeat_column(i): fold for i, fold in enumerate(later, start=1)})
        writer.writerow(row)
    return buf.getvalue()


def _repeats_in(path: Path, header: list[str]) -> int:
    """How many repeats a manifest header holds: 1 + its ``fold_r<i>`` columns, which must be
    fold_r1 ... fold_r{R-1} with no gap."""
    found = sorted(int(m.group(1)) for c in header if (m := _REPEAT_COLUMN.fullmatch(c)))
    if found != list(range(1, len(found) + 1)):
        shown = ", ".join(repeat_column(r) for r in found)
        raise UserError(f"{path}: fold columns {shown} skip a repeat (run `dvc repro ingest`)")
    return 1 + len(found)


def read_manifest(path: str | Path) -> list[Record]:
    """Load ``manifest.csv`` back into Records, with or without the ``fold_r<i>`` columns."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: manifest not found (run `dvc repro ingest`)")
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        later = [repeat_column(r) for r in range(1, _repeats_in(path, reader.fieldnames or []))]
        return [
            Record(
                path=row["path"],
                emotion=row["emotion"],
                label=int(row["label"]),
                width=int(row["width"]),
                height=int(row["height"]),
                fold=int(row["fold"]),
                clip=row["clip"],
                sha1=row["sha1"],
                checks=row["checks"],
                later_folds=tuple(int(row[c]) for c in later),
            )
            for row in reader
        ]

"""The manifest's cross-validation folds: which images each split trains and validates on.

``ingest`` fixes the folds once, so every model is scored on exactly the same held-out images.
With ``cv.repeats`` R > 1 (repeated K-fold) there are R * K splits; split ``k = r * K + f`` holds
out fold ``f`` of repeat ``r``. Plain numpy, so a stage that only reads the folds (features) needs
no torch; ``training.crossval`` builds the fold tensors on top of this (and re-exports it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoprune.data.ingest import Record, read_manifest

MANIFEST = Path("outputs/ingest/manifest.csv")


@dataclass
class Folds:
    """Labels (N,) and the fold assignment (R, N) of R repeats of K-fold, in manifest order.

    ``assignment[r, i]`` is image i's fold (0..K-1) in repeat r. The splits are numbered
    ``k = r * K + f``: split k validates on fold f of repeat r and trains on everything else.
    """

    labels: np.ndarray
    assignment: np.ndarray
    n_folds: int  # K
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        self.assignment = np.asarray(self.assignment, dtype=np.int64)
        if self.assignment.ndim != 2 or self.assignment.shape[1] != len(self.labels):
            raise ValueError(
                f"assignment {self.assignment.shape} must be (repeats, {len(self.labels)})"
            )
        if self.assignment.size and not (
            0 <= self.assignment.min() and self.assignment.max() < self.n_folds
        ):
            raise ValueError(f"fold ids must lie in 0..{self.n_folds - 1}")

    @property
    def n_repeats(self) -> int:
        """R, the number of K-fold repeats."""
        return int(self.assignment.shape[0])

    @property
    def ids(self) -> list[int]:
        """Every split id, 0..R*K-1."""
        return list(range(self.n_repeats * self.n_folds))

    def repeat_of(self, k: int) -> int:
        """The repeat r of split ``k`` (k = r * K + f)."""
        self._check(k)
        return k // self.n_folds

    def fold_of(self, k: int) -> int:
        """The fold f (within its repeat) that split ``k`` validates on."""
        self._check(k)
        return k % self.n_folds

    def split(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(train indices, validation indices) of split ``k``, each sorted ascending: validation
        is fold ``fold_of(k)`` of repeat ``repeat_of(k)``, training the repeat's other folds."""
        own = self.assignment[self.repeat_of(k)]
        f = self.fold_of(k)
        return np.flatnonzero(own != f), np.flatnonzero(own == f)

    def val_splits(self) -> dict[int, np.ndarray]:
        """{split id: validation indices (n_val_k,), ascending}, every split; the rows of a
        split's saved validation probabilities follow this order."""
        return {k: self.split(k)[1] for k in self.ids}

    def _check(self, k: int) -> None:
        if not 0 <= k < self.n_repeats * self.n_folds:
            raise ValueError(f"split {k} out of range 0..{self.n_repeats * self.n_folds - 1}")


def folds_from_records(records: Sequence[Record], classes: Sequence[str]) -> Folds:
    """``Folds`` of manifest ``records``; K is the largest fold id + 1 (every fold of every
    repeat holds images: ingest gives each class at least K of them)."""
    assignment = (
        np.array([r.folds for r in records], dtype=np.int64).T
        if records
        else np.zeros((1, 0), dtype=np.int64)
    )
    return Folds(
        labels=np.array([r.label for r in records], dtype=np.int64),
        assignment=assignment,
        n_folds=int(assignment.max()) + 1 if assignment.size else 0,
        classes=tuple(classes),
    )


def load_folds(classes: Sequence[str], manifest: str | Path = MANIFEST) -> Folds:
    """``Folds`` of the manifest at ``manifest``, every repeat of it."""
    return folds_from_records(read_manifest(manifest), classes)

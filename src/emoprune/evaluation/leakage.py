"""Leakage checks on the folds: identical images on both sides of a split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def duplicate_twins(
    sha1: Sequence[str], folds: np.ndarray, max_examples: int = 5
) -> dict[str, Any]:
    """Validation images whose content hash also occurs in the same fold's training part.

    ``sha1`` and ``folds`` are (N,) in manifest order. Duplicates inside one fold do not count:
    they never sit on both sides of a split. Returns per_fold {k: n}, total and up to
    ``max_examples`` (val_index, train_index) pairs.
    """
    folds = np.asarray(folds)
    if len(sha1) != folds.size:
        raise ValueError(f"{len(sha1)} hashes for {folds.size} fold ids")
    # hash -> {fold: first index with that hash in that fold}; a hash sits in few folds, so
    # looking up "another fold" is O(1) per image and the whole check is O(N).
    where: dict[str, dict[int, int]] = {}
    for i, (h, k) in enumerate(zip(sha1, folds.tolist())):
        where.setdefault(h, {}).setdefault(int(k), i)
    per_fold = {int(k): 0 for k in np.unique(folds)}
    examples: list[tuple[int, int]] = []
    for i, (h, k) in enumerate(zip(sha1, folds.tolist())):
        twin = next((j for f, j in where[h].items() if f != k), None)
        if twin is not None:
            per_fold[int(k)] += 1
            if len(examples) < max_examples:
                examples.append((i, twin))
    return {"per_fold": per_fold, "total": sum(per_fold.values()), "examples": examples}

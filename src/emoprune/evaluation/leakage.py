"""Leakage checks on the folds: identical images on both sides of a split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def duplicate_twins(
    sha1: Sequence[str], splits: Mapping[int, np.ndarray], max_examples: int = 5
) -> dict[str, Any]:
    """Validation images whose content hash also occurs in the same split's training part.

    ``sha1`` is (N,) in manifest order; ``splits[k]`` is split k's validation indices
    (``Folds.val_splits()``), and its training part is every other image. Duplicates inside one
    validation part do not count: they never sit on both sides of that split. Returns per_fold
    {split id: n}, total (the sum: with R repeats an image is counted once per split it
    validates in) and up to ``max_examples`` distinct (val_index, train_index) pairs, by
    validation index; the train index is the twin's first occurrence in the training part.
    """
    n = len(sha1)
    # Each split is O(N): an image has a training twin iff its hash occurs more often in the
    # whole manifest than in the split's validation part.
    everywhere = Counter(sha1)
    first: dict[str, list[int]] = {}
    for i, h in enumerate(sha1):
        first.setdefault(h, []).append(i)
    per_fold: dict[int, int] = {}
    pairs: set[tuple[int, int]] = set()
    for k in sorted(splits):
        val = np.asarray(splits[k], dtype=np.int64)
        if val.ndim != 1 or (val.size and not (0 <= val.min() and val.max() < n)):
            raise ValueError(f"split {k}: validation indices must be (n,) in 0..{n - 1}")
        val_list = val.tolist()
        in_val = set(val_list)
        here = Counter(sha1[i] for i in val_list)
        per_fold[int(k)] = 0
        for i in val_list:
            h = sha1[i]
            if everywhere[h] > here[h]:
                per_fold[int(k)] += 1
                pairs.add((i, next(j for j in first[h] if j not in in_val)))
    examples = sorted(pairs)[:max_examples]
    return {"per_fold": per_fold, "total": sum(per_fold.values()), "examples": examples}

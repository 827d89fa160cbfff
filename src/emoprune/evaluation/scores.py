"""Scores of one model on the shared manifest folds: accuracy, macro-F1, recall, confusion.

Pure functions, numpy in and numpy/dicts out. Accuracies are fractions in [0, 1]; dict outputs
hold plain Python ints/floats so they can be written as JSON or logged to MLflow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from emoprune.evaluation.statistics import sample_std


# Confusion matrix and macro-F1 in numpy, not sklearn.metrics: every training stage scores its
# folds, and importing sklearn costs each of them about a second of start-up.
def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(M,) true and (M,) predicted class ids in 0..C-1 -> (C, C) int64 counts, rows = true."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"{name} holds class ids outside 0..{n_classes - 1}")
    pairs = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return pairs.reshape(n_classes, n_classes)


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    """Mean over all C classes of 2 TP / (2 TP + FP + FN); a class absent from both is 0.

    Equal to ``sklearn.metrics.f1_score(average="macro", labels=range(C), zero_division=0)``.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    denominator = cm.sum(axis=0) + cm.sum(axis=1)  # (TP + FP) + (TP + FN)
    f1 = np.divide(2 * tp, denominator, out=np.zeros(n_classes), where=denominator > 0)
    return float(f1.mean())


def accuracy_and_f1(y_true, y_pred, n_classes: int) -> tuple[float, float]:
    """Accuracy and macro-F1 over all ``n_classes`` labels (a class absent from both scores 0)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"need equal-length 1-D label arrays, got {y_true.shape}, {y_pred.shape}")
    accuracy = float(np.mean(y_true == y_pred))
    return accuracy, macro_f1(y_true, y_pred, n_classes)


def proba_from_npz(arrays: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
    """``val_proba.npz`` contents (``fold{k}`` -> (n_val_k, C)) -> {k: (n_val_k, C)}."""
    out = {}
    for key, value in arrays.items():
        m = re.fullmatch(r"fold(\d+)", key)
        if m is None:
            raise ValueError(f"unexpected array {key!r} in val_proba (expected fold<k>)")
        out[int(m.group(1))] = np.asarray(value)
    return dict(sorted(out.items()))


def pooled_predictions(
    proba_by_fold: Mapping[int, np.ndarray],
    labels: np.ndarray,
    splits: Mapping[int, np.ndarray],
    n_classes: int,
    *,
    model: str = "model",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate the evaluated splits' predictions, in split-id order.

    ``labels`` is (N,) in manifest order; ``splits[k]`` is split k's validation indices
    (n_val_k,) into it (``Folds.val_splits()``), and ``proba_by_fold[k]`` is (n_val_k, C) with
    rows in that order. Returns (index (M,), y_true (M,), y_pred (M,)), M = the evaluated
    splits' total size; with R repeats an image appears once per repeat evaluated.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{model}: labels {labels.shape} must be (N,)")
    if not proba_by_fold:
        raise ValueError(f"{model}: no fold probabilities to evaluate")
    idx, pred = [], []
    for k in sorted(proba_by_fold):
        p = np.asarray(proba_by_fold[k])
        # A split the manifest lacks has no images: reported as the size mismatch below.
        rows = np.asarray(splits.get(k, ()), dtype=np.int64)
        if rows.ndim != 1 or (rows.size and not (0 <= rows.min() and rows.max() < labels.size)):
            raise ValueError(f"{model}: split {k} indices must be (n,) in 0..{labels.size - 1}")
        # A length mismatch means the model was trained on another manifest: scoring it would
        # silently pair predictions with the wrong images.
        if p.ndim != 2 or p.shape[0] != rows.size or p.shape[1] != n_classes:
            raise ValueError(
                f"{model}: fold {k} probabilities have shape {p.shape}, expected "
                f"({rows.size}, {n_classes}) from the manifest"
            )
        if rows.size == 0:
            raise ValueError(f"{model}: fold {k} has no images in the manifest")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"{model}: fold {k} probabilities contain NaN or inf")
        idx.append(rows)
        pred.append(p.argmax(axis=1))
    index = np.concatenate(idx)
    return index, labels[index], np.concatenate(pred)


def fold_scores(
    proba_by_fold: Mapping[int, np.ndarray],
    labels: np.ndarray,
    splits: Mapping[int, np.ndarray],
    n_classes: int,
    class_names: Sequence[str] | None = None,
    *,
    model: str = "model",
) -> dict[str, Any]:
    """Accuracy and macro-F1 per evaluated split, their mean ± sample std, pooled recall and cm.

    Inputs as in :func:`pooled_predictions`; results are keyed by split id (``folds``,
    ``*_by_fold``). Only the splits present in ``proba_by_fold`` are scored (a ResNet trained
    on split 0 only reports ``folds == [0]``). Per-class recall and the confusion matrix
    (C, C), rows = true class, pool all evaluated predictions (with R repeats each image counts
    once per repeat); a class absent from the evaluated splits gets recall 0 (as sklearn's
    ``zero_division=0``).
    """
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    if len(names) != n_classes:
        raise ValueError(f"{model}: {len(names)} class names for {n_classes} classes")
    _, y_true, y_pred = pooled_predictions(proba_by_fold, labels, splits, n_classes, model=model)
    acc_by_fold, f1_by_fold, n_by_fold = {}, {}, {}
    start = 0
    for k in sorted(proba_by_fold):
        n = len(proba_by_fold[k])
        t, p = y_true[start : start + n], y_pred[start : start + n]
        start += n
        acc_by_fold[int(k)] = float(np.mean(t == p))
        f1_by_fold[int(k)] = macro_f1(t, p, n_classes)
        n_by_fold[int(k)] = int(n)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    recall = np.divide(np.diag(cm), support, out=np.zeros(n_classes), where=support > 0)
    acc, f1 = list(acc_by_fold.values()), list(f1_by_fold.values())
    return {
        "folds": list(acc_by_fold),
        "acc_by_fold": acc_by_fold,
        "f1_by_fold": f1_by_fold,
        "n_by_fold": n_by_fold,
        "n": int(y_true.size),
        "acc_mean": float(np.mean(acc)),
        "acc_std": sample_std(acc),
        "f1_mean": float(np.mean(f1)),
        "f1_std": sample_std(f1),
        "recall": {name: float(r) for name, r in zip(names, recall)},
        "confusion": cm.astype(int).tolist(),
    }


def confusion_rows(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> list[dict[str, str]]:
    """(M,) true and predicted class ids -> one {"actual", "predicted"} row per prediction."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ")
    return [
        {"actual": class_names[t], "predicted": class_names[p]}
        for t, p in zip(y_true.tolist(), y_pred.tolist())
    ]

"""Scoring every model on the shared manifest folds and comparing it with the paper.

All functions are pure (numpy in, numpy/dicts out) so the ``evaluate`` stage only does I/O.
Accuracies are fractions in [0, 1] throughout; the report renders them as percentages.
Dict outputs hold plain Python ints/floats so they can be written as JSON or logged to MLflow.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import confusion_matrix, f1_score

from matplotlib.figure import Figure

from emoprune.plots import plt  # the project's pyplot, already on the Agg backend

ALPHA = 0.05  # evidence bar of the paired tests, stated in every verdict
LEAKAGE_ACC = 0.60  # 5-fold SFEW accuracies far above this point to train/validation leakage
DASH = "–"

# The paper's results table (fractions). ``test_range``/``note`` carry figures that are not a
# single number, so nothing is invented where the paper only shows a curve.
PUBLISHED: dict[str, dict[str, Any]] = {
    "mlp": {
        "label": "PCA (LPQ+PHOG) + neural network",
        "train_acc": None,
        "test_acc": None,
        "test_range": (0.28, 0.32),
        "note": "table: below the CNN (loss curve only); text: MLP on 10 PCA features 28–32%",
        "source": "paper, results table (loss curve only) and text (MLP on 10 PCA features)",
    },
    "cnn": {
        "label": "CNN (5-fold)",
        "train_acc": 0.99,
        "test_acc": 0.35,
        "source": "paper, results table: CNN, 5-fold CV",
    },
    "pruned": {
        "label": "CNN + pruning, 15–25 degrees (5-fold)",
        "train_acc": 0.99,
        "test_acc": 0.38,
        "source": "paper, results table: CNN + distinctiveness pruning (15–25°), 5-fold CV",
    },
    "resnet18": {
        "label": "ResNet18 (single split, 25 epochs)",
        "train_acc": 0.99,
        "test_acc": 0.33,
        "source": "paper, results table: ResNet18, single split, 25 epochs",
    },
    "resnet34": {
        "label": "ResNet34 (single split, 25 epochs)",
        "train_acc": 0.99,
        "test_acc": 0.31,
        "source": "paper, results table: ResNet34, single split, 25 epochs",
    },
    "resnet50": {
        "label": "ResNet50 (single split, 25 epochs)",
        "train_acc": 0.99,
        "test_acc": 0.34,
        "source": "paper, results table: ResNet50, single split, 25 epochs",
    },
}

# Published reference points that are not one of our models.
PUBLISHED_OTHER: tuple[str, ...] = (
    "Dhall et al. 2011, LPQ / PHOG with an RBF SVM: 43.7% / 46.3% "
    "(5-fold, not person-independent)",
    "SFEW strict person-independent baseline: 19.0%",
)

MODEL_NAMES = {
    "mlp": "PCA + MLP",
    "cnn": "CNN",
    "pruned": "CNN + pruning",
    "resnet18": "ResNet18",
    "resnet34": "ResNet34",
    "resnet50": "ResNet50",
}

PROTOCOLS = {
    "none": "cv.group_by=none: frames of one clip may sit in different folds, so near-duplicate "
            "frames can leak between training and validation",
    "clip": "cv.group_by=clip: all frames of a clip sit in the same fold",
}


# --------------------------------------------------------------------------------------------
# Scoring


def proba_from_npz(arrays: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
    """``val_proba.npz`` contents (``fold{k}`` -> (n_val_k, C)) -> {k: (n_val_k, C)}."""
    out = {}
    for key, value in arrays.items():
        m = re.fullmatch(r"fold(\d+)", key)
        if m is None:
            raise ValueError(f"unexpected array {key!r} in val_proba (expected fold<k>)")
        out[int(m.group(1))] = np.asarray(value)
    return dict(sorted(out.items()))


def pooled_predictions(proba_by_fold: Mapping[int, np.ndarray], labels: np.ndarray,
                       folds: np.ndarray, n_classes: int, *, model: str = "model"
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate the evaluated folds' predictions.

    ``labels`` and ``folds`` are (N,) in manifest order; ``proba_by_fold[k]`` is (n_val_k, C)
    with rows in the order of ``np.flatnonzero(folds == k)``.
    Returns (index (M,), y_true (M,), y_pred (M,)), M = the evaluated folds' total size.
    """
    labels, folds = np.asarray(labels), np.asarray(folds)
    if labels.shape != folds.shape or labels.ndim != 1:
        raise ValueError(f"{model}: labels {labels.shape} and folds {folds.shape} must be (N,)")
    if not proba_by_fold:
        raise ValueError(f"{model}: no fold probabilities to evaluate")
    idx, pred = [], []
    for k in sorted(proba_by_fold):
        p = np.asarray(proba_by_fold[k])
        rows = np.flatnonzero(folds == k)
        # A length mismatch means the model was trained on another manifest: scoring it would
        # silently pair predictions with the wrong images.
        if p.ndim != 2 or p.shape[0] != rows.size or p.shape[1] != n_classes:
            raise ValueError(f"{model}: fold {k} probabilities have shape {p.shape}, expected "
                             f"({rows.size}, {n_classes}) from the manifest")
        if rows.size == 0:
            raise ValueError(f"{model}: fold {k} has no images in the manifest")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"{model}: fold {k} probabilities contain NaN or inf")
        idx.append(rows)
        pred.append(p.argmax(axis=1))
    index = np.concatenate(idx)
    return index, labels[index], np.concatenate(pred)


def fold_scores(proba_by_fold: Mapping[int, np.ndarray], labels: np.ndarray, folds: np.ndarray,
                n_classes: int, class_names: Sequence[str] | None = None, *,
                model: str = "model") -> dict[str, Any]:
    """Accuracy and macro-F1 per evaluated fold, their mean ± sample std, pooled recall and cm.

    Inputs as in :func:`pooled_predictions`. Only the folds present in ``proba_by_fold`` are
    scored (a ResNet trained on fold 0 only reports ``folds == [0]``). Per-class recall and the
    confusion matrix (C, C), rows = true class, pool all evaluated predictions; a class absent
    from the evaluated folds gets recall 0 (as sklearn's ``zero_division=0``).
    """
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    if len(names) != n_classes:
        raise ValueError(f"{model}: {len(names)} class names for {n_classes} classes")
    _, y_true, y_pred = pooled_predictions(proba_by_fold, labels, folds, n_classes, model=model)
    classes = list(range(n_classes))
    acc_by_fold, f1_by_fold, n_by_fold = {}, {}, {}
    start = 0
    for k in sorted(proba_by_fold):
        n = len(proba_by_fold[k])
        t, p = y_true[start:start + n], y_pred[start:start + n]
        start += n
        acc_by_fold[int(k)] = float(np.mean(t == p))
        f1_by_fold[int(k)] = float(f1_score(t, p, labels=classes, average="macro",
                                            zero_division=0))
        n_by_fold[int(k)] = int(n)
    cm = confusion_matrix(y_true, y_pred, labels=classes)
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
        "acc_std": _sample_std(acc),
        "f1_mean": float(np.mean(f1)),
        "f1_std": _sample_std(f1),
        "recall": {name: float(r) for name, r in zip(names, recall)},
        "confusion": cm.astype(int).tolist(),
    }


def _sample_std(values: Sequence[float]) -> float:
    # ddof=1: folds are a sample of possible splits; one fold has no spread to estimate.
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


# --------------------------------------------------------------------------------------------
# Paired comparison


def paired_comparison(a: Mapping[int, float], b: Mapping[int, float], name_a: str, name_b: str,
                      *, metric: str = "accuracy") -> dict[str, Any]:
    """Compare two models' per-fold scores (fractions) on the folds they share.

    Differences are ``b - a``. Returns n, folds, diffs, mean_diff, the paired t-test and
    Wilcoxon signed-rank p-values (None with a ``*_reason`` when undefined), and a one-sentence
    ``verdict`` that uses p < 0.05 as its evidence bar.
    """
    common = sorted(set(a) & set(b))
    diffs = np.array([b[k] - a[k] for k in common], dtype=float)
    diffs[np.abs(diffs) < 1e-12] = 0.0  # float noise would turn "identical" into "different"
    n = len(common)
    t_p = w_p = None
    t_reason = w_reason = None
    if n < 2:
        t_reason = w_reason = f"needs at least 2 common folds, got {n}"
    elif not np.any(diffs):
        t_reason = w_reason = "all differences are zero"
    else:
        if np.ptp(diffs) < 1e-12:  # constant difference: t = d/0, undefined
            t_reason = "the difference is the same on every fold (zero variance)"
        else:
            t_p = float(stats.ttest_rel([b[k] for k in common], [a[k] for k in common]).pvalue)
        with warnings.catch_warnings():
            # Zeros/ties make scipy fall back to the normal approximation with a warning.
            warnings.simplefilter("ignore")
            w_p = float(stats.wilcoxon(diffs).pvalue)
    mean_diff = float(diffs.mean()) if n else None
    return {
        "name_a": name_a,
        "name_b": name_b,
        "metric": metric,
        "n": n,
        "folds": common,
        "diffs": {int(k): float(d) for k, d in zip(common, diffs)},
        "mean_diff": mean_diff,
        "t_pvalue": t_p,
        "t_reason": t_reason,
        "wilcoxon_pvalue": w_p,
        "wilcoxon_reason": w_reason,
        "alpha": ALPHA,
        "verdict": _verdict(name_a, name_b, metric, n, mean_diff, t_p, diffs),
    }


def _verdict(name_a: str, name_b: str, metric: str, n: int, mean_diff: float | None,
             t_p: float | None, diffs: np.ndarray) -> str:
    if n == 0 or mean_diff is None:
        return f"{name_a} and {name_b} share no evaluated folds: nothing to compare."
    lead = (f"With {n} fold{'s' if n != 1 else ''}, the {name_b}'s {metric} differs from the "
            f"{name_a}'s by {100 * mean_diff:+.1f} points")
    if n < 3:
        return f"{lead}, but {n} fold{'s are' if n != 1 else ' is'} too few for a paired test " \
               "to be meaningful: no conclusion."
    if not np.any(diffs):
        return f"{lead} (identical on every fold): no difference."
    if t_p is None:
        return (f"{lead} (the same on every fold, so the t-test is undefined): "
                "too little variation to judge.")
    if t_p < ALPHA:
        direction = "higher" if mean_diff > 0 else "lower"
        return (f"{lead} (paired t-test p = {t_p:.2g} < {ALPHA}): evidence that the {name_b} "
                f"scores {direction} than the {name_a} on these folds.")
    return (f"{lead} (paired t-test p = {t_p:.2g}, evidence bar p < {ALPHA}): "
            f"no evidence of a difference between the {name_b} and the {name_a}.")


# --------------------------------------------------------------------------------------------
# Leakage check


def duplicate_twins(sha1: Sequence[str], folds: np.ndarray, max_examples: int = 5
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


# --------------------------------------------------------------------------------------------
# Markdown report


def _pct(x: Any, digits: int = 1) -> str:
    return DASH if x is None else f"{100 * x:.{digits}f}%"


def _mean_std(r: Mapping[str, Any], key: str) -> str:
    mean, std = r.get(f"{key}_mean"), r.get(f"{key}_std")
    if mean is None:
        return DASH
    # One fold has no spread: "± 0.0" would read as a perfectly stable result.
    if std is None or len(r.get("folds") or ()) == 1:
        return f"{100 * mean:.1f}%"
    return f"{100 * mean:.1f} ± {100 * std:.1f}%"


def _params(n: Any) -> str:
    if n is None:
        return DASH
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(int(n))


def _published_test(pub: Mapping[str, Any] | None) -> str:
    if pub is None:
        return DASH
    if pub.get("test_acc") is not None:
        return _pct(pub["test_acc"], 0)
    if pub.get("test_range") is not None:
        lo, hi = pub["test_range"]
        return f"{100 * lo:.0f}–{100 * hi:.0f}% (text); below the CNN (table)"
    return DASH


def _model_label(key: str, r: Mapping[str, Any]) -> str:
    label = MODEL_NAMES.get(key, key)
    weights = r.get("weights")
    if key.startswith("resnet"):
        label += {"imagenet": " (ImageNet weights)", "random": " (random init)"}.get(
            weights, " (weights not recorded)" if weights is None else f" ({weights})")
    return label


def _folds_cell(r: Mapping[str, Any], n_folds: int) -> str:
    fs = r.get("folds")
    if not fs:
        return DASH
    return f"{len(fs)}/{n_folds}" if len(fs) == n_folds else \
        f"{len(fs)}/{n_folds} ({', '.join(str(k) for k in fs)})"


def _order(results: Mapping[str, Any]) -> list[str]:
    known = [k for k in PUBLISHED if k in results]
    return known + [k for k in results if k not in PUBLISHED]


def comparison_markdown(results: Mapping[str, Mapping[str, Any]], *, protocol: str,
                        n_folds: int, paired: Mapping[str, Any] | None, weights_note: str | None,
                        twins: Mapping[str, Any], class_names: Sequence[str]) -> str:
    """A markdown report: our results beside the paper's, then the caveats needed to read them.

    ``results[model]`` holds acc_mean, acc_std, f1_mean, f1_std, folds and optionally
    train_acc_mean, n_params, ms_per_image, weights, neurons_removed, recall. ``protocol`` is
    the ``cv.group_by`` value ("none"/"clip") or a ready-made sentence. Missing values render
    as "–".
    """
    order = _order(results)
    lines = [
        "# Results beside the paper",
        "",
        "| model | train acc (ours) | test acc (ours, mean ± std over folds) | macro-F1 (ours) "
        "| params | ms/image | folds | published train acc | published test acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in order:
        r, pub = results[key], PUBLISHED.get(key)
        ms = r.get("ms_per_image")
        lines.append("| " + " | ".join([
            _model_label(key, r),
            _pct(r.get("train_acc_mean")),
            _mean_std(r, "acc"),
            _mean_std(r, "f1"),
            _params(r.get("n_params")),
            DASH if ms is None else f"{ms:.2f}",
            _folds_cell(r, n_folds),
            DASH if pub is None else _pct(pub.get("train_acc"), 0),
            _published_test(pub),
        ]) + " |")

    group = PROTOCOLS.get(protocol, protocol)
    if protocol in PROTOCOLS:
        group = f"{n_folds}-fold stratified CV on the manifest folds ({group})."
    lines += ["", f"**Protocol:** {group} Every model is scored on the same held-out images; "
              "the published columns are the paper's figures, not ours.", ""]

    lines += ["## CNN vs pruned CNN (paired over folds)", ""]
    if paired is None:
        lines.append("Not available: the CNN or the pruned CNN has no results.")
    else:
        lines.append(paired["verdict"])
        p_t, p_w = paired.get("t_pvalue"), paired.get("wilcoxon_pvalue")
        lines += ["", f"- paired t-test p: {DASH if p_t is None else f'{p_t:.3g}'}"
                  + ("" if p_t is not None else f" ({paired.get('t_reason')})"),
                  f"- Wilcoxon signed-rank p: {DASH if p_w is None else f'{p_w:.3g}'}"
                  + ("" if p_w is not None else f" ({paired.get('wilcoxon_reason')})"),
                  "- per-fold difference (points): " + (", ".join(
                      f"fold {k}: {100 * d:+.1f}" for k, d in paired.get("diffs", {}).items())
                      or DASH)]
    removed = results.get("pruned", {}).get("neurons_removed")
    if removed:
        lines.append("- neurons removed by pruning: "
                     + ", ".join(f"{layer}: {n}" for layer, n in removed.items()))
    lines.append("")

    resnets = [k for k in order if k.startswith("resnet")]
    if resnets or weights_note:
        lines += ["## ResNet weights and folds", ""]
        random_init = [MODEL_NAMES.get(k, k) for k in resnets
                       if results[k].get("weights") == "random"]
        if random_init:
            lines.append(f"> **WARNING: {', '.join(random_init)} trained from RANDOM "
                         "initialisation — this is NOT transfer learning; these numbers are not "
                         "comparable with ImageNet-pretrained ResNets.**")
            lines.append("")
        for k in resnets:
            w = results[k].get("weights")
            lines.append(f"- {MODEL_NAMES.get(k, k)}: weights = {w or 'not recorded'}; scored "
                         f"only on the folds it was trained on: {_folds_cell(results[k], n_folds)}"
                         ". The paper used a single split, so its std is not comparable.")
        if weights_note:
            lines.append(f"- {weights_note}")
        lines.append("")

    lines += ["## Leakage checks", ""]
    total = int(twins.get("total", 0))
    if total:
        per = ", ".join(f"fold {k}: {n}" for k, n in twins.get("per_fold", {}).items())
        ex = ", ".join(f"{v}↔{t}" for v, t in twins.get("examples", []))
        lines.append(f"> **WARNING: {total} validation image(s) have a byte-identical twin in "
                     f"their fold's training part** ({per}; e.g. manifest rows {ex}). Those "
                     "images are scored on data the model was trained on.")
    else:
        lines.append("No validation image has a byte-identical twin (same SHA-1) in its "
                     "training part. Near-duplicate frames are not caught by this check.")
    high = [k for k in order if (results[k].get("acc_mean") or 0) > LEAKAGE_ACC]
    if high:
        names = ", ".join(f"{MODEL_NAMES.get(k, k)} ({_pct(results[k]['acc_mean'])})"
                          for k in high)
        lines += ["", f"> **LEAKAGE CAUTION:** {names} above {LEAKAGE_ACC:.0%} mean accuracy. "
                  "Published 5-fold SFEW results are 31–46%; figures this high usually mean "
                  "frames of one clip or person sit on both sides of the split."]
    lines.append("")

    recall_models = [k for k in order if results[k].get("recall")]
    if recall_models:
        lines += ["## Per-class recall (pooled over evaluated folds)", "",
                  "| model | " + " | ".join(class_names) + " |",
                  "|---|" + "---|" * len(class_names)]
        for k in recall_models:
            rec = results[k]["recall"]
            lines.append(f"| {MODEL_NAMES.get(k, k)} | "
                         + " | ".join(_pct(rec.get(c)) for c in class_names) + " |")
        lines.append("")

    lines += ["## Published figures (sources)", ""]
    for k in order:
        if k in PUBLISHED:
            pub = PUBLISHED[k]
            figures = pub.get("note") or (f"train {_pct(pub['train_acc'], 0)}, "
                                          f"test {_published_test(pub)}")
            lines.append(f"- {MODEL_NAMES[k]}: published {pub['label']}: {figures} — "
                         f"{pub['source']}")
    lines += [f"- published: {s}" for s in PUBLISHED_OTHER]
    lines.append(f"- chance level for {len(class_names)} classes: {1 / len(class_names):.1%}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Plots and DVC rows


def confusion_figure(cm: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """(C, C) counts, rows = true class: colour = row-normalised rate, text = count."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    rate = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="fraction of true class")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if rate[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def accuracy_bars(results: Mapping[str, Mapping[str, Any]], n_classes: int = 7) -> Figure:
    """Mean accuracy per model ± std over folds, each fold as a dot, published test acc as x."""
    order = [k for k in _order(results) if results[k].get("acc_mean") is not None]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(order) + 2), 4))
    x = np.arange(len(order))
    labelled: set[str] = set()  # one legend entry per marker kind

    def once(name: str) -> str | None:
        first = name not in labelled
        labelled.add(name)
        return name if first else None

    ax.bar(x, [results[k]["acc_mean"] for k in order],
           yerr=[results[k].get("acc_std") or 0 for k in order], capsize=4, color="#4c72b0",
           alpha=0.8, label="ours (mean ± std)")
    for i, k in enumerate(order):
        pts = list(results[k].get("acc_by_fold", {}).values())
        if pts:  # spread the dots a little so equal folds stay visible
            ax.scatter(i + np.linspace(-0.15, 0.15, len(pts)), pts, color="black", s=12,
                       zorder=3, label=once("folds"))
        pub = PUBLISHED.get(k, {}).get("test_acc")
        if pub is not None:
            ax.scatter([i], [pub], marker="x", color="#c44e52", s=50, zorder=4,
                       label=once("published test acc"))
    ax.axhline(1 / n_classes, color="grey", linestyle="--", label=f"chance (1/{n_classes})")
    ax.set_xticks(x, [_model_label(k, results[k]) for k in order], rotation=20, ha="right")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Accuracy over the manifest folds")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_rows(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
                   ) -> list[dict[str, str]]:
    """(M,) true and predicted class ids -> one {"actual", "predicted"} row per prediction."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ")
    return [{"actual": class_names[t], "predicted": class_names[p]}
            for t, p in zip(y_true.tolist(), y_pred.tolist())]

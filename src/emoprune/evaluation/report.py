"""The comparison report (reports/evaluate/comparison.md): our models beside the paper's figures.

Accuracies are fractions in [0, 1] throughout; the report renders them as percentages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from emoprune.evaluation.statistics import ALPHA, plateau_bar

LEAKAGE_ACC = 0.60  # 5-fold SFEW accuracies far above this point to train/validation leakage


DASH = "–"


# The paper's results table (fractions). ``test_range``/``note`` carry figures that are not a
# single number, so nothing is invented where the paper only shows a curve.
PUBLISHED: dict[str, dict[str, Any]] = {
    "mlp": {
        "label": "PCA (LPQ+PHOG) + neural network",
        "train_acc": None,
        "test_acc": None,
        # Not the paper's: other course reports on the same frames (the paper gives no number).
        "test_range": (0.28, 0.32),
        "note": "no number in the paper (its table shows only a loss curve, below the CNN); "
        "28–32% is what other course reports got with an MLP on the 10 PCA features",
        "source": "paper, results table (loss curve only); 28–32%: other course reports",
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
        "best_epoch": True,
    },
    "resnet34": {
        "label": "ResNet34 (single split, 25 epochs)",
        "train_acc": 0.99,
        "test_acc": 0.31,
        "source": "paper, results table: ResNet34, single split, 25 epochs",
        "best_epoch": True,
    },
    "resnet50": {
        "label": "ResNet50 (single split, 25 epochs)",
        "train_acc": 0.99,
        "test_acc": 0.34,
        "source": "paper, results table: ResNet50, single split, 25 epochs",
        "best_epoch": True,
    },
}


# Published reference points that are not one of our models.
PUBLISHED_OTHER: tuple[str, ...] = (
    "Dhall et al. 2011, LPQ / PHOG with an RBF SVM: 43.7% / 46.3% (5-fold, not person-independent)",
    "SFEW strict person-independent baseline: 19.0%",
)


MODEL_NAMES = {
    "mlp": "PCA + MLP",
    "cnn": "CNN",
    "pruned": "CNN + pruning",
    "random": "CNN + random removal (equal size)",
    "magnitude": "CNN + magnitude removal (equal size)",
    "resnet18": "ResNet18",
    "resnet34": "ResNet34",
    "resnet50": "ResNet50",
}


# The equal-size controls: reported in the pruning section's own table, not beside the paper.
CONTROLS = ("random", "magnitude")

# The paired comparisons evaluate makes: key -> (model a, model b); differences are b - a.
COMPARISONS = {
    "vs_cnn": ("cnn", "pruned"),
    "vs_random": ("random", "pruned"),
    "vs_magnitude": ("magnitude", "pruned"),
}

PROTOCOLS = {
    "none": "cv.group_by=none: frames of one clip may sit in different folds, so near-duplicate "
    "frames can leak between training and validation",
    "clip": "cv.group_by=clip: all frames of a clip sit in the same fold",
}


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
        return _pct(pub["test_acc"], 0) + (" ¹" if pub.get("best_epoch") else "")
    if pub.get("test_range") is not None:
        lo, hi = pub["test_range"]
        return f"none in the paper ({100 * lo:.0f}–{100 * hi:.0f}%: other course reports)"
    return DASH


def model_label(key: str, r: Mapping[str, Any]) -> str:
    label = MODEL_NAMES.get(key, key)
    weights = r.get("weights")
    if key.startswith("resnet"):
        label += {"imagenet": " (ImageNet weights)", "random": " (random init)"}.get(
            weights, " (weights not recorded)" if weights is None else f" ({weights})"
        )
    return label


def _folds_cell(r: Mapping[str, Any], n_folds: int) -> str:
    fs = r.get("folds")
    if not fs:
        return DASH
    return (
        f"{len(fs)}/{n_folds}"
        if len(fs) == n_folds
        else f"{len(fs)}/{n_folds} ({', '.join(str(k) for k in fs)})"
    )


def model_order(results: Mapping[str, Any]) -> list[str]:
    known = [k for k in PUBLISHED if k in results]
    return known + [k for k in results if k not in PUBLISHED]


def _ms(key: str, r: Mapping[str, Any]) -> str:
    ms = r.get("ms_per_image")
    if ms is None:
        return DASH
    if key == "pruned" and r.get("unchanged"):
        return "= CNN (unchanged)"
    if "ms_q25" in r:
        return f"{ms:.2f} ({r['ms_q25']:.2f}–{r['ms_q75']:.2f})"
    return f"{ms:.2f}"


def _p(p: float | None) -> str:
    return DASH if p is None else f"{p:.3g}"


def which_test(paired: Mapping[str, Any]) -> list[str]:
    """Why the corrected resampled t-test carries the verdict, and what the design can show."""
    n, floor = paired.get("n", 0), paired.get("wilcoxon_floor", 1.0)
    # K of the K-fold CV from n_test/n_train = 1/(K-1): the n folds may span several repeats.
    fraction = paired.get("test_fraction") or 1 / max(n - 1, 1)
    k = round(1 + 1 / fraction)
    lines = [
        "Which test carries the verdict: the corrected resampled t-test of Nadeau and Bengio "
        f"(2003), over the {n} held-out folds. Their training sets overlap (two folds of one "
        f"{k}-fold split share {max(k - 2, 0)} of their {max(k - 1, 0)} training folds), so "
        "the per-fold differences are not independent and the plain paired t-test, which "
        "assumes they are, gives p-values that are too small; the correction widens the "
        f"variance by n_test/n_train ({paired.get('test_fraction', 0):.3g}). The plain t-test "
        "and the Wilcoxon test are shown for reference only."
    ]
    if floor >= ALPHA:
        nonzero = sum(1 for d in paired.get("diffs", {}).values() if d != 0)
        which = f"{n} folds" + (f" ({nonzero} with a non-zero difference)" if nonzero < n else "")
        lines.append(
            f"With {which} the Wilcoxon signed-rank test cannot reach p < {ALPHA}: its "
            f"smallest possible p, every fold differing the same way, is {floor:.4g}. A "
            "Wilcoxon p above the bar here says nothing either way; more folds or repeats "
            "(cv.folds, cv.repeats) would let it speak."
        )
    return lines


def _removed(layer: str, n: Any) -> str:
    if not isinstance(n, Mapping):
        return f"{layer}: {n}"
    per = ", ".join(str(v) for v in n.get("per_fold", []))
    return f"{layer}: {n['mean']:g} of {n['of']} (mean over folds; per fold {per})"


def pruning_section(pruning: Mapping[str, Any], removed: Mapping[str, Any] | None) -> list[str]:
    """What pruning did and how it was set up, and why those are the defaults."""
    layers = ", ".join(pruning["layers"])
    lines = [
        "## Pruning settings",
        "",
        f"- layer(s): {layers}; neuron vectors: {pruning['mode']}; threshold "
        f"{pruning['threshold']:g}° (similar below it, complementary above "
        f"{180 - pruning['threshold']:g}°, {pruning['complementary']})",
        f"- resumed from train_cnn's epoch {pruning['start_epoch']}, a check every "
        f"{pruning['every']} epoch(s), trained to the same budget of {pruning['epochs']} epochs",
        "- neurons removed: "
        + ("; ".join(_removed(la, n) for la, n in removed.items()) if removed else "none"),
        "- why fc1: the paper's logged pruned ids (152, 157, 190, 231) cannot exist in fc2's 128 "
        "units, so it pruned the 512 units after fc1, whose vectors are columns of fc2's weights. "
        'Its text says "second hidden layer", which fits if the flattened conv output counts '
        "as the first.",
        "- a similar merge adds the removed unit's outgoing weights to its twin's; with "
        "output-weight angles that keeps the output only if the two units' activations are "
        "equal, so the pruned CNN is retrained to the end of the budget after every check.",
        "",
    ]
    return lines


def _left(r: Mapping[str, Any]) -> str:
    removed = r.get("neurons_removed")
    if not removed:
        return DASH
    return "; ".join(
        f"{layer}: {n['of'] - n['mean']:g} of {n['of']}"
        if isinstance(n, Mapping)
        else f"{layer}: {n} removed"
        for layer, n in removed.items()
    )


def _p_cell(paired: Mapping[str, Any], key: str) -> str:
    p = paired.get(key)
    return _p(p) if p is not None else f"{DASH} ({paired.get(key.replace('pvalue', 'reason'))})"


def repeats_section(results: Mapping[str, Mapping[str, Any]], order: Sequence[str]) -> list[str]:
    """With repeated K-fold: each model's mean accuracy per repeat (``by_repeat``)."""
    shown = [k for k in (*order, *CONTROLS) if results.get(k, {}).get("by_repeat")]
    if not shown:
        return []
    reps = sorted({int(r) for k in shown for r in results[k]["by_repeat"]})
    lines = [
        "## Per repeat (mean test accuracy over each repeat's folds)",
        "",
        "| model | " + " | ".join(f"repeat {r}" for r in reps) + " |",
        "|---|" + "---|" * len(reps),
    ]
    for k in shown:
        by = {int(r): m for r, m in results[k]["by_repeat"].items()}
        cells = [_pct(by[r]["acc_mean"]) if r in by else DASH for r in reps]
        lines.append(f"| {model_label(k, results[k])} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _split_name(k: Any, n_folds: int, n: int) -> str:
    """Split k as "fold f" (one repeat) or "r<repeat>f<fold>" (repeated K-fold)."""
    k = int(k)
    return f"fold {k}" if n <= n_folds else f"r{k // n_folds}f{k % n_folds}"


def comparisons_section(
    results: Mapping[str, Mapping[str, Any]], comparisons: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """The CNN, the distinctiveness-pruned CNN and its equal-size controls in one table, then
    each paired comparison: effect in points, corrected p, a verdict no stronger than the test.
    """
    lines = ["## Does pruning help, and does the choice of neurons matter?", ""]
    models = [k for k in ("cnn", "pruned", *CONTROLS) if k in results]
    if "pruned" not in results or not comparisons:
        return [*lines, "Not available: the CNN or the pruned CNN has no results.", ""]
    lines += [
        "The controls start from the same checkpoint and train with the same seeds and "
        "batches as distinctiveness pruning, and lose as many live neurons of the same layer "
        "after the same epochs on every fold: `random` picks them uniformly, `magnitude` "
        "takes the smallest outgoing-weight norms. Only which neurons go differs (and "
        "distinctiveness merges a removed unit's weights into its twin).",
        "",
        "| model | test acc (mean ± std) | macro-F1 | neurons left (mean) | params |",
        "|---|---|---|---|---|",
    ]
    for k in models:
        r = results[k]
        lines.append(
            f"| {model_label(k, r)} | {_mean_std(r, 'acc')} | {_mean_std(r, 'f1')} "
            f"| {_left(r)} | {_params(r.get('n_params'))} |"
        )
    lines += [
        "",
        "| comparison | effect, points (95% interval) | corrected t-test p | plain t-test p "
        "| Wilcoxon p | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for key, c in comparisons.items():
        a, b = COMPARISONS.get(key, (c["name_a"], c["name_b"]))
        effect = DASH if c.get("mean_diff") is None else f"{100 * c['mean_diff']:+.1f}"
        if c.get("interval_95"):
            low, high = c["interval_95"]
            effect += f" ({100 * low:+.1f} to {100 * high:+.1f})"
        lines.append(
            f"| {MODEL_NAMES.get(b, b)} vs {MODEL_NAMES.get(a, a)} | {effect} "
            f"| {_p_cell(c, 'corrected_pvalue')} | {_p_cell(c, 't_pvalue')} "
            f"| {_p_cell(c, 'wilcoxon_pvalue')} | {c['verdict']} |"
        )
    first = next(iter(comparisons.values()))
    lines += [
        "",
        "Effect: mean over folds of the first model's accuracy minus the second's; the interval "
        "is its 95% confidence interval with the corrected t-test's variance, the range of "
        "differences these folds cannot rule out.",
        "",
    ]
    lines += [*which_test(first), ""]
    for key, c in comparisons.items():
        a, b = COMPARISONS.get(key, (c["name_a"], c["name_b"]))
        diffs = c.get("diffs", {})
        k_folds = round(1 + 1 / (c.get("test_fraction") or 1 / max(len(diffs) - 1, 1)))
        per = (
            ", ".join(
                f"{_split_name(k, k_folds, len(diffs))}: {100 * d:+.1f}" for k, d in diffs.items()
            )
            or DASH
        )
        lines.append(f"- {MODEL_NAMES.get(b, b)} vs {MODEL_NAMES.get(a, a)}, per fold: {per}")
    lines.append("")
    return lines


def comparison_markdown(
    results: Mapping[str, Mapping[str, Any]],
    *,
    protocol: str,
    n_folds: int,
    comparisons: Mapping[str, Mapping[str, Any]] | None,
    weights_note: str | None,
    twins: Mapping[str, Any],
    class_names: Sequence[str],
    pruning: Mapping[str, Any] | None = None,
    generated_sample: bool = False,
    repeats: int = 1,
) -> str:
    """A markdown report: our results beside the paper's, then the caveats needed to read them.

    ``results[model]`` holds acc_mean, acc_std, f1_mean, f1_std, folds and optionally
    train_acc_mean, n_params, ms_per_image, weights, neurons_removed, recall. ``protocol`` is
    the ``cv.group_by`` value ("none"/"clip") or a ready-made sentence. ``comparisons`` are
    ``paired_comparison`` results keyed as ``COMPARISONS``; ``n_folds`` counts the held-out
    folds of all ``repeats`` (cv.repeats). Missing values render as "–".
    """
    order = [k for k in model_order(results) if k not in CONTROLS]
    lines = ["# Results beside the paper", ""]
    if generated_sample:
        lines += [
            "> **Ran on the generated sample, not on SFEW.** These numbers show that the "
            "pipeline works end to end; they say nothing about facial expressions. Put your SFEW "
            "copy in data/raw for real results.",
            "",
        ]
    lines += [
        "| model | train acc (ours) | test acc (ours, mean ± std over folds) | macro-F1 (ours) "
        "| params | ms/image | folds | published train acc | published test acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in order:
        r, pub = results[key], PUBLISHED.get(key)
        lines.append(
            "| "
            + " | ".join(
                [
                    model_label(key, r) + (" ⚠" if r.get("plateau_folds") else ""),
                    _pct(r.get("train_acc_mean")),
                    _mean_std(r, "acc"),
                    _mean_std(r, "f1"),
                    _params(r.get("n_params")),
                    _ms(key, r),
                    _folds_cell(r, n_folds),
                    DASH if pub is None else _pct(pub.get("train_acc"), 0),
                    _published_test(pub),
                ]
            )
            + " |"
        )

    lines += [
        "",
        "ms/image: median (quartiles) of batch-1 CPU inference on one thread; the CNN and the "
        "shrunk pruned CNN of every fold are timed back to back in one process.",
        "¹ The paper's ResNet figures are each run's best epoch on its test split (its appendix "
        'prints "Best val Acc"; their last epochs were 31.1%, 30.0% and 30.8%); every figure '
        "of ours is the last epoch.",
    ]
    plateau = [k for k in order if results[k].get("plateau_folds")]
    for k in plateau:
        folds = ", ".join(str(f) for f in results[k]["plateau_folds"])
        bar = plateau_bar(len(class_names))
        lines.append(
            f"⚠ {MODEL_NAMES.get(k, k)}: fold(s) {folds} ended training below twice chance "
            f"({bar:.1%} train acc): the network never left its initial plateau there. "
            "Those folds are counted in the mean, not dropped or re-run."
        )

    group = PROTOCOLS.get(protocol, protocol)
    if protocol in PROTOCOLS and repeats > 1:
        group = (
            f"{n_folds // repeats}-fold stratified CV repeated {repeats} times, each repeat "
            f"with its own shuffle (seed cv.seed + repeat): {n_folds} held-out folds, every "
            f"image held out once per repeat ({group})."
        )
    elif protocol in PROTOCOLS:
        group = f"{n_folds}-fold stratified CV on the manifest folds ({group})."
    lines += [
        "",
        f"**Protocol:** {group} Every model is scored on the same held-out images; "
        "the published columns are the paper's figures, not ours.",
        "",
    ]

    lines += repeats_section(results, order)
    lines += comparisons_section(results, comparisons or {})
    removed = results.get("pruned", {}).get("neurons_removed")
    if pruning is not None:
        lines += pruning_section(pruning, removed)

    resnets = [k for k in order if k.startswith("resnet")]
    if resnets or weights_note:
        lines += ["## ResNet weights and folds", ""]
        random_init = [
            MODEL_NAMES.get(k, k) for k in resnets if results[k].get("weights") == "random"
        ]
        if random_init:
            lines.append(
                f"> **WARNING: {', '.join(random_init)} trained from RANDOM "
                "initialisation — this is NOT transfer learning; these numbers are not "
                "comparable with ImageNet-pretrained ResNets.**"
            )
            lines.append("")
        for k in resnets:
            w = results[k].get("weights")
            lines.append(
                f"- {MODEL_NAMES.get(k, k)}: weights = {w or 'not recorded'}; scored "
                f"only on the folds it was trained on: {_folds_cell(results[k], n_folds)}"
                ". The paper used a single split, so its std is not comparable."
            )
        if weights_note:
            lines.append(f"- {weights_note}")
        lines.append("")

    lines += ["## Leakage checks", ""]
    total = int(twins.get("total", 0))
    if total:
        per = ", ".join(f"fold {k}: {n}" for k, n in twins.get("per_fold", {}).items())
        ex = ", ".join(f"{v}↔{t}" for v, t in twins.get("examples", []))
        lines.append(
            f"> **WARNING: {total} validation image(s) have a byte-identical twin in "
            f"their fold's training part** ({per}; e.g. manifest rows {ex}). Those "
            "images are scored on data the model was trained on."
        )
    else:
        lines.append(
            "No validation image has a byte-identical twin (same SHA-1) in its "
            "training part. Near-duplicate frames are not caught by this check."
        )
    high = [k for k in order if (results[k].get("acc_mean") or 0) > LEAKAGE_ACC]
    if high:
        names = ", ".join(f"{MODEL_NAMES.get(k, k)} ({_pct(results[k]['acc_mean'])})" for k in high)
        lines += [
            "",
            f"> **LEAKAGE CAUTION:** {names} above {LEAKAGE_ACC:.0%} mean accuracy. "
            "Published 5-fold SFEW results are 31–46%; figures this high usually mean "
            "frames of one clip or person sit on both sides of the split.",
        ]
    lines.append("")

    recall_models = [k for k in order if results[k].get("recall")]
    if recall_models:
        lines += [
            "## Per-class recall (pooled over evaluated folds)",
            "",
            "| model | " + " | ".join(class_names) + " |",
            "|---|" + "---|" * len(class_names),
        ]
        for k in recall_models:
            rec = results[k]["recall"]
            lines.append(
                f"| {MODEL_NAMES.get(k, k)} | "
                + " | ".join(_pct(rec.get(c)) for c in class_names)
                + " |"
            )
        lines.append("")

    lines += ["## Published figures (sources)", ""]
    for k in order:
        if k in PUBLISHED:
            pub = PUBLISHED[k]
            figures = pub.get("note") or (
                f"train {_pct(pub['train_acc'], 0)}, test {_published_test(pub)}"
            )
            lines.append(
                f"- {MODEL_NAMES[k]}: published {pub['label']}: {figures} — {pub['source']}"
            )
    lines += [f"- published: {s}" for s in PUBLISHED_OTHER]
    lines.append(f"- chance level for {len(class_names)} classes: {1 / len(class_names):.1%}")
    return "\n".join(lines) + "\n"

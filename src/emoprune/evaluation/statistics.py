"""Statistics across folds: mean and spread, fold-mean curves, and the paired comparison."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

ALPHA = 0.05  # evidence bar of the paired tests, stated in every verdict


def sample_std(values: Sequence[float]) -> float:
    # ddof=1: folds are a sample of possible splits; one fold has no spread to estimate.
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample std (ddof=1; 0 for a single fold) of per-fold values."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def summarise(per_fold: Mapping[int, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """{fold: {metric: value}} -> {metric: {"mean", "std"}} over the folds."""
    keys = next(iter(per_fold.values())).keys()
    return {key: mean_std([m[key] for m in per_fold.values()]) for key in keys}


def mean_rows(
    rows: Sequence[Mapping[str, float]], by: str = "epoch", exclude: Sequence[str] = ("fold",)
) -> list[dict[str, float]]:
    """Average rows sharing ``by`` (e.g. one row per fold and epoch -> one per epoch)."""
    groups: dict[float, list[Mapping[str, float]]] = {}
    for row in rows:
        groups.setdefault(row[by], []).append(row)
    out = []
    for key in sorted(groups):
        group = groups[key]
        numeric = [
            c
            for c, v in group[0].items()
            if c != by
            and c not in exclude
            and isinstance(v, int | float | None)
            and not isinstance(v, bool)
        ]
        out.append(
            {
                by: key,
                **{
                    c: float(np.mean([g[c] for g in group if g.get(c) is not None]))
                    for c in numeric
                    if any(g.get(c) is not None for g in group)
                },
            }
        )
    return out


def corrected_ttest(diffs: Sequence[float], test_fraction: float) -> tuple[float, float] | None:
    """Nadeau and Bengio's corrected resampled t-test of mean(diffs) = 0: (t, two-sided p).

    ``diffs`` are (J,) per-split score differences of two models over J train/test splits
    whose training sets overlap (K-fold CV: J = K). The plain paired t-test divides the
    variance by J as if the splits were independent, which they are not, so its p-values are
    too small; the correction uses (1/J + n_test/n_train) * s^2 instead of s^2/J, with
    ``test_fraction`` = n_test/n_train (1/(K-1) for K-fold), and J - 1 degrees of freedom.
    None when undefined (J < 2 or no variance).
    """
    # Imported here, not at the top: scipy.stats takes ~0.4 s to import and only the paired
    # tests need it, so the stages that merely summarise or plot (ingest, features) skip it.
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    if len(d) < 2 or np.ptp(d) < 1e-12:
        return None
    t = float(d.mean() / np.sqrt((1 / len(d) + test_fraction) * d.var(ddof=1)))
    return t, float(2 * stats.t.sf(abs(t), df=len(d) - 1))


def corrected_interval(
    diffs: Sequence[float], test_fraction: float, level: float = 0.95
) -> tuple[float, float]:
    """The ``level`` confidence interval of mean(diffs) with the corrected resampled t-test's
    variance (``corrected_ttest``): mean +- t_(J-1) * sqrt((1/J + test_fraction) * s^2) for
    J = len(diffs) >= 2. A point (mean, mean) when the differences do not vary."""
    from scipy import stats  # here, not at the top: see corrected_ttest

    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        raise ValueError(f"an interval needs at least 2 differences, got {len(d)}")
    half = stats.t.ppf(0.5 + level / 2, df=len(d) - 1) * np.sqrt(
        (1 / len(d) + test_fraction) * d.var(ddof=1)
    )
    return float(d.mean() - half), float(d.mean() + half)


def wilcoxon_floor(n_nonzero: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give with
    ``n_nonzero`` non-zero differences (all of one sign): 2 / 2^n. With 5 folds, 0.0625."""
    return min(1.0, 2.0 / 2**n_nonzero)


def paired_comparison(
    a: Mapping[int, float],
    b: Mapping[int, float],
    name_a: str,
    name_b: str,
    *,
    metric: str = "accuracy",
    test_fraction: float | None = None,
) -> dict[str, Any]:
    """Compare two models' per-fold scores (fractions) on the folds they share.

    Differences are ``b - a``. Returns n, folds, diffs, mean_diff and its 95% interval
    (``interval_95``, from ``corrected_interval``; None where the corrected test is undefined);
    the p-values of the corrected resampled t-test (``corrected_pvalue``, the one the
    ``verdict`` rests on), the plain paired t-test and the Wilcoxon signed-rank test (None with
    a ``*_reason`` when undefined); ``wilcoxon_floor``, the smallest p the Wilcoxon test could
    reach here; and a one-sentence ``verdict`` with p < 0.05 as its evidence bar.
    ``test_fraction`` is n_test/n_train of one split (default 1/(n - 1), K-fold CV over all its
    folds).
    """
    from scipy import stats  # here, not at the top: see corrected_ttest

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
    fraction = test_fraction if test_fraction is not None else 1 / max(n - 1, 1)
    corrected = corrected_ttest(diffs, fraction) if n >= 2 else None
    c_reason = None
    if corrected is None:
        c_reason = t_reason or "needs at least 2 common folds"
    floor = wilcoxon_floor(int(np.count_nonzero(diffs))) if n else 1.0
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
        "wilcoxon_floor": floor,
        "corrected_t": None if corrected is None else corrected[0],
        "corrected_pvalue": None if corrected is None else corrected[1],
        "corrected_reason": c_reason,
        # Where the corrected test is defined: how large a difference these folds leave open.
        "interval_95": None if corrected is None else list(corrected_interval(diffs, fraction)),
        "test_fraction": fraction,
        "alpha": ALPHA,
        "verdict": _verdict(
            name_a, name_b, metric, n, mean_diff, None if corrected is None else corrected[1], diffs
        ),
    }


def _verdict(
    name_a: str,
    name_b: str,
    metric: str,
    n: int,
    mean_diff: float | None,
    t_p: float | None,
    diffs: np.ndarray,
) -> str:
    if n == 0 or mean_diff is None:
        return f"{name_a} and {name_b} share no evaluated folds: nothing to compare."
    lead = (
        f"With {n} fold{'s' if n != 1 else ''}, the {name_b}'s {metric} differs from the "
        f"{name_a}'s by {100 * mean_diff:+.1f} points"
    )
    if n < 3:
        return (
            f"{lead}, but {n} fold{'s are' if n != 1 else ' is'} too few for a paired test "
            "to be meaningful: no conclusion."
        )
    if not np.any(diffs):
        return f"{lead} (identical on every fold): no difference."
    if t_p is None:
        return (
            f"{lead} (the same on every fold, so the t-test is undefined): "
            "too little variation to judge."
        )
    if t_p < ALPHA:
        direction = "higher" if mean_diff > 0 else "lower"
        return (
            f"{lead} (corrected resampled t-test p = {t_p:.2g} < {ALPHA}): evidence that the "
            f"{name_b} scores {direction} than the {name_a} on these folds."
        )
    return (
        f"{lead} (corrected resampled t-test p = {t_p:.2g}, evidence bar p < {ALPHA}): "
        f"no evidence of a difference between the {name_b} and the {name_a}."
    )


PLATEAU_FACTOR = 2  # final training accuracy below this many times chance: the fold never learnt


def plateau_folds(per_fold: Mapping[int, Mapping[str, Any]], n_classes: int) -> list[int]:
    """Folds whose final training accuracy is below twice chance (2 / n_classes).

    Such a fold stayed on the initial plateau (a sigmoid net under a poor init can sit at
    loss ln C for hundreds of steps). It is flagged, never dropped, reseeded or re-run: its
    validation score still counts in the mean, and the flag says why that mean is low.
    """
    return [k for k, m in per_fold.items() if m["train_acc"] < plateau_bar(n_classes)]


def plateau_bar(n_classes: int) -> float:
    """Twice chance; for very few classes, at most halfway from chance to perfect (with 2
    classes twice chance would be 100%)."""
    chance = 1 / n_classes
    return min(PLATEAU_FACTOR * chance, (chance + 1) / 2)

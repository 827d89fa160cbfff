"""Scoring, paired comparison, leakage check, report and plots of the evaluate stage."""

from __future__ import annotations

import io

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score

from emoprune.evaluation.figures import accuracy_bars, angle_traces, close, confusion_figure
from emoprune.evaluation.leakage import duplicate_twins
from emoprune.evaluation.report import comparison_markdown, which_test
from emoprune.evaluation.scores import (
    confusion_matrix,
    confusion_rows,
    fold_scores,
    macro_f1,
    pooled_predictions,
    proba_from_npz,
)
from emoprune.evaluation.statistics import (
    corrected_interval,
    corrected_ttest,
    paired_comparison,
    wilcoxon_floor,
)

CLASSES = ["A", "B", "C"]


def one_hot(pred, n=3):
    """Probabilities whose argmax is ``pred``."""
    p = np.full((len(pred), n), 0.1)
    p[np.arange(len(pred)), pred] = 0.8
    return p


def val_splits(folds) -> dict[int, np.ndarray]:
    """{fold: validation indices} of one repeat's (N,) fold ids, as Folds.val_splits gives."""
    folds = np.asarray(folds)
    return {int(k): np.flatnonzero(folds == k) for k in np.unique(folds)}


@pytest.fixture
def case():
    # Folds interleaved on purpose: rows must follow the split's indices, not blocks.
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    splits = val_splits([0, 1, 0, 1, 0, 1, 0, 1])
    proba = {0: one_hot([0, 1, 0, 0]), 1: one_hot([0, 0, 2, 2])}
    return labels, splits, proba


def test_fold_scores_hand_made(case):
    labels, splits, proba = case
    s = fold_scores(proba, labels, splits, 3, CLASSES, model="cnn")
    # fold 0: true 0,1,2,0 pred 0,1,0,0 -> 3/4; fold 1: true 0,1,2,1 pred 0,0,2,2 -> 2/4
    assert s["acc_by_fold"] == {0: 0.75, 1: 0.5}
    assert s["folds"] == [0, 1]
    assert s["acc_mean"] == pytest.approx(0.625)
    assert s["acc_std"] == pytest.approx(np.std([0.75, 0.5], ddof=1))  # 0.1768, not 0.125
    assert s["acc_std"] == pytest.approx(0.17677, abs=1e-4)
    f1_0 = f1_score([0, 1, 2, 0], [0, 1, 0, 0], average="macro", labels=[0, 1, 2], zero_division=0)
    assert s["f1_by_fold"][0] == pytest.approx(f1_0)
    assert s["f1_mean"] == pytest.approx(np.mean(list(s["f1_by_fold"].values())))
    # pooled: true 0 -> [0,0,0]; true 1 -> [1,0,2]; true 2 -> [0,2]
    assert s["confusion"] == [[3, 0, 0], [1, 1, 1], [1, 0, 1]]
    assert s["recall"] == pytest.approx({"A": 1.0, "B": 1 / 3, "C": 0.5})
    assert s["n"] == 8


@pytest.mark.parametrize("seed", range(20))
def test_confusion_and_macro_f1_equal_sklearn(seed):
    # Small sets over 7 classes, so that some classes are absent or never predicted.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    y_true, y_pred = rng.integers(0, 7, n), rng.integers(0, 7, n)
    y_pred[: n // 2] = y_true[: n // 2]
    labels = list(range(7))
    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred, 7), sk_confusion(y_true, y_pred, labels=labels)
    )
    expected = f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)
    assert macro_f1(y_true, y_pred, 7) == pytest.approx(expected, abs=1e-12)


def test_confusion_matrix_rejects_ids_outside_the_classes():
    with pytest.raises(ValueError, match="y_pred"):
        confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(ValueError, match="y_true"):
        confusion_matrix([-1, 1], [0, 1], 3)


def test_fold_scores_subset_of_folds(case):
    labels, splits, proba = case
    s = fold_scores({0: proba[0]}, labels, splits, 3, CLASSES, model="resnet18")
    assert s["folds"] == [0]
    assert s["acc_mean"] == 0.75 and s["acc_std"] == 0.0
    assert np.sum(s["confusion"]) == 4


def test_fold_scores_wrong_length_names_model_and_fold(case):
    labels, splits, proba = case
    with pytest.raises(ValueError, match=r"resnet34.*fold 1"):
        fold_scores({0: proba[0], 1: proba[1][:3]}, labels, splits, 3, CLASSES, model="resnet34")


def test_fold_scores_a_split_the_manifest_lacks(case):
    labels, splits, proba = case
    with pytest.raises(ValueError, match=r"cnn: fold 7 .* expected \(0, 3\)"):
        fold_scores({7: proba[0]}, labels, splits, 3, CLASSES, model="cnn")
    with pytest.raises(ValueError, match="split 0 indices"):
        fold_scores(proba, labels, {0: np.array([0, 99]), 1: splits[1]}, 3, CLASSES)


def test_fold_scores_two_repeats():
    # 6 images, K = 2, R = 2: split k = r * 2 + f validates on fold f of repeat r.
    labels = np.array([0, 1, 2, 0, 1, 2])
    repeat0, repeat1 = [0, 1, 0, 1, 0, 1], [1, 1, 0, 0, 1, 0]
    splits = {**val_splits(repeat0), **{2 + k: v for k, v in val_splits(repeat1).items()}}
    assert [v.tolist() for v in splits.values()] == [[0, 2, 4], [1, 3, 5], [2, 3, 5], [0, 1, 4]]
    proba = {
        0: one_hot([0, 2, 1]),  # true 0 2 1 -> 3/3
        1: one_hot([1, 1, 2]),  # true 1 0 2 -> 2/3
        2: one_hot([2, 1, 1]),  # true 2 0 2 -> 1/3
        3: one_hot([0, 0, 0]),  # true 0 1 1 -> 1/3
    }
    s = fold_scores(proba, labels, splits, 3, CLASSES, model="cnn")
    assert s["folds"] == [0, 1, 2, 3]
    assert s["acc_by_fold"] == pytest.approx({0: 1.0, 1: 2 / 3, 2: 1 / 3, 3: 1 / 3})
    assert s["n_by_fold"] == {0: 3, 1: 3, 2: 3, 3: 3}
    assert s["n"] == 12  # every image once per repeat
    assert s["acc_mean"] == pytest.approx(7 / 12)
    assert np.sum(s["confusion"]) == 12 and np.sum(s["confusion"], axis=1).tolist() == [4, 4, 4]
    index, y_true, _ = pooled_predictions(proba, labels, splits, 3)
    assert index.tolist() == [0, 2, 4, 1, 3, 5, 2, 3, 5, 0, 1, 4]
    assert np.array_equal(y_true, labels[index])
    # The first repeat alone scores as a single K-fold run would.
    one = fold_scores({0: proba[0], 1: proba[1]}, labels, val_splits(repeat0), 3, CLASSES)
    assert one["acc_by_fold"] == {k: s["acc_by_fold"][k] for k in (0, 1)}


def test_proba_from_npz_keys():
    out = proba_from_npz({"fold2": np.zeros((1, 3)), "fold0": np.ones((2, 3))})
    assert list(out) == [0, 2]


def test_paired_comparison_matches_scipy():
    a = {0: 0.30, 1: 0.35, 2: 0.33, 3: 0.31, 4: 0.36, 9: 0.5}  # fold 9 not shared
    b = {0: 0.32, 1: 0.34, 2: 0.36, 3: 0.35, 4: 0.37}
    r = paired_comparison(a, b, "CNN", "pruned CNN")
    xa, xb = [a[k] for k in range(5)], [b[k] for k in range(5)]
    assert r["n"] == 5 and r["folds"] == [0, 1, 2, 3, 4]
    assert r["mean_diff"] == pytest.approx(np.mean(np.subtract(xb, xa)))
    assert r["diffs"][1] == pytest.approx(-0.01)
    assert r["t_pvalue"] == pytest.approx(stats.ttest_rel(xb, xa).pvalue)
    assert r["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(np.subtract(xb, xa)).pvalue)
    low, high = corrected_interval(np.subtract(xb, xa), 0.25)  # 5 folds: n_test/n_train = 1/4
    assert r["interval_95"] == [pytest.approx(low), pytest.approx(high)]


def test_verdict_not_significant():
    a = {k: v for k, v in enumerate([0.30, 0.35, 0.33, 0.31, 0.36])}
    b = {k: v for k, v in enumerate([0.33, 0.32, 0.35, 0.30, 0.37])}
    r = paired_comparison(a, b, "CNN", "pruned CNN")
    assert r["t_pvalue"] >= 0.05
    v = r["verdict"]
    assert v.startswith("With 5 folds, the pruned CNN's accuracy differs from the CNN's by +0.")
    assert "no evidence" in v and "p < 0.05" in v


def test_verdict_significant():
    a = {k: v for k, v in enumerate([0.30, 0.35, 0.33, 0.31, 0.36])}
    b = {k: v + d for k, (v, d) in enumerate(zip(a.values(), [0.05, 0.06, 0.05, 0.07, 0.06]))}
    r = paired_comparison(a, b, "CNN", "pruned CNN")
    assert r["t_pvalue"] < 0.05
    assert "+5.8 points" in r["verdict"]
    assert "evidence that the pruned CNN scores higher" in r["verdict"]
    assert "no evidence" not in r["verdict"]


def test_verdict_too_few_folds_and_undefined_tests():
    r = paired_comparison({0: 0.3, 1: 0.4}, {0: 0.35, 1: 0.5}, "CNN", "pruned CNN")
    assert r["n"] == 2 and "too few" in r["verdict"]
    one = paired_comparison({0: 0.3}, {0: 0.35}, "CNN", "pruned CNN")
    assert one["t_pvalue"] is None and one["wilcoxon_pvalue"] is None
    assert "2" in one["t_reason"] and "too few" in one["verdict"]
    same = paired_comparison({0: 0.3, 1: 0.4, 2: 0.5}, {0: 0.3, 1: 0.4, 2: 0.5}, "CNN", "pruned")
    assert same["wilcoxon_pvalue"] is None and "zero" in same["wilcoxon_reason"]
    # No interval where the corrected test is undefined.
    assert one["interval_95"] is None and same["interval_95"] is None


def test_duplicate_twins_across_folds_only():
    sha = ["a", "b", "c", "a", "d", "d", "e"]
    folds = np.array([0, 0, 1, 1, 2, 2, 2])  # "a" spans folds 0/1; "d" twice inside fold 2
    t = duplicate_twins(sha, val_splits(folds))
    assert t["per_fold"] == {0: 1, 1: 1, 2: 0}
    assert t["total"] == 2
    assert t["examples"] == [(0, 3), (3, 0)]


def test_duplicate_twins_examples_in_manifest_order_and_capped():
    sha = ["x", "y", "x", "y", "x", "z"]
    folds = [1, 0, 0, 1, 2, 2]
    t = duplicate_twins(sha, val_splits(folds), max_examples=3)
    assert t["per_fold"] == {0: 2, 1: 2, 2: 1} and t["total"] == 5
    # Train twin: the hash's first image outside the validation part.
    assert t["examples"] == [(0, 2), (1, 3), (2, 0)]


def test_duplicate_twins_two_repeats():
    sha = ["a", "b", "c", "a", "d", "d"]
    repeat0 = [0, 0, 1, 1, 2, 2]  # "a" across folds 0/1, "d" inside fold 2
    repeat1 = [0, 1, 2, 0, 1, 2]  # "a" inside fold 0, "d" across folds 1/2
    splits = {**val_splits(repeat0), **{3 + k: v for k, v in val_splits(repeat1).items()}}
    t = duplicate_twins(sha, splits)
    assert t["per_fold"] == {0: 1, 1: 1, 2: 0, 3: 0, 4: 1, 5: 1}
    assert t["total"] == 4  # an image counts once per split it validates in
    assert t["examples"] == [(0, 3), (3, 0), (4, 5), (5, 4)]
    # The first repeat alone gives the single K-fold numbers.
    assert duplicate_twins(sha, val_splits(repeat0))["per_fold"] == {0: 1, 1: 1, 2: 0}


def results():
    return {
        "cnn": {
            "acc_mean": 0.352,
            "acc_std": 0.012,
            "f1_mean": 0.30,
            "f1_std": 0.02,
            "folds": [0, 1, 2, 3, 4],
            "train_acc_mean": 0.99,
            "n_params": 1_234_567,
            "ms_per_image": 0.8,
            "acc_by_fold": dict(enumerate([0.34, 0.35, 0.36, 0.35, 0.36])),
        },
        "pruned": {
            "acc_mean": 0.36,
            "acc_std": 0.01,
            "f1_mean": 0.31,
            "f1_std": 0.02,
            "folds": [0, 1, 2, 3, 4],
            "neurons_removed": {"fc1": 12},
        },
        "resnet18": {
            "acc_mean": 0.72,
            "acc_std": 0.0,
            "f1_mean": 0.7,
            "f1_std": 0.0,
            "folds": [0],
            "weights": "random",
        },
    }


def _markdown(results_, **overrides) -> str:
    """comparison_markdown of ``results_`` for a plain 5-fold run with no byte-identical twins,
    no comparisons and no weights note, but what ``overrides`` sets."""
    kwargs = {
        "protocol": "none",
        "n_folds": 5,
        "comparisons": None,
        "weights_note": None,
        "twins": {"per_fold": {}, "total": 0, "examples": []},
        "class_names": CLASSES,
        **overrides,
    }
    return comparison_markdown(results_, **kwargs)


def test_comparison_markdown():
    paired = paired_comparison({0: 0.3, 1: 0.4}, {0: 0.35, 1: 0.5}, "CNN", "pruned CNN")
    twins = {"per_fold": {0: 2, 1: 0}, "total": 2, "examples": [(3, 10)]}
    md = _markdown(results(), comparisons={"vs_cnn": paired}, twins=twins)
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert "published train acc" in header and "published test acc" in header
    cnn_row = next(line for line in md.splitlines() if line.startswith("| CNN |"))
    cells = [c.strip() for c in cnn_row.strip("|").split("|")]
    assert cells[2] == "35.2 ± 1.2%" and cells[-2:] == ["99%", "35%"]
    pruned_row = next(line for line in md.splitlines() if line.startswith("| CNN + pruning"))
    assert pruned_row.rstrip(" |").endswith("38%")
    assert "| – |" in pruned_row  # no train acc / params recorded
    assert "ResNet18 (random init)" in md and "NOT transfer learning" in md
    assert "1/5 (0)" in md and "72.0% |" in md  # one fold: no "± 0.0"
    assert "LEAKAGE CAUTION" in md and "ResNet18 (72.0%)" in md
    assert "byte-identical twin" in md and "WARNING: 2 validation" in md
    assert "cv.group_by=none" in md and "too few" in md
    assert "43.7%" in md and "19.0%" in md and "fc1: 12" in md


def test_comparison_markdown_clean_run_has_no_warnings():
    r = results()
    r["resnet18"].update(acc_mean=0.33, weights="imagenet")
    md = _markdown(r, protocol="clip", twins={"per_fold": {0: 0}, "total": 0, "examples": []})
    assert "LEAKAGE CAUTION" not in md and "NOT transfer learning" not in md
    assert "WARNING" not in md and "cv.group_by=clip" in md


def test_figures_render_and_confusion_rows(case):
    labels, splits, proba = case
    s = fold_scores(proba, labels, splits, 3, CLASSES)
    for fig in (
        confusion_figure(np.array(s["confusion"]), CLASSES, "cnn"),
        accuracy_bars(results(), n_classes=3),
    ):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.tell() > 1000
        close(fig)
    _, y_true, y_pred = pooled_predictions(proba, labels, splits, 3)
    rows = confusion_rows(y_true, y_pred, CLASSES)
    assert len(rows) == len(labels)
    assert rows[0] == {"actual": "A", "predicted": "A"}
    assert sum(r == {"actual": "B", "predicted": "C"} for r in rows) == 1


def test_report_states_pruning_the_sample_the_plateau_and_the_published_caveats():
    r = results()
    r["mlp"] = {
        "acc_mean": 0.3,
        "acc_std": 0.01,
        "f1_mean": 0.3,
        "f1_std": 0.01,
        "folds": [0, 1, 2, 3, 4],
        "plateau_folds": [],
    }
    r["cnn"].update(ms_per_image=4.0, ms_q25=3.9, ms_q75=4.2, plateau_folds=[3])
    r["pruned"].update(
        ms_per_image=4.4,
        ms_q25=4.3,
        ms_q75=4.6,
        unchanged=False,
        neurons_removed={"fc1": {"mean": 29.2, "of": 512, "per_fold": [14, 6, 30, 64, 32]}},
    )
    pruning = {
        "layers": ["fc1"],
        "mode": "output_weights",
        "threshold": 25.0,
        "complementary": "remove_both",
        "start_epoch": 10,
        "every": 1,
        "epochs": 50,
    }
    md = _markdown(r, class_names=tuple("ABCDEFG"), pruning=pruning, generated_sample=True)
    assert "Ran on the generated sample, not on SFEW" in md
    assert "fc1: 29.2 of 512 (mean over folds; per fold 14, 6, 30, 64, 32)" in md
    assert "threshold 25°" in md and "epoch 10" in md and "budget of 50 epochs" in md
    assert "second hidden layer" in md and "152" in md
    mlp_row = next(line for line in md.splitlines() if line.startswith("| PCA + MLP"))
    assert "none in the paper (28–32%: other course reports)" in mlp_row
    resnet_row = next(line for line in md.splitlines() if line.startswith("| ResNet18"))
    assert resnet_row.rstrip(" |").endswith("33% ¹") and "Best val Acc" in md
    cnn_row = next(line for line in md.splitlines() if line.startswith("| CNN ⚠ |"))
    assert "4.00 (3.90–4.20)" in cnn_row
    assert "⚠ CNN: fold(s) 3 ended training below twice chance (28.6% train acc)" in md


def test_an_unchanged_pruned_network_is_reported_as_such():
    r = results()
    r["pruned"].update(ms_per_image=0.88, ms_q25=0.8, ms_q75=0.9, unchanged=True)
    md = _markdown(r)
    pruned_row = next(line for line in md.splitlines() if line.startswith("| CNN + pruning"))
    assert "= CNN (unchanged)" in pruned_row and "0.88" not in pruned_row
    assert "generated sample" not in md


def test_a_one_layer_angle_plot_keeps_its_whole_title_inside_the_figure():
    rows = [{"epoch": e, "fc1_min_angle": 50 - e, "fc1_max_angle": 120 + e} for e in range(10)]
    fig = angle_traces(rows, title="Pruned CNN (t=25): pairwise angles (mean over folds)")
    fig.canvas.draw()
    box, title = fig.bbox, fig._suptitle.get_window_extent()
    assert box.x0 <= title.x0 and title.x1 <= box.x1 and title.y1 <= box.y1
    assert (
        fig._suptitle.get_text().split()
        == "Pruned CNN (t=25): pairwise angles (mean over folds)".split()
    )
    close(fig)


def test_corrected_ttest_against_a_hand_computed_example():
    # diffs 2, 5, -1, 4, 3 points; 5-fold CV, so n_test/n_train = 1/4.
    # mean 0.026; s^2 = (0.006^2 + 0.024^2 + 0.036^2 + 0.014^2 + 0.004^2) / 4 = 0.00053;
    # corrected variance (1/5 + 1/4) * 0.00053 = 0.0002385; t = 0.026 / sqrt(0.0002385).
    t, p = corrected_ttest([0.02, 0.05, -0.01, 0.04, 0.03], 0.25)
    assert t == pytest.approx(1.68357, rel=1e-5)
    assert p == pytest.approx(2 * stats.t.sf(1.68357, df=4), rel=1e-4)
    plain = stats.ttest_1samp([0.02, 0.05, -0.01, 0.04, 0.03], 0).pvalue
    assert p > plain  # the correction is never less conservative than the plain test
    assert corrected_ttest([0.01, 0.01, 0.01], 0.5) is None  # no variance: undefined
    assert corrected_ttest([0.01], 0.5) is None


def test_corrected_interval_against_the_same_hand_computed_example():
    # The example above: mean 0.026, corrected variance 0.0002385; t_(4, 0.975) = 2.776445.
    low, high = corrected_interval([0.02, 0.05, -0.01, 0.04, 0.03], 0.25)
    half = 2.776445 * 0.0002385**0.5
    assert (low, high) == (pytest.approx(0.026 - half, rel=1e-5), pytest.approx(0.026 + half))
    # The 95% interval holds 0 exactly when the corrected test's p is at least 0.05.
    for diffs in ([0.02, 0.05, -0.01, 0.04, 0.03], [0.05, 0.06, 0.04, 0.07, 0.05]):
        low, high = corrected_interval(diffs, 0.25)
        assert (low < 0 < high) == (corrected_ttest(diffs, 0.25)[1] >= 0.05)
    assert corrected_interval([0.05, 0.06, 0.04, 0.07, 0.05], 0.25)[0] > 0
    # A wider level, a wider interval; no spread, a point.
    assert (
        corrected_interval([0.02, 0.05, -0.01], 0.5, 0.99)[0]
        < corrected_interval([0.02, 0.05, -0.01], 0.5)[0]
    )
    assert corrected_interval([0.01, 0.01, 0.01], 0.5) == (pytest.approx(0.01), pytest.approx(0.01))
    with pytest.raises(ValueError, match="at least 2"):
        corrected_interval([0.01], 0.5)


def test_the_verdict_rests_on_the_corrected_test_and_says_what_5_folds_cannot_show():
    a = {k: v for k, v in enumerate([0.30, 0.35, 0.33, 0.31, 0.36])}
    b = {k: v + d for k, (v, d) in enumerate(zip(a.values(), [0.02, 0.05, -0.01, 0.04, 0.03]))}
    r = paired_comparison(a, b, "CNN", "pruned CNN")
    assert r["test_fraction"] == pytest.approx(0.25)
    assert r["corrected_pvalue"] == pytest.approx(
        corrected_ttest(list(r["diffs"].values()), 0.25)[1]
    )
    assert r["t_pvalue"] < r["corrected_pvalue"]
    assert f"corrected resampled t-test p = {r['corrected_pvalue']:.2g}" in r["verdict"]
    assert r["wilcoxon_floor"] == 0.0625 == wilcoxon_floor(5)
    text = " ".join(which_test(r))
    assert "Nadeau and Bengio" in text and "cannot reach p < 0.05" in text and "0.0625" in text
    assert wilcoxon_floor(6) == 0.03125  # six folds could reach it: nothing to warn about
    six = paired_comparison({**a, 5: 0.3}, {**b, 5: 0.33}, "CNN", "pruned CNN")
    assert not any("cannot reach" in line for line in which_test(six))


def _controls_results():
    r = results()
    removed = {"fc1": {"mean": 6.0, "of": 512, "per_fold": [4, 8]}}
    r["pruned"].update(neurons_removed=removed, acc_by_fold={0: 0.36, 1: 0.40})
    r["cnn"]["acc_by_fold"] = {0: 0.34, 1: 0.36}
    for kind, accs in (("random", (0.30, 0.33)), ("magnitude", (0.36, 0.39))):
        r[kind] = {
            "acc_mean": float(np.mean(accs)),
            "acc_std": float(np.std(accs, ddof=1)),
            "f1_mean": 0.3,
            "f1_std": 0.01,
            "folds": [0, 1],
            "acc_by_fold": dict(enumerate(accs)),
            "n_params": 1.3e6,
            "neurons_removed": removed,
        }
    return r


def test_the_controls_share_one_table_with_the_cnn_and_each_comparison_has_a_verdict():
    from emoprune.pipeline.compare import comparisons, headline

    r = _controls_results()
    compared = comparisons(r, test_fraction=1.0)
    assert list(compared) == ["vs_cnn", "vs_random", "vs_magnitude"]
    assert compared["vs_random"]["mean_diff"] == pytest.approx(0.065)  # pruned minus random
    assert compared["vs_magnitude"]["name_a"] == "magnitude-removal control"
    assert (
        "the pruned CNN's accuracy differs from the random-removal control's"
        in (compared["vs_random"]["verdict"])
    )
    md = _markdown(r, n_folds=2, comparisons=compared)
    section = md.split("## Does pruning help")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| CNN")]
    assert [row.split(" | ")[0] for row in rows[:4]] == [
        "| CNN",
        "| CNN + pruning",
        "| CNN + random removal (equal size)",
        "| CNN + magnitude removal (equal size)",
    ]
    assert "| fc1: 506 of 512 |" in rows[1] and "| fc1: 506 of 512 |" in rows[2]
    vs_random = next(line for line in rows if line.startswith("| CNN + pruning vs CNN + random"))
    low, high = (100 * x for x in compared["vs_random"]["interval_95"])
    assert f"| +6.5 ({low:+.1f} to {high:+.1f}) |" in vs_random
    assert "too few for a paired test" in vs_random
    assert "95% confidence interval" in section
    # The controls are not rows of the table beside the paper's figures.
    paper = md.split("## Does pruning help")[0]
    assert "random removal" not in paper
    head = headline(compared, {"total": 0})
    assert set(head["p_vs"]) == {"cnn", "random", "magnitude"} and head["duplicate_twins"] == 0
    assert head["p_vs"]["random"] == compared["vs_random"]["corrected_pvalue"] > 0


def test_evaluates_mlflow_run_carries_each_comparisons_interval():
    from emoprune.pipeline.compare import mlflow_metrics

    shown = paired_comparison(
        dict(enumerate([0.30, 0.35, 0.33, 0.31, 0.36])),
        dict(enumerate([0.33, 0.32, 0.35, 0.30, 0.37])),
        "CNN",
        "pruned CNN",
    )
    same = paired_comparison({0: 0.3, 1: 0.4, 2: 0.5}, {0: 0.3, 1: 0.4, 2: 0.5}, "CNN", "pruned")
    out = mlflow_metrics(
        {}, {"pruned_vs_cnn": shown, "pruned_vs_random": same, "duplicate_twins": 0}
    )
    low, high = shown["interval_95"]
    assert low < shown["mean_diff"] < high
    assert (out["pruned_vs_cnn/interval_95_low"], out["pruned_vs_cnn/interval_95_high"]) == (
        low,
        high,
    )
    assert "pruned_vs_random/interval_95_low" not in out  # undefined: not logged as a number


def test_repeated_k_fold_is_reported_per_repeat_and_tested_with_k_fold_correction():
    from emoprune.pipeline.compare import add_repeats, comparisons

    r = _controls_results()
    # 2 repeats of 2 folds: splits 0, 1 (repeat 0) and 2, 3 (repeat 1).
    for key, accs in (("cnn", (0.34, 0.36, 0.30, 0.32)), ("pruned", (0.36, 0.40, 0.31, 0.37))):
        r[key]["acc_by_fold"] = dict(enumerate(accs))
        r[key]["f1_by_fold"] = dict(enumerate(accs))
        r[key]["folds"] = [0, 1, 2, 3]
    for kind in ("random", "magnitude"):
        del r[kind]
    r = {k: v for k, v in r.items() if k in ("cnn", "pruned")}
    add_repeats(r, n_folds=2)
    assert r["cnn"]["by_repeat"] == {
        0: {"acc_mean": pytest.approx(0.35), "f1_mean": pytest.approx(0.35), "folds": 2},
        1: {"acc_mean": pytest.approx(0.31), "f1_mean": pytest.approx(0.31), "folds": 2},
    }
    compared = comparisons(r, test_fraction=1.0)  # K = 2: n_test/n_train = 1
    assert compared["vs_cnn"]["n"] == 4
    md = _markdown(r, n_folds=4, repeats=2, comparisons=compared)
    assert "2-fold stratified CV repeated 2 times" in md
    table = md.split("## Per repeat")[1].split("\n## ")[0]
    assert "| CNN | 35.0% | 31.0% |" in table
    assert "r0f0: +2.0, r0f1: +4.0, r1f0: +1.0, r1f1: +5.0" in md
    # Four folds with K = 2: the Wilcoxon floor (0.125) still cannot reach 0.05.
    assert "cannot reach p < 0.05" in md and "two folds of one 2-fold split" in md

    one = {k: dict(v) for k, v in r.items()}
    for v in one.values():
        v.pop("by_repeat")
        v["acc_by_fold"] = {k: a for k, a in v["acc_by_fold"].items() if k < 2}
    add_repeats(one, n_folds=2)
    assert "by_repeat" not in one["cnn"]  # one repeat: nothing per repeat to add


def test_the_wilcoxon_floor_counts_only_folds_that_differ():
    a = {k: 0.3 for k in range(5)}
    b = {0: 0.32, 1: 0.3, 2: 0.33, 3: 0.31, 4: 0.35}  # fold 1 ties: 4 non-zero differences
    r = paired_comparison(a, b, "CNN", "pruned CNN")
    assert r["wilcoxon_floor"] == 0.125
    text = " ".join(which_test(r))
    assert "With 5 folds (4 with a non-zero difference)" in text and "0.125" in text

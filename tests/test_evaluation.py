"""Scoring, paired comparison, leakage check, report and plots of the evaluate stage."""

from __future__ import annotations

import io

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from emoprune.evaluation.figures import accuracy_bars, angle_traces, close, confusion_figure
from emoprune.evaluation.leakage import duplicate_twins
from emoprune.evaluation.report import comparison_markdown, which_test
from emoprune.evaluation.scores import (
    confusion_rows,
    fold_scores,
    pooled_predictions,
    proba_from_npz,
)
from emoprune.evaluation.statistics import corrected_ttest, paired_comparison, wilcoxon_floor

CLASSES = ["A", "B", "C"]


def one_hot(pred, n=3):
    """Probabilities whose argmax is ``pred``."""
    p = np.full((len(pred), n), 0.1)
    p[np.arange(len(pred)), pred] = 0.8
    return p


@pytest.fixture
def case():
    # Folds interleaved on purpose: rows must follow np.flatnonzero(folds == k), not blocks.
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    folds = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    proba = {0: one_hot([0, 1, 0, 0]), 1: one_hot([0, 0, 2, 2])}
    return labels, folds, proba


def test_fold_scores_hand_made(case):
    labels, folds, proba = case
    s = fold_scores(proba, labels, folds, 3, CLASSES, model="cnn")
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


def test_fold_scores_subset_of_folds(case):
    labels, folds, proba = case
    s = fold_scores({0: proba[0]}, labels, folds, 3, CLASSES, model="resnet18")
    assert s["folds"] == [0]
    assert s["acc_mean"] == 0.75 and s["acc_std"] == 0.0
    assert np.sum(s["confusion"]) == 4


def test_fold_scores_wrong_length_names_model_and_fold(case):
    labels, folds, proba = case
    with pytest.raises(ValueError, match=r"resnet34.*fold 1"):
        fold_scores({0: proba[0], 1: proba[1][:3]}, labels, folds, 3, CLASSES, model="resnet34")


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


def test_duplicate_twins_across_folds_only():
    sha = ["a", "b", "c", "a", "d", "d", "e"]
    folds = np.array([0, 0, 1, 1, 2, 2, 2])  # "a" spans folds 0/1; "d" twice inside fold 2
    t = duplicate_twins(sha, folds)
    assert t["per_fold"] == {0: 1, 1: 1, 2: 0}
    assert t["total"] == 2
    assert t["examples"] == [(0, 3), (3, 0)]


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


def test_comparison_markdown():
    paired = paired_comparison({0: 0.3, 1: 0.4}, {0: 0.35, 1: 0.5}, "CNN", "pruned CNN")
    twins = {"per_fold": {0: 2, 1: 0}, "total": 2, "examples": [(3, 10)]}
    md = comparison_markdown(
        results(),
        protocol="none",
        n_folds=5,
        paired=paired,
        weights_note=None,
        twins=twins,
        class_names=CLASSES,
    )
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
    md = comparison_markdown(
        r,
        protocol="clip",
        n_folds=5,
        paired=None,
        weights_note=None,
        twins={"per_fold": {0: 0}, "total": 0, "examples": []},
        class_names=CLASSES,
    )
    assert "LEAKAGE CAUTION" not in md and "NOT transfer learning" not in md
    assert "WARNING" not in md and "cv.group_by=clip" in md


def test_figures_render_and_confusion_rows(case):
    labels, folds, proba = case
    s = fold_scores(proba, labels, folds, 3, CLASSES)
    for fig in (
        confusion_figure(np.array(s["confusion"]), CLASSES, "cnn"),
        accuracy_bars(results(), n_classes=3),
    ):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.tell() > 1000
        close(fig)
    _, y_true, y_pred = pooled_predictions(proba, labels, folds, 3)
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
    md = comparison_markdown(
        r,
        protocol="none",
        n_folds=5,
        paired=None,
        weights_note=None,
        twins={"per_fold": {}, "total": 0, "examples": []},
        class_names=tuple("ABCDEFG"),
        pruning=pruning,
        generated_sample=True,
    )
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
    md = comparison_markdown(
        r,
        protocol="none",
        n_folds=5,
        paired=None,
        weights_note=None,
        twins={"per_fold": {}, "total": 0, "examples": []},
        class_names=CLASSES,
    )
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

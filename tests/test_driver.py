"""The cross-validation driver: seeding, scoring, outputs, and the plateau flag."""

import numpy as np
import torch
from torch import nn

from emoprune.evaluation.statistics import plateau_bar, plateau_folds
from emoprune.training.crossval import fold_seed
from emoprune.training.driver import FoldFit, cross_validate

CLASSES = tuple("ABCDEFG")


class Constant(nn.Module):
    """Always predicts class 0: a network stuck on its plateau."""

    def forward(self, x):
        return torch.zeros(len(x), 7) + torch.eye(7)[0]


class Oracle(nn.Module):
    """Reads the label off the first feature: a network that learnt everything."""

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 0].long(), 7).float()


def data(n=70):
    y = torch.arange(n) % 7
    return torch.stack([y.float(), torch.randn(n)], dim=1), y


def test_each_fold_gets_its_seed_is_scored_and_the_plateau_is_flagged(tmp_path):
    x, y = data()
    seen = []

    def fit_fold(fold):
        seen.append((fold.k, fold.seed, torch.rand(1).item()))
        model = Constant() if fold.k == 1 else Oracle()
        train, val = np.arange(0, 50), np.arange(50, 70)
        return FoldFit(model, [], (x[train], y[train]), (x[val], y[val]), {"extra": 1.0})

    cv = cross_validate(
        [0, 1, 2], 42, fit_fold, classes=CLASSES, device=torch.device("cpu"), out=tmp_path
    )
    assert [(k, s) for k, s, _ in seen] == [(k, fold_seed(42, k)) for k in (0, 1, 2)]
    # Seeded before each fold: the same fold draws the same random numbers on every run.
    again = []
    cross_validate(
        [1],
        42,
        lambda f: (again.append(torch.rand(1).item()), fit_fold(f))[1],
        classes=CLASSES,
        device=torch.device("cpu"),
        out=tmp_path,
    )
    assert again[0] == seen[1][2]
    assert cv.per_fold[0]["train_acc"] == 1.0 and cv.per_fold[1]["train_acc"] < 2 / 7
    assert cv.plateau_folds == [1]
    summary = cv.summary(epochs=3)
    assert summary["plateau_folds"] == [1] and summary["n_folds"] == 3
    # Flagged, not dropped: the stuck fold still counts in the mean.
    assert np.isclose(
        summary["val_acc"]["mean"], np.mean([m["val_acc"] for m in cv.per_fold.values()])
    )
    with np.load(tmp_path / "val_proba.npz") as npz:
        assert sorted(npz.files) == ["fold1"]  # the second call overwrote it with its one fold
    assert set(cv.per_fold[0]) == {"train_acc", "train_f1", "val_acc", "val_f1", "extra"}


def test_training_part_given_as_rows_is_scored_on_those_rows(tmp_path):
    """A fold may hand back all the inputs and the rows that trained (``train_rows``): the
    driver scores those rows, in their order, against the training labels."""
    x, y = data()
    train, val = np.arange(49, -1, -1), np.arange(50, 70)  # reversed: x[:50] would misalign

    def fit_fold(fold):
        return FoldFit(Oracle(), [], (x, y[train]), (x[val], y[val]), train_rows=train)

    cv = cross_validate([0], 1, fit_fold, classes=CLASSES, device=torch.device("cpu"), out=tmp_path)
    assert cv.per_fold[0]["train_acc"] == 1.0 and cv.per_fold[0]["val_acc"] == 1.0


def test_plateau_bar_is_twice_chance():
    per_fold = {0: {"train_acc": 0.28}, 1: {"train_acc": 0.29}, 2: {"train_acc": 0.99}}
    assert plateau_folds(per_fold, 7) == [0]  # 2/7 = 0.2857
    # With 2 classes twice chance would be 100%: the bar stops halfway from chance to perfect.
    assert plateau_folds(per_fold, 2) == [0, 1] and plateau_bar(2) == 0.75


def test_precision_reaches_each_fold_and_the_summary(tmp_path):
    x, y = data()
    seen = []

    def fit_fold(fold):
        seen.append(fold.precision)
        train, val = np.arange(0, 50), np.arange(50, 70)
        return FoldFit(Oracle(), [], (x[train], y[train]), (x[val], y[val]))

    cpu = torch.device("cpu")
    cv = cross_validate([0, 1], 1, fit_fold, classes=CLASSES, device=cpu, out=tmp_path)
    assert seen == ["fp32", "fp32"] and "precision" not in cv.summary()  # the MLP's case
    cv = cross_validate(
        [0], 1, fit_fold, classes=CLASSES, device=cpu, out=tmp_path, precision="bf16"
    )
    assert seen[-1] == "bf16" and cv.summary()["precision"] == "bf16"

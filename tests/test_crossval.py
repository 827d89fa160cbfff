import numpy as np
import pytest
import torch

from emoprune.evaluation.statistics import mean_rows, mean_std, summarise
from emoprune.training.crossval import Folds, fold_tensors


def make_folds():
    labels = np.array([0, 0, 1, 1, 0, 1], dtype=np.int64)
    return Folds(labels=labels, folds=np.array([0, 1, 0, 1, 0, 1]), classes=("a", "b"))


def test_split_is_disjoint_and_complete():
    f = make_folds()
    assert f.ids == [0, 1]
    train, val = f.split(0)
    assert list(val) == [0, 2, 4] and list(train) == [1, 3, 5]


def test_fold_tensors_normalise_with_training_stats_only():
    f = make_folds()
    images = np.zeros((6, 4, 4, 3), dtype=np.uint8)
    images[f.folds == 1] = 255  # the training part of fold 0 is all white
    images[0] = 0
    data = fold_tensors(images, f, 0)
    np.testing.assert_allclose(data.mean, [1, 1, 1])  # from the training part only
    assert data.x_train.shape == (3, 3, 4, 4) and data.x_val.shape == (3, 3, 4, 4)
    assert torch.equal(data.y_val, torch.tensor([0, 1, 0]))


def test_mean_std_uses_sample_std():
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(np.sqrt(2))}
    assert mean_std([5.0]) == {"mean": 5.0, "std": 0.0}


def test_summarise_and_mean_rows():
    s = summarise({0: {"acc": 0.2}, 1: {"acc": 0.4}})
    assert s["acc"]["mean"] == pytest.approx(0.3)
    rows = [
        {"fold": 0, "epoch": 1, "loss": 1.0, "val": None},
        {"fold": 1, "epoch": 1, "loss": 3.0, "val": 2.0},
        {"fold": 0, "epoch": 2, "loss": 0.5, "val": None},
    ]
    assert mean_rows(rows) == [{"epoch": 1, "loss": 2.0, "val": 2.0}, {"epoch": 2, "loss": 0.5}]

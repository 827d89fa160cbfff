import numpy as np
import pytest
import torch

from emoprune.choices import EMOTIONS
from emoprune.data import folds as data_folds
from emoprune.data.folds import Folds, load_folds
from emoprune.data.ingest import build_manifest, manifest_csv
from emoprune.evaluation.statistics import mean_rows, mean_std, summarise
from emoprune.models.inputs import channel_histograms
from emoprune.pipeline.outputs import write_text
from emoprune.training import crossval
from emoprune.training.crossval import fold_tensors


def make_folds():
    labels = np.array([0, 0, 1, 1, 0, 1], dtype=np.int64)
    return Folds(
        labels=labels, assignment=np.array([[0, 1, 0, 1, 0, 1]]), n_folds=2, classes=("a", "b")
    )


def test_crossval_re_exports_the_torch_free_folds():
    # train_cnn and prune_cnn import the folds with the fold tensors, from training.crossval.
    assert crossval.Folds is Folds and crossval.load_folds is load_folds
    assert crossval.folds_from_records is data_folds.folds_from_records


def test_split_is_disjoint_and_complete():
    f = make_folds()
    assert f.ids == [0, 1] and (f.n_repeats, f.n_folds) == (1, 2)
    train, val = f.split(0)
    assert list(val) == [0, 2, 4] and list(train) == [1, 3, 5]


def two_repeats():
    """6 images, K = 3 folds, R = 2 repeats: splits 0..5."""
    assignment = np.array([[0, 1, 2, 0, 1, 2], [2, 2, 0, 1, 0, 1]])
    return Folds(np.array([0, 1, 0, 1, 0, 1]), assignment, n_folds=3, classes=("a", "b"))


def test_two_repeats_number_splits_repeat_major():
    f = two_repeats()
    assert (f.n_repeats, f.n_folds) == (2, 3)
    assert f.ids == [0, 1, 2, 3, 4, 5]
    assert [(f.repeat_of(k), f.fold_of(k)) for k in f.ids] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (1, 1),
        (1, 2),
    ]
    train, val = f.split(1)  # repeat 0, fold 1
    assert list(val) == [1, 4] and list(train) == [0, 2, 3, 5]
    train, val = f.split(3)  # repeat 1, fold 0
    assert list(val) == [2, 4] and list(train) == [0, 1, 3, 5]
    with pytest.raises(ValueError, match="split 6"):
        f.split(6)


def test_val_splits_cover_every_image_once_per_repeat():
    f = two_repeats()
    splits = f.val_splits()
    assert list(splits) == f.ids
    for r in range(f.n_repeats):
        ks = [k for k in f.ids if f.repeat_of(k) == r]
        pooled = np.concatenate([splits[k] for k in ks])
        assert sorted(pooled.tolist()) == list(range(6))  # disjoint and complete
    for k, val in splits.items():
        assert np.array_equal(val, np.sort(val))
        train, same = f.split(k)
        assert np.array_equal(val, same) and not set(train) & set(val)


def test_folds_reject_a_bad_assignment():
    with pytest.raises(ValueError, match="repeats, 3"):
        Folds(np.zeros(3), np.zeros(3), n_folds=2, classes=("a", "b"))
    with pytest.raises(ValueError, match="0..1"):
        Folds(np.zeros(3), np.array([[0, 1, 2]]), n_folds=2, classes=("a", "b"))


def test_load_folds_reads_every_repeat(tiny_sample, tmp_path):
    records, _ = build_manifest(tiny_sample, EMOTIONS, folds=2, seed=0, repeats=3)
    write_text(tmp_path / "m.csv", manifest_csv(records))
    f = load_folds(EMOTIONS, tmp_path / "m.csv")
    assert (f.n_repeats, f.n_folds, len(f.ids)) == (3, 2, 6)
    assert f.assignment.tolist() == [list(col) for col in zip(*(r.folds for r in records))]
    assert np.array_equal(f.labels, [r.label for r in records])


def test_fold_tensors_normalise_with_training_stats_only():
    f = make_folds()
    images = np.zeros((6, 4, 4, 3), dtype=np.uint8)
    images[f.assignment[0] == 1] = 255  # the training part of fold 0 is all white
    images[0] = 0
    data = fold_tensors(images, f, 0)
    np.testing.assert_allclose(data.mean, [1, 1, 1])  # from the training part only
    assert data.x_train.shape == (3, 3, 4, 4) and data.x_val.shape == (3, 3, 4, 4)
    assert torch.equal(data.y_val, torch.tensor([0, 1, 0]))


def test_fold_tensors_from_histograms_are_the_same_tensors():
    f = make_folds()
    images = np.random.default_rng(3).integers(0, 256, (6, 5, 5, 3), dtype=np.uint8)
    hist = channel_histograms(images)
    for k in f.ids:
        plain, cached = fold_tensors(images, f, k), fold_tensors(images, f, k, hist)
        assert np.array_equal(plain.mean, cached.mean) and np.array_equal(plain.std, cached.std)
        assert torch.equal(plain.x_train, cached.x_train) and torch.equal(plain.x_val, cached.x_val)
    with pytest.raises(ValueError, match="5 histograms for 6 images"):
        fold_tensors(images, f, 0, hist[:5])


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

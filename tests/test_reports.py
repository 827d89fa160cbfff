"""Stage report helpers: angle traces per layer (the files dvc.yaml's folder plots read) and
the wide per-epoch rows (MLflow, angles.png), and the headline of a metrics.json."""

from __future__ import annotations

import pytest

from emoprune.pipeline.reports import headline, layer_traces, wide_traces


def trace(fold, epoch, layer, lo, hi, removed=0):
    return {
        "fold": fold,
        "epoch": epoch,
        "layer": layer,
        "min_angle": lo,
        "max_angle": hi,
        "removed_total": removed,
    }


ROWS = [
    trace(0, 1, "fc1", 40.0, 140.0),
    trace(1, 1, "fc1", 50.0, 150.0),
    trace(0, 1, "fc2", 60.0, 120.0),
    trace(0, 2, "fc1", 20.0, 160.0, 3),
    trace(1, 2, "fc1", 30.0, 170.0, 1),
]


def test_layer_traces_average_over_folds_one_file_per_layer():
    layers = layer_traces(ROWS)
    assert list(layers) == ["fc1", "fc2"]
    assert layers["fc1"] == [
        {"epoch": 1, "min_angle": 45.0, "max_angle": 145.0, "removed_total": 0.0},
        {"epoch": 2, "min_angle": 25.0, "max_angle": 165.0, "removed_total": 2.0},
    ]
    assert layers["fc2"] == [
        {"epoch": 1, "min_angle": 60.0, "max_angle": 120.0, "removed_total": 0.0}
    ]


def test_wide_traces_put_every_layer_on_its_epoch_row():
    wide = wide_traces(layer_traces(ROWS))
    assert [r["epoch"] for r in wide] == [1, 2]
    assert wide[0]["fc1_min_angle"] == 45.0 and wide[0]["fc2_max_angle"] == 120.0
    assert "fc2_min_angle" not in wide[1] and wide[1]["fc1_removed_total"] == 2.0


def test_headline_keys_the_model_and_keeps_only_mean_and_std():
    details = {
        "val_acc": {"mean": 0.5, "std": 0.1},
        "val_f1": {"mean": 0.4, "std": 0.2},
        "per_fold": {"0": {"val_acc": 0.5}},
        "seconds_per_epoch": {"mean": 1.0, "std": 0.0},
    }
    assert headline("pruned", details, 10.0, removed={"fc1": 2.0}) == {
        "pruned": {
            "acc": {"mean": 0.5, "std": 0.1},
            "f1": {"mean": 0.4, "std": 0.2},
            "n_params": 10.0,
            "removed": {"fc1": 2.0},
        }
    }
    with pytest.raises(KeyError):
        headline("cnn", {"val_acc": {"mean": 0.5, "std": 0.1}}, 1)

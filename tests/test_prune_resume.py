"""prune_cnn's shortcuts: a pruned fold picks train_cnn's run up at the latest checkpoint before
its first check that could act (or its final model), and an equal-size control picks the pruned
run up just before its first removal; each ends with the same weights, removals and records as a
run from the earlier start."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from emoprune.models.cnn import CNN
from emoprune.pruning.baselines import schedule_from_log
from emoprune.pruning.callbacks import AngleTrace, load_unpruned_trace, save_unpruned_trace
from emoprune.pruning.resume import control_fold, pruned_fold, skip_epoch
from emoprune.training.checkpoints import CheckpointEvery, checkpoint_path, save_cnn
from emoprune.training.loop import adam
from emoprune.training.recipes import fit_cnn
from folddata import cpu_fold, random_fold

LAYERS = ("fc1", "fc2", "fc3")


def _rows(angles_by_epoch, layer="fc1"):
    return [
        {"epoch": e, "layer": layer, "min_angle": lo, "max_angle": hi, "n_alive": 8}
        for e, (lo, hi) in angles_by_epoch.items()
    ]


def _prune(**kw):
    return SimpleNamespace(
        **{"start_epoch": 10, "threshold": 25.0, "every": 1, "layers": ["fc1"], **kw}
    )


@pytest.mark.parametrize(
    ("first_acting", "expected"),
    # 50 and None: no check before the final epoch acts, so the final model is the start.
    [(29, 20), (30, 30), (10, 10), (49, 40), (50, 50), (None, 50)],
)
def test_skip_epoch_is_the_checkpoint_before_the_first_check_that_could_act(first_acting, expected):
    rows = _rows({e: (20.0 if e == first_acting else 40.0, 120.0) for e in range(1, 51)})
    assert skip_epoch(rows, _prune(), checkpoint_every=10, epochs=50) == expected


def test_skip_epoch_counts_both_thresholds_and_is_conservative():
    quiet = {e: (40.0, 120.0) for e in range(1, 51)}
    complementary = _rows({**quiet, 33: (40.0, 156.0)})  # 156 > 180 - 25
    assert skip_epoch(complementary, _prune(), 10, 50) == 30
    at_threshold = _rows({**quiet, 27: (25.0 + 1e-9, 120.0)})  # the last bits could differ
    assert skip_epoch(at_threshold, _prune(), 10, 50) == 20
    other_layer = _rows(quiet) + _rows({e: (1.0, 179.0) for e in range(1, 51)}, "fc2")
    assert skip_epoch(other_layer, _prune(), 10, 50) == 50  # fc2 is not pruned
    assert skip_epoch(other_layer, _prune(layers=["fc1", "fc2"]), 10, 50) == 10
    gap = _rows({e: a for e, a in quiet.items() if e != 24})  # a trace that misses an epoch
    assert skip_epoch(gap, _prune(), 10, 50) == 20
    assert skip_epoch([], _prune(), 10, 50) == 10
    # every=7: checks at 17, ..., 45; the last check, before the final epoch, is where a quiet
    # run must still resume.
    assert skip_epoch(_rows(quiet), _prune(every=7), 10, 50) == 40
    assert skip_epoch(_rows(quiet), _prune(every=8), 10, 50) == 50  # the last check is at 50
    assert skip_epoch(_rows(quiet), _prune(every=60), 10, 50) == 10  # no check at all


def _train_unpruned(folder, data, cnn, mode, precision="fp32"):
    """train_cnn in small: checkpoints every cnn.checkpoint_every, the angle trace, the record."""
    torch.manual_seed(0)
    model = CNN(7, in_size=67)
    opt = adam(model, cnn.lr)
    saver = CheckpointEvery(folder, 0, cnn.checkpoint_every, cnn.epochs, opt, {})
    trace = AngleTrace(LAYERS, mode, None, data.x_train, "cpu", 0, lambda m, s: None)
    fold = cpu_fold(folder, precision)
    history = fit_cnn(model, data, cnn, fold, opt, desc="cnn", callbacks=[saver, trace])
    save_cnn(checkpoint_path(folder, 0), model, epoch=cnn.epochs)  # the final model
    epoch_rows = [{"fold": 0, **vars(h)} for h in history]
    save_unpruned_trace(folder, mode, epoch_rows, trace.rows)
    return trace.rows


def _gap(rows, epoch):
    """How far the closest fc1 pair of ``epoch`` is from either threshold family."""
    row = next(r for r in rows if r["epoch"] == epoch and r["layer"] == "fc1")
    return min(row["min_angle"], 180 - row["max_angle"])


def _first_acting(rows, candidates):
    """(epoch, threshold): the first of ``candidates`` whose closest fc1 pair is closer than any
    epoch's since 2, and a threshold between the two, so that a check acts first there."""
    first = next(e for e in candidates if _gap(rows, e) < min(_gap(rows, d) for d in range(2, e)))
    return first, (_gap(rows, first) + min(_gap(rows, d) for d in range(2, first))) / 2


CNN_SMALL = dict(lr=3e-3, epochs=7, batch_size=8, augment=False, checkpoint_every=2)


def _prune_at(threshold, mode):
    return SimpleNamespace(
        start_epoch=2,
        every=1,
        threshold=threshold,
        layers=["fc1"],
        mode=mode,
        complementary="remove_both",
    )


def _pruned_run(tmp_path, name, prune, cnn, trace, data, precision="fp32"):
    """pruned_fold from the checkpoints in ``tmp_path``: (fit, MLflow log, epochs logged)."""
    logged, epochs_logged = [], []
    fold = cpu_fold(tmp_path / name, precision).with_callbacks(
        lambda stats, model: epochs_logged.append(stats.epoch)
    )
    out = pruned_fold(
        prune, cnn, str(tmp_path), trace, data, fold, lambda m, s: logged.append((s, m))
    )
    return out, logged, epochs_logged


def _assert_same_run(full, short):
    """Two pruned_fold runs (fit, log, epochs logged) with the same weights and records."""
    (full, full_log, full_epochs), (short, short_log, short_epochs) = full, short
    assert full.notes["mask"].removed == short.notes["mask"].removed
    for (name, a), b in zip(full.model.state_dict().items(), short.model.state_dict().values()):
        assert torch.equal(a, b), name
    pf, ps = full.notes["pruner"], short.notes["pruner"]
    assert pf.log_ids == ps.log_ids
    assert _same(pf.rows, ps.rows) and _same(full_log, short_log)
    assert full_epochs == short_epochs == list(range(3, 8))
    fields = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")  # not seconds
    assert [[getattr(h, f) for f in fields] for h in full.history] == [
        [getattr(h, f) for f in fields] for h in short.history
    ]
    for key in ("val_acc_before", "val_acc_after_first_prune", "fc1_removed", "params_shrunk"):
        assert full.metrics[key] == short.metrics[key], key
    for when in ("first", "last"):
        np.testing.assert_array_equal(pf.histograms[when]["fc1"], ps.histograms[when]["fc1"])


# bf16: what precision auto trains in where the CPU has AVX512-BF16 or AMX (emulated elsewhere),
# with the CNN's first layer on pixel blocks and validation in bf16 but the last epoch. Each test
# compares runs on one machine; the thresholds it picks held with oneDNN limited to AVX2 too.
PRECISIONS = ["fp32", "bf16"]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("mode", ["output_weights", "activations"])
def test_a_pruned_fold_resumed_later_ends_with_the_same_weights_and_records(
    tmp_path, mode, precision
):
    cnn = SimpleNamespace(**CNN_SMALL)
    data = random_fold()
    rows = _train_unpruned(tmp_path, data, cnn, mode, precision)
    # A threshold that no epoch before 4 reaches and epoch 4 or 5 does: a check acts first
    # there, so the shortcut resumes train_cnn's checkpoint of epoch 4 instead of 2.
    first, threshold = _first_acting(rows, (4, 5))
    assert 0 < threshold < 90
    prune = _prune_at(threshold, mode)
    full = _pruned_run(tmp_path, "full", prune, cnn, {}, data, precision)
    trace = load_unpruned_trace(tmp_path, mode)
    short = _pruned_run(tmp_path, "shortcut", prune, cnn, trace, data, precision)
    assert full[0].metrics["resumed_at_epoch"] == 2 and short[0].metrics["resumed_at_epoch"] == 4
    assert full[0].notes["mask"].removed["fc1"], "the threshold must make pruning act"
    _assert_same_run(full, short)
    assert (tmp_path / "shortcut" / "fold0.pt").is_file()
    # The replayed epochs 3-4 were not trained here, so they carry no wall time of their own.
    assert [h.seconds is None for h in short[0].history] == [True, True, False, False, False]
    assert all(h.seconds > 0 for h in full[0].history)


@pytest.mark.parametrize("acts_last", [False, True])
def test_a_fold_no_earlier_check_acts_on_takes_the_final_model_and_checks_it(tmp_path, acts_last):
    cnn = SimpleNamespace(**CNN_SMALL)
    data = random_fold()
    rows = _train_unpruned(tmp_path, data, cnn, "output_weights")
    before = min(_gap(rows, e) for e in range(2, 7))
    # Under every gap (nothing ever acts), or between the last epoch's and the earlier ones'.
    assert _gap(rows, 7) < before, "the seed must bring the last epoch's closest pair nearer"
    threshold = (before + _gap(rows, 7)) / 2 if acts_last else _gap(rows, 7) / 2
    prune = _prune_at(threshold, "output_weights")
    full = _pruned_run(tmp_path, "full", prune, cnn, {}, data)
    trace = load_unpruned_trace(tmp_path, "output_weights")
    short = _pruned_run(tmp_path, "shortcut", prune, cnn, trace, data)
    assert full[0].metrics["resumed_at_epoch"] == 2 and short[0].metrics["resumed_at_epoch"] == 7
    assert bool(full[0].notes["mask"].removed["fc1"]) is acts_last
    _assert_same_run(full, short)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_controls_resume_at_the_pruned_runs_first_removal_with_the_same_results(
    tmp_path, precision
):
    cnn = SimpleNamespace(**CNN_SMALL)
    data = random_fold()
    rows = _train_unpruned(tmp_path, data, cnn, "output_weights", precision)
    # A check that first acts at an odd epoch, past the checkpoint (every 2) before it.
    first, threshold = _first_acting(rows, (3, 5))
    prune = _prune_at(threshold, "output_weights")
    pruned, _, _ = _pruned_run(tmp_path, "pruned", prune, cnn, {}, data, precision)
    unpruned = pruned.notes["pruner"].before_first_removal
    schedule = schedule_from_log(pruned.notes["pruner"].log_ids, 0)
    assert unpruned.epoch == min(schedule) == first
    for kind in ("random", "magnitude"):  # both from one state: each takes its own copy
        runs = []
        for name, start in (("checkpoint", None), ("unpruned", unpruned)):
            out = tmp_path / kind / name
            runs.append(
                control_fold(
                    kind, schedule, prune, cnn, str(tmp_path), data, cpu_fold(out, precision), start
                )
            )
        old, new = runs
        assert old.metrics["resumed_at_epoch"] == first - 1
        assert new.metrics["resumed_at_epoch"] == first
        assert old.notes["removal"].log == new.notes["removal"].log
        assert old.notes["mask"].removed == new.notes["mask"].removed
        for (key, a), b in zip(old.model.state_dict().items(), new.model.state_dict().values()):
            assert torch.equal(a, b), (kind, key)
        assert [h.epoch for h in new.history] == list(range(first + 1, 8))


def _same(a, b) -> bool:
    """Equal, with NaN equal to NaN (angles of layers with < 2 live neurons)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def test_an_unpruned_trace_of_another_mode_is_not_used(tmp_path):
    save_unpruned_trace(tmp_path, "output_weights", [{"fold": 0, "epoch": 1}], [])
    assert load_unpruned_trace(tmp_path, "activations") == {}
    assert load_unpruned_trace(tmp_path / "missing", "output_weights") == {}
    assert load_unpruned_trace(tmp_path, "output_weights")[0]["epochs"] == [{"epoch": 1}]


def test_the_unpruned_trace_holds_no_wall_time_so_a_rerun_writes_the_same_bytes(tmp_path):
    angles = [{"fold": 0, "epoch": 1, "layer": "fc1", "min_angle": 40.5, "max_angle": 120.0}]
    for name, seconds in (("a", 0.31), ("b", 0.52)):
        (tmp_path / name).mkdir()
        epochs = [{"fold": 0, "epoch": 1, "train_loss": 1.9, "seconds": seconds, "lr": 1e-3}]
        save_unpruned_trace(tmp_path / name, "output_weights", epochs, angles)
    first, second = (tmp_path / n / "unpruned_trace.json" for n in "ab")
    assert first.read_bytes() == second.read_bytes()
    epoch = load_unpruned_trace(tmp_path / "a", "output_weights")[0]["epochs"][0]
    assert epoch == {"epoch": 1, "train_loss": 1.9, "lr": 1e-3}

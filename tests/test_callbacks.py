import numpy as np
import torch

from emoprune.models.cnn import CNN
from emoprune.pruning.callbacks import AngleTrace, Pruner, collect_activations
from emoprune.pruning.mask import PruneMask
from emoprune.training.checkpoints import CheckpointEvery, load_cnn_checkpoint
from emoprune.training.crossval import fold_seed
from emoprune.training.loop import adam
from fitting import quiet_fit

SIDE = 67  # the smallest input the conv stack takes: keeps these tests fast


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return CNN(hidden=(16, 8, 6), in_size=SIDE)


def toy_data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, SIDE, SIDE, generator=g), torch.arange(n) % 7


def test_resuming_from_a_checkpoint_replays_the_uninterrupted_run(tmp_path):
    x, y = toy_data()
    straight = small_cnn()
    opt = adam(straight, 1e-3)
    quiet_fit(
        straight,
        (x, y),
        optimizer=opt,
        epochs=3,
        batch_size=8,
        seed=1,
        callbacks=[CheckpointEvery(tmp_path, 0, 1, 3, opt, {"fold": 0})],
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold0_epoch001.pt", "fold0_epoch002.pt"]
    resumed, meta, state = load_cnn_checkpoint(tmp_path / "fold0_epoch001.pt")
    assert meta["epoch"] == 1 and meta["fold"] == 0 and state is not None
    quiet_fit(
        resumed,
        (x, y),
        optimizer=adam(resumed, 1e-3, state),
        epochs=3,
        batch_size=8,
        seed=1,
        start_epoch=1,
    )
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b)


def test_collect_activations_shapes():
    acts = collect_activations(small_cnn(), toy_data(5)[0], ["fc1", "fc3"], "cpu", 2)
    assert acts["fc1"].shape == (5, 16) and acts["fc3"].shape == (5, 6)
    assert ((acts["fc1"] > 0) & (acts["fc1"] < 1)).all()


def test_angle_trace_rows_and_logging():
    logged = []
    trace = AngleTrace(
        ("fc1", "fc2"),
        "output_weights",
        None,
        toy_data(4)[0],
        "cpu",
        3,
        lambda metrics, step: logged.append((step, metrics)),
    )
    trace.record(7, small_cnn(), {})
    assert [(r["epoch"], r["layer"], r["fold"]) for r in trace.rows] == [
        (7, "fc1", 3),
        (7, "fc2", 3),
    ]
    assert "n_similar" not in trace.rows[0]  # no pruning threshold in train_cnn
    assert 0 < trace.rows[0]["min_angle"] <= trace.rows[0]["max_angle"] < 180
    assert logged[0][0] == 7 and "fold3/fc2/max_angle" in logged[0][1]


def test_pruner_merges_a_duplicate_and_keeps_it_dead():
    model = small_cnn()
    with torch.no_grad():  # neuron 5 of fc2 sends exactly what neuron 1 sends
        model.fc3.weight[:, 5] = model.fc3.weight[:, 1]
    x, y = toy_data()
    opt = adam(model, 1e-2)
    mask = PruneMask(model, ["fc2"])
    mask.attach(opt)
    calls = []
    pruner = Pruner(
        mask,
        complementary="remove_both",
        start_epoch=0,
        every=2,
        on_first_prune=lambda m: calls.append(1),
        mode="output_weights",
        threshold=1.0,
        x_train=x,
        device="cpu",
        fold=0,
        log=lambda metrics, step: None,
    )
    # Prune right away (a check at "epoch 0"), then train on: the merged neuron stays dead.
    from emoprune.training.loop import EpochStats

    pruner(EpochStats(0, 0, 0, None, None, 0, 0), model)
    assert mask.removed["fc2"] == {5} and calls == [1]
    quiet_fit(model, (x, y), optimizer=opt, epochs=3, batch_size=8, callbacks=[pruner])
    assert torch.all(model.fc3.weight[:, 5] == 0) and torch.all(model.fc2.weight[5] == 0)
    assert [r["epoch"] for r in pruner.rows] == [0, 1, 2, 3]
    assert all(r["removed_total"] >= 1 for r in pruner.rows)
    assert pruner.rows[0]["n_similar"] >= 1 and pruner.rows[0]["pruned_now"] == 1
    assert pruner.log_ids[0]["similar"][0][:2] == [1, 5]
    assert set(pruner.histograms) == {"last"}  # "first" is the start's (prune_fold's snapshot)
    assert calls == [1]  # "just after the first pruning" is measured once


def test_fold_seed_differs_per_fold():
    assert fold_seed(42, 0) != fold_seed(42, 1)
    assert fold_seed(42, 0) == fold_seed(42, 0)
    assert np.uint32(fold_seed(1, 2)) == fold_seed(1, 2)

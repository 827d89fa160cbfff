"""Equal-size controls: the same number of live neurons removed, at the same epochs, chosen at
random (seeded) or by the smallest outgoing-weight norm; torch's RNG untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emoprune.models.cnn import CNN
from emoprune.pruning.baselines import ScheduledRemoval, choose, schedule_from_log
from emoprune.pruning.mask import PruneMask, removed_by_weights
from emoprune.training.loop import EpochStats


def small_cnn() -> CNN:
    torch.manual_seed(0)
    return CNN(7, in_size=67)  # small input: a fast network, same FC widths


def stats(epoch: int) -> EpochStats:
    return EpochStats(epoch, 0.0, 0.0, None, None, 0.0, 0.0)


def test_schedule_counts_each_checks_removals_of_one_fold():
    log = [
        {"fold": 0, "epoch": 10, "layer": "fc1", "removed": [3, 5]},
        {"fold": 0, "epoch": 10, "layer": "fc2", "removed": []},
        {"fold": 0, "epoch": 12, "layer": "fc1", "removed": [7]},
        {"fold": 1, "epoch": 10, "layer": "fc1", "removed": [1, 2, 4]},
    ]
    assert schedule_from_log(log, 0) == {10: {"fc1": 2}, 12: {"fc1": 1}}
    assert schedule_from_log(log, 1) == {10: {"fc1": 3}}
    assert schedule_from_log(log, 2) == {}


@pytest.mark.parametrize("kind", ["random", "magnitude"])
def test_a_baseline_removes_exactly_the_requested_live_neurons(kind):
    model = small_cnn()
    mask = PruneMask(model, ["fc1"])
    mask.add("fc1", range(10))  # already dead: must not be chosen again
    mask.apply()
    removal = ScheduledRemoval(mask, kind, {11: {"fc1": 25}, 13: {"fc1": 5}}, seed=3)
    removal(stats(10), model)
    assert len(mask.removed["fc1"]) == 10
    removal(stats(11), model)
    assert len(mask.removed["fc1"]) == 35 and set(range(10)) < mask.removed["fc1"]
    removal(stats(13), model)
    assert len(mask.removed["fc1"]) == 40
    # Really removed: their weights are zero, and the log names exactly them.
    dead = np.flatnonzero(removed_by_weights(*model.fc_pair("fc1")))
    assert set(dead) == mask.removed["fc1"]
    logged = {i for row in removal.log for i in row["removed"]}
    assert logged == mask.removed["fc1"] - set(range(10)) and len(logged) == 30


def test_magnitude_takes_the_smallest_outgoing_norms():
    model = small_cnn()
    _, fc_out = model.fc_pair("fc1")
    with torch.no_grad():
        fc_out.weight[:, [4, 9, 100]] *= 1e-3
    alive = np.ones(512, dtype=bool)
    alive[9] = False
    idx = choose("magnitude", model, "fc1", alive, 2, np.random.default_rng(0))
    assert idx.tolist() == [4, 100]


def test_random_is_seeded_and_leaves_torch_rng_alone():
    model = small_cnn()
    alive = np.ones(512, dtype=bool)
    a = choose("random", model, "fc1", alive, 8, np.random.default_rng([1, 11]))
    b = choose("random", model, "fc1", alive, 8, np.random.default_rng([1, 11]))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 8
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    mask = PruneMask(model, ["fc1"])
    ScheduledRemoval(mask, "random", {1: {"fc1": 4}}, seed=0)(stats(1), model)
    assert torch.equal(torch.rand(3), expected)  # the batches' shuffling is unchanged


def test_more_than_the_live_neurons_is_an_error():
    with pytest.raises(ValueError, match="cannot remove 3 of 2 live"):
        choose(
            "random",
            small_cnn(),
            "fc1",
            np.eye(1, 512, 0, dtype=bool)[0] | np.eye(1, 512, 1, dtype=bool)[0],
            3,
            np.random.default_rng(0),
        )

"""Behaviour of Gedeon's distinctiveness pruning (src/emoprune/pruning/)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from emoprune.evaluation.size import model_size_and_latency
from emoprune.models.cnn import CNN, count_parameters
from emoprune.pruning.angles import angles, neuron_vectors
from emoprune.pruning.distinctiveness import distinctiveness_step, layer_angle_stats, prune_model
from emoprune.pruning.mask import PruneMask
from emoprune.pruning.shrink import shrink

SMALL = dict(hidden=(32, 16, 8), in_size=67)  # 67 is the smallest side the conv stack accepts


def make_pair(n_in=12, n_hidden=10, n_out=5, seed=0):
    """A float64 fc_in -> sigmoid -> fc_out pair and 300 input patterns."""
    g = torch.Generator().manual_seed(seed)
    fc_in, fc_out = nn.Linear(n_in, n_hidden).double(), nn.Linear(n_hidden, n_out).double()
    with torch.no_grad():
        for p in (*fc_in.parameters(), *fc_out.parameters()):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(300, n_in, generator=g, dtype=torch.float64)
    return fc_in, fc_out, x


def hidden(fc_in, x, act=torch.sigmoid):
    return act(fc_in(x)).detach()


def out(fc_in, fc_out, x, act=torch.sigmoid):
    return fc_out(act(fc_in(x))).detach()


def assert_removed(fc_in, fc_out, j):
    assert torch.all(fc_in.weight[j] == 0) and fc_in.bias[j] == 0
    assert torch.all(fc_out.weight[:, j] == 0)


def set_output_columns(fc_out, cols):
    """Give fc_out the given (hidden, out) columns."""
    with torch.no_grad():
        fc_out.weight.copy_(torch.as_tensor(np.asarray(cols), dtype=torch.float64).T)


def unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg)), 0.0]


# ---------------------------------------------------------------------------------------- angles


def test_angles_match_naive_arccos_and_mark_zero_rows():
    v = np.random.default_rng(1).normal(size=(9, 6))
    v[4] = 0.0
    a = angles(torch.as_tensor(v))
    assert a.shape == (9, 9)
    for i in range(9):
        for j in range(9):
            if i == j or 4 in (i, j):
                assert np.isnan(a[i, j])
            else:
                cos = v[i] @ v[j] / (np.linalg.norm(v[i]) * np.linalg.norm(v[j]))
                assert a[i, j] == pytest.approx(math.degrees(math.acos(cos)), abs=1e-9)
    finite = a[~np.isnan(a)]
    assert finite.min() >= 0 and finite.max() <= 180
    # Parallel and anti-parallel rows, where rounding pushes |cos| past 1, stay finite.
    b = angles(np.array([[1.0, 2.0, 3.0], [3.0, 6.0, 9.0], [-1.0, -2.0, -3.0]]))
    assert b[0, 1] == pytest.approx(0, abs=1e-6) and b[0, 2] == pytest.approx(180, abs=1e-6)


def test_centring_makes_complementary_pairs_visible():
    fc_in, fc_out, x = make_pair()
    with torch.no_grad():
        fc_in.weight[3] = -fc_in.weight[0]
        fc_in.bias[3] = -fc_in.bias[0]
    acts = hidden(fc_in, x)
    raw = angles(acts.T)  # uncentred sigmoid outputs: all in the positive orthant
    assert np.nanmax(raw) < 90
    centred = angles(neuron_vectors(fc_in, fc_out, acts, "activations"))
    assert centred[0, 3] == pytest.approx(180, abs=1e-4)  # arccos near -1 loses ~1e-6 deg
    assert np.nanmax(centred) > 90


def test_neuron_vector_modes_and_centring():
    fc_in, fc_out, x = make_pair(n_in=4, n_hidden=3, n_out=2)
    acts = hidden(fc_in, x)
    w_in, b_in, w_out = (p.detach().numpy() for p in (fc_in.weight, fc_in.bias, fc_out.weight))
    np.testing.assert_array_equal(neuron_vectors(fc_in, fc_out, acts, "output_weights"), w_out.T)
    inw = neuron_vectors(fc_in, fc_out, acts, "input_weights")
    np.testing.assert_array_equal(inw, np.c_[w_in, b_in])
    full = neuron_vectors(fc_in, fc_out, acts, "full_weights")
    np.testing.assert_array_equal(full, np.c_[w_in, b_in, w_out.T])
    np.testing.assert_allclose(
        neuron_vectors(fc_in, fc_out, acts, "activations"), acts.numpy().T - 0.5
    )
    t = np.tanh(np.random.default_rng(0).normal(size=(7, 3)))
    np.testing.assert_allclose(neuron_vectors(fc_in, fc_out, t, "activations", "tanh"), t.T)
    r = np.array([[0.0, 2.0, 0.0], [1.0, 4.0, 0.0]])  # neuron 2 is dead
    v = neuron_vectors(fc_in, fc_out, r, "activations", "relu")
    np.testing.assert_allclose(v, [[-0.5, 0.5], [0.0, 0.5], [0.0, 0.0]])


# ----------------------------------------------------------------------------- merging similar


@pytest.mark.parametrize("mode", ["activations", "input_weights", "full_weights"])
def test_duplicate_neurons_far_apart_are_merged_and_output_kept(mode):
    fc_in, fc_out, x = make_pair()
    with torch.no_grad():  # neuron 9 duplicates neuron 0: far apart, not neighbours
        fc_in.weight[9] = fc_in.weight[0]
        fc_in.bias[9] = fc_in.bias[0]
        if mode == "full_weights":
            fc_out.weight[:, 9] = fc_out.weight[:, 0]
    before = out(fc_in, fc_out, x)
    step = distinctiveness_step(fc_in, fc_out, hidden(fc_in, x), 15, mode=mode)
    assert step.removed == {9}
    assert [(k, r) for k, r, _ in step.similar] == [(0, 9)]
    assert step.similar[0][2] == pytest.approx(0, abs=1e-5)
    assert_removed(fc_in, fc_out, 9)
    torch.testing.assert_close(out(fc_in, fc_out, x), before, atol=1e-6, rtol=0)


def test_merge_adds_outgoing_not_incoming_weights():
    fc_in, fc_out, x = make_pair()
    with torch.no_grad():  # parallel outgoing columns, unrelated incoming weights
        fc_out.weight[:, 7] = 2 * fc_out.weight[:, 2]
    w_in, b_in, w_out = (p.detach().clone() for p in (fc_in.weight, fc_in.bias, fc_out.weight))
    step = distinctiveness_step(fc_in, fc_out, hidden(fc_in, x), 15, mode="output_weights")
    assert step.removed == {7}
    torch.testing.assert_close(fc_out.weight[:, 2], w_out[:, 2] + w_out[:, 7])
    torch.testing.assert_close(fc_in.weight[2], w_in[2])  # incoming untouched
    assert fc_in.bias[2] == b_in[2]
    assert_removed(fc_in, fc_out, 7)


def test_output_weights_merge_keeps_output_when_neurons_duplicate():
    fc_in, fc_out, x = make_pair()
    with torch.no_grad():
        fc_in.weight[6], fc_in.bias[6] = fc_in.weight[1], fc_in.bias[1]
        fc_out.weight[:, 6] = 0.5 * fc_out.weight[:, 1]
    before = out(fc_in, fc_out, x)
    step = distinctiveness_step(fc_in, fc_out, None, 15, mode="output_weights")
    assert step.removed == {6}
    torch.testing.assert_close(out(fc_in, fc_out, x), before, atol=1e-6, rtol=0)


def test_output_and_input_weight_modes_pick_different_pairs():
    fc_in, fc_out, x = make_pair()
    with torch.no_grad():
        fc_in.weight[1], fc_in.bias[1] = fc_in.weight[4], fc_in.bias[4]  # alike coming in
        fc_out.weight[:, 8] = 3 * fc_out.weight[:, 5]  # alike going out
    acts = hidden(fc_in, x)
    snapshot = [p.detach().clone() for p in (*fc_in.parameters(), *fc_out.parameters())]

    def restore():
        with torch.no_grad():
            for p, s in zip((*fc_in.parameters(), *fc_out.parameters()), snapshot):
                p.copy_(s)

    assert distinctiveness_step(fc_in, fc_out, acts, 15, mode="input_weights").removed == {4}
    restore()
    assert distinctiveness_step(fc_in, fc_out, acts, 15, mode="output_weights").removed == {8}


def test_threshold_decides_a_20_degree_pair():
    fc_in, fc_out, x = make_pair(n_hidden=4, n_out=3)
    cols = [unit(0), unit(20), [0, 0, 1], np.array([-1, 1, 1]) / 3**0.5]
    set_output_columns(fc_out, cols)
    acts = hidden(fc_in, x)
    step = distinctiveness_step(fc_in, fc_out, acts, 15, mode="output_weights")
    assert step.removed == set() and step.n_similar_pairs == 0
    assert step.min_angle == pytest.approx(20)
    step = distinctiveness_step(fc_in, fc_out, acts, 25, mode="output_weights")
    assert step.removed == {1} and step.n_similar_pairs == 1


def test_greedy_uses_each_neuron_once_per_step():
    fc_in, fc_out, x = make_pair()
    with torch.no_grad():
        fc_out.weight[:, 4] = fc_out.weight[:, 0]
        fc_out.weight[:, 8] = fc_out.weight[:, 0]
    cols = fc_out.weight.detach().clone()
    acts = hidden(fc_in, x)
    step = distinctiveness_step(fc_in, fc_out, acts, 15)
    assert step.n_similar_pairs == 3  # (0,4), (0,8), (4,8) all seen ...
    assert step.removed == {4}  # ... but 0 and 4 are then used up
    step = distinctiveness_step(fc_in, fc_out, acts, 15)
    assert step.removed == {8}
    torch.testing.assert_close(fc_out.weight[:, 0], cols[:, 0] + cols[:, 4] + cols[:, 8])


def test_most_extreme_pair_goes_first():
    fc_in, fc_out, x = make_pair(n_hidden=4, n_out=3)
    # Angles: (0,1)=10, (1,2)=5, (0,2)=15; a neighbour-order or first-found rule takes (0,1).
    set_output_columns(fc_out, [unit(0), unit(10), unit(15), [0, 0, 1]])
    step = distinctiveness_step(fc_in, fc_out, hidden(fc_in, x), 25)
    assert [(k, r) for k, r, _ in step.similar] == [(1, 2)] and step.removed == {2}
    assert step.n_similar_pairs == 3

    fc_in, fc_out, x = make_pair(n_hidden=4, n_out=3)
    # (0,2)=175 is more extreme than (0,1)=10 and (1,2)=165, so the complementary pair wins.
    set_output_columns(fc_out, [unit(0), unit(10), unit(175), [0, 0, 1]])
    step = distinctiveness_step(fc_in, fc_out, hidden(fc_in, x), 25)
    assert [(i, j) for i, j, _ in step.complementary] == [(0, 2)]
    assert step.similar == [] and step.removed == {0, 2}
    assert (step.n_similar_pairs, step.n_complementary_pairs) == (1, 2)
    assert step.max_angle == pytest.approx(175)


# ------------------------------------------------------------------------ complementary pairs


def make_complementary(equal_columns: bool):
    fc_in, fc_out, x = make_pair()
    with torch.no_grad():  # a_7 = sigmoid(-z_2) = 1 - a_2
        fc_in.weight[7], fc_in.bias[7] = -fc_in.weight[2], -fc_in.bias[2]
        if equal_columns:
            fc_out.weight[:, 7] = fc_out.weight[:, 2]
    return fc_in, fc_out, x


def test_complementary_pair_removed_both_output_kept():
    fc_in, fc_out, x = make_complementary(equal_columns=True)
    before = out(fc_in, fc_out, x)
    step = distinctiveness_step(
        fc_in, fc_out, hidden(fc_in, x), 15, mode="activations", complementary="remove_both"
    )
    assert step.removed == {2, 7} and step.similar == []
    assert [(i, j) for i, j, _ in step.complementary] == [(2, 7)]
    assert step.complementary[0][2] == pytest.approx(180, abs=1e-5)
    assert_removed(fc_in, fc_out, 2)
    assert_removed(fc_in, fc_out, 7)
    torch.testing.assert_close(out(fc_in, fc_out, x), before, atol=1e-6, rtol=0)


@pytest.mark.parametrize("equal_columns", [True, False])
def test_complementary_fold_keeps_one_and_output(equal_columns):
    fc_in, fc_out, x = make_complementary(equal_columns)
    before = out(fc_in, fc_out, x)
    step = distinctiveness_step(
        fc_in, fc_out, hidden(fc_in, x), 15, mode="activations", complementary="fold"
    )
    assert step.removed == {7}
    assert_removed(fc_in, fc_out, 7)
    torch.testing.assert_close(out(fc_in, fc_out, x), before, atol=1e-6, rtol=0)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_complementary_fold_uses_each_activations_own_complement(activation):
    # tanh: a_4 = tanh(-z_1) = -a_1. relu: z_1 = 2 x0 runs over [0, 2] and z_4 = 2 - z_1, so
    # a_4 = m_4 (1 - a_1 / m_1) with both maxima 2. The sigmoid's rule (1 - a_1) is wrong for both.
    fc_in, fc_out, x = make_pair(n_in=5, n_hidden=6, seed=3)
    x[:, 0] = torch.linspace(0, 1, len(x), dtype=torch.float64)  # a_1's and a_4's maxima are 2
    with torch.no_grad():
        fc_in.weight[:, 0] = 0.0  # the other units read the Gaussian inputs only
        fc_in.weight[1] = torch.tensor([2.0, 0, 0, 0, 0], dtype=torch.float64)
        fc_in.bias[1] = 0.0
        fc_in.weight[4] = -fc_in.weight[1]
        fc_in.bias[4] = 0.0 if activation == "tanh" else 2.0
    act = {"tanh": torch.tanh, "relu": torch.relu}[activation]
    before = out(fc_in, fc_out, x, act)
    step = distinctiveness_step(
        fc_in,
        fc_out,
        hidden(fc_in, x, act),
        15,
        mode="activations",
        complementary="fold",
        activation=activation,
    )
    assert step.removed == {4} and [(i, j) for i, j, _ in step.complementary] == [(1, 4)]
    assert step.complementary[0][2] == pytest.approx(180, abs=1e-5)
    assert_removed(fc_in, fc_out, 4)
    torch.testing.assert_close(out(fc_in, fc_out, x, act), before, atol=1e-9, rtol=0)


def test_complementary_fold_of_a_relu_unit_that_never_fires_keeps_the_mean():
    # Output-weight mode finds the pair from fc_out alone; unit 0 is dead (a_0 = 0 on every
    # pattern), so the fold can only replace unit 1 by its mean: exact on average, not per pattern.
    fc_in, fc_out, x = make_pair(n_hidden=4, n_out=3, seed=1)
    set_output_columns(fc_out, [unit(0), unit(178), [0, 0, 1], [0, 1, 1]])
    with torch.no_grad():
        fc_in.weight[0], fc_in.bias[0] = 0.0, -1.0
    before = out(fc_in, fc_out, x, torch.relu)
    acts = hidden(fc_in, x, torch.relu)
    step = distinctiveness_step(fc_in, fc_out, acts, 15, complementary="fold", activation="relu")
    assert step.removed == {1}
    after = out(fc_in, fc_out, x, torch.relu)
    torch.testing.assert_close(after.mean(0), before.mean(0), atol=1e-9, rtol=0)
    assert not torch.allclose(after, before)


def test_complementary_needs_activations_and_leaves_weights_untouched():
    fc_in, fc_out, x = make_pair(n_hidden=4, n_out=3)
    set_output_columns(fc_out, [unit(0), unit(180), [0, 0, 1], [0, 1, 1]])
    w = fc_out.weight.detach().clone()
    with pytest.raises(ValueError, match="activations"):
        distinctiveness_step(fc_in, fc_out, None, 15)
    torch.testing.assert_close(fc_out.weight, w)


def test_removed_neurons_are_ignored():
    fc_in, fc_out, x = make_pair()
    with torch.no_grad():
        fc_out.weight[:, 5] = fc_out.weight[:, 3]
    acts = hidden(fc_in, x)
    step = distinctiveness_step(fc_in, fc_out, acts, 15, removed={5})
    assert step.removed == set() and step.n_similar_pairs == 0
    assert step.removed == set()
    fc_in2, fc_out2, _ = make_pair(n_hidden=3)
    step = distinctiveness_step(fc_in2, fc_out2, None, 15, removed={0, 1})
    assert math.isnan(step.min_angle) and math.isnan(step.max_angle)


# ------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("threshold", [0, 90, -5, 120])
def test_bad_threshold(threshold):
    fc_in, fc_out, x = make_pair()
    with pytest.raises(ValueError, match="threshold"):
        distinctiveness_step(fc_in, fc_out, hidden(fc_in, x), threshold)


def test_bad_mode_and_option():
    fc_in, fc_out, x = make_pair()
    acts = hidden(fc_in, x)
    with pytest.raises(ValueError, match="mode"):
        neuron_vectors(fc_in, fc_out, acts, "gradients")
    with pytest.raises(ValueError, match="mode"):
        distinctiveness_step(fc_in, fc_out, acts, 15, mode="gradients")
    with pytest.raises(ValueError, match="complementary"):
        distinctiveness_step(fc_in, fc_out, acts, 15, complementary="keep")
    with pytest.raises(ValueError, match="activations"):
        neuron_vectors(fc_in, fc_out, acts[:, :3], "activations")


# ---------------------------------------------------------------------- mask, model, shrink


def small_cnn(activation="sigmoid", seed=0):
    torch.manual_seed(seed)
    return CNN(conv_activation=activation, fc_activation=activation, **SMALL)


def batch(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 67, 67, generator=g), torch.randint(0, 7, (n,), generator=g)


def adam_step(model, opt, x, y):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def masked_entries(model, mask):
    """All parameter entries the mask must keep at zero, as one flat tensor."""
    parts = []
    for layer in mask.layers:
        fc_in, fc_out = model.fc_pair(layer)
        idx = sorted(mask.removed[layer])
        parts += [fc_in.weight[idx].flatten(), fc_in.bias[idx], fc_out.weight[:, idx].flatten()]
    return torch.cat(parts)


def masked_grads(model, mask):
    parts = []
    for layer in mask.layers:
        fc_in, fc_out = model.fc_pair(layer)
        idx = sorted(mask.removed[layer])
        parts += [
            fc_in.weight.grad[idx].flatten(),
            fc_in.bias.grad[idx],
            fc_out.weight.grad[:, idx].flatten(),
        ]
    return torch.cat(parts)


REMOVED = {"fc1": {1, 5, 30}, "fc2": {0, 3}, "fc3": {7}}


def test_mask_survives_adam_steps():
    model = small_cnn()
    x, y = batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):  # build up momentum first
        adam_step(model, opt, x, y)
    mask = PruneMask(model, ["fc1", "fc2", "fc3"])
    for layer, idx in REMOVED.items():
        mask.add(layer, idx)

    # Control: zeroing once is not enough, Adam's momentum revives the weights.
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    opt_snapshot = opt.state_dict()
    mask.apply()
    adam_step(model, opt, x, y)
    assert masked_entries(model, mask).abs().max() > 0

    model.load_state_dict(snapshot)
    opt.load_state_dict(opt_snapshot)
    mask.attach(opt)
    for _ in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        assert torch.all(masked_grads(model, mask) == 0)
        opt.step()
        assert torch.all(masked_entries(model, mask) == 0)
    assert not np.any(mask.alive("fc1")[[1, 5, 30]]) and mask.alive("fc1").sum() == 29

    mask.detach()  # hooks gone: gradients flow again
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    assert masked_grads(model, mask).abs().max() > 0


def test_mask_state_round_trip():
    model = small_cnn()
    mask = PruneMask(model, ["fc1", "fc3"])
    mask.add("fc1", [4, 2])
    state = json.loads(json.dumps(mask.state()))
    assert state == {"fc1": [2, 4], "fc3": []}
    again = PruneMask.from_state(model, state)
    assert again.removed == {"fc1": {2, 4}, "fc3": set()}
    with pytest.raises(ValueError):
        mask.add("fc2", [0])
    with pytest.raises(ValueError):
        mask.add("fc3", [8])


def test_prune_model_merges_duplicates_and_keeps_output():
    model = small_cnn().double()
    with torch.no_grad():  # fc2 neuron 11 duplicates neuron 2
        model.fc2.weight[11], model.fc2.bias[11] = model.fc2.weight[2], model.fc2.bias[2]
    x, _ = batch()
    x = x.double()
    with torch.no_grad():
        before, acts = model.forward_with_hidden(x, ("fc1", "fc2", "fc3"))
    mask = PruneMask(model, ["fc1", "fc2", "fc3"])
    # Weight mode: at initialisation the sigmoid CNN's hidden outputs barely vary over patterns,
    # so centred activation vectors are ~constant and nearly all pairs look similar/complementary.
    steps = prune_model(model, acts, mask, threshold=15, mode="input_weights")
    assert set(steps) == {"fc1", "fc2", "fc3"}
    assert steps["fc2"].removed == {11} and mask.removed["fc2"] == {11}
    assert mask.removed == {k: s.removed for k, s in steps.items()}
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, atol=1e-6, rtol=0)
    stats = layer_angle_stats(model, "fc2", acts["fc2"], "input_weights", 15)
    assert stats["n_alive"] == 15 and stats["n_similar"] == 0
    assert stats["min_angle"] > 0 and stats["max_angle"] <= 180


def test_layer_angle_stats_does_not_prune():
    model = small_cnn()
    with torch.no_grad():
        model.fc4.weight[:, 3] = model.fc4.weight[:, 0]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    stats = layer_angle_stats(model, "fc3", None, "output_weights", 15)
    assert stats["n_similar"] == 1 and stats["n_alive"] == 8
    assert stats["min_angle"] == pytest.approx(0, abs=1e-4)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_shrink_matches_masked_network(activation):
    model = small_cnn(activation).eval()
    mask = PruneMask(model, ["fc1", "fc2", "fc3"])
    for layer, idx in REMOVED.items():
        mask.add(layer, idx)
    mask.apply()
    x, _ = batch()
    with torch.no_grad():
        expected = model(x)
    for small in (shrink(model, mask), shrink(model)):  # mask, or all-zero detection
        assert small.hidden == (29, 14, 7)
        assert count_parameters(small) < count_parameters(model)
        with torch.no_grad():
            assert (small(x) - expected).abs().max() < 1e-5


def test_model_size_and_latency():
    model = small_cnn()
    res = model_size_and_latency(model, batch=2, repeats=2, warmup=1)
    assert res["params"] == count_parameters(model)
    assert res["latency_ms"] > 0
    assert model.training  # mode restored


def _pair_net(same_incoming: bool, parallel_outgoing: bool):
    """fc_in 4 -> 3 sigmoid units -> fc_out 2, where units 0 and 1 are alike in one sense."""
    torch.manual_seed(0)
    fc_in, fc_out = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)
    with torch.no_grad():
        fc_in.weight.copy_(
            torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.3, 1.5, -1.0, 2.0], [-1.0, 0.2, 0.7, -0.4]])
        )
        fc_in.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        if same_incoming:
            fc_in.weight[1] = fc_in.weight[0]
            fc_in.bias[1] = fc_in.bias[0]
        fc_out.weight.copy_(torch.tensor([[0.8, -0.5, 0.3], [-0.2, 0.9, -0.6]]))
        if parallel_outgoing:
            fc_out.weight[:, 1] = 2.0 * fc_out.weight[:, 0]
    x = torch.randn(50, 4)
    return fc_in, fc_out, x


def _outputs(fc_in, fc_out, x):
    with torch.no_grad():
        h = torch.sigmoid(fc_in(x))
        return fc_out(h), h


def test_a_merge_keeps_the_output_only_when_the_activations_are_equal():
    # activations mode: units 0 and 1 fire identically (angle 0) -> the merge is exact.
    fc_in, fc_out, x = _pair_net(same_incoming=True, parallel_outgoing=False)
    before, h = _outputs(fc_in, fc_out, x)
    step = distinctiveness_step(fc_in, fc_out, h, 15.0, mode="activations")
    assert step.similar and step.removed == {1}
    torch.testing.assert_close(_outputs(fc_in, fc_out, x)[0], before)

    # output_weights mode (the paper's): units 0 and 1 have parallel outgoing weights (angle 0)
    # but different activations -> merged all the same, and the output changes.
    fc_in, fc_out, x = _pair_net(same_incoming=False, parallel_outgoing=True)
    before, h = _outputs(fc_in, fc_out, x)
    step = distinctiveness_step(fc_in, fc_out, h, 15.0, mode="output_weights")
    assert step.similar and step.removed == {1}
    after = _outputs(fc_in, fc_out, x)[0]
    assert (after - before).abs().max() > 0.05


def test_paired_latency_times_every_model_in_turn():
    from emoprune.evaluation.size import paired_latency

    big, small = small_cnn(), shrink(small_cnn(), None)
    times = paired_latency({"cnn": big, "pruned": small}, in_size=67, repeats=5, warmup=1)
    assert set(times) == {"cnn", "pruned"} and all(len(t) == 5 for t in times.values())
    assert all(t > 0 for ts in times.values() for t in ts)
    assert big.training and small.training  # modes restored

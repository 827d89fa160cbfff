"""Gedeon's distinctiveness rules, one check at a time.

With a threshold ``t`` in degrees, between the vectors of two live hidden neurons:

* angle < t: the pair is *similar* -> keep the lower index, add the other's OUTGOING weights to
  it, remove the other. This keeps the network's output only when the two activations are
  equal; in ``output_weights`` mode (the paper's) that is not what the angle measures, so a merge
  can change the output, while in ``activations`` mode a near-zero angle means near-equal
  centred activations and the merge is nearly exact;
* angle > 180 - t: the pair is *complementary* -> remove both (adding their mean contribution to
  the next layer's bias) or, with ``complementary="fold"``, fold one into the other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from emoprune.choices import ACTIVATIONS, COMPLEMENTARY
from emoprune.models.cnn import CNN
from emoprune.pruning.angles import ArrayLike, cosines, neuron_vectors, to_float64
from emoprune.pruning.mask import PruneMask, removed_by_weights, zero_neurons


@dataclass
class PruneStep:
    """What one distinctiveness check found and did for one layer.

    ``similar`` holds (kept, removed, angle); ``complementary`` holds (i, j, angle) with i < j
    (both removed under ``remove_both``, j removed under ``fold``). ``min_angle``/``max_angle``
    and the pair counts describe the live neurons BEFORE the step, over all pairs (not just the
    greedily chosen ones), for the angle traces.
    """

    removed: set[int] = field(default_factory=set)
    similar: list[tuple[int, int, float]] = field(default_factory=list)
    complementary: list[tuple[int, int, float]] = field(default_factory=list)
    min_angle: float = float("nan")
    max_angle: float = float("nan")
    n_similar_pairs: int = 0
    n_complementary_pairs: int = 0


@dataclass
class _Analysis:
    candidates: np.ndarray  # (k, 2) pairs i < j past a threshold, most extreme first
    candidate_angles: np.ndarray  # (k,) their angles in degrees
    n_alive: int  # not removed (by mask or all-zero weights)
    min_angle: float
    max_angle: float
    n_similar: int
    n_complementary: int


def _check_threshold(threshold: float) -> None:
    if not 0 < threshold < 90:
        # At >= 90 the similar and complementary ranges would overlap.
        raise ValueError(f"threshold must be in (0, 90) degrees, got {threshold}")


@lru_cache(maxsize=8)
def _upper_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the pairs i < j (cached: the widths never change)."""
    rows, cols = np.triu_indices(n, 1)
    rows.flags.writeable = cols.flags.writeable = False  # shared by every call
    return rows, cols


def _analyse(
    fc_in: nn.Linear,
    fc_out: nn.Linear,
    activations: ArrayLike | None,
    threshold: float,
    mode: str,
    activation: str,
    removed: Iterable[int],
) -> _Analysis:
    """Angles over the live neurons and the candidate pairs, ranked by how far past t they are."""
    _check_threshold(threshold)
    cos = cosines(neuron_vectors(fc_in, fc_out, activations, mode, activation))
    dead = removed_by_weights(fc_in, fc_out)
    dead[sorted(int(i) for i in removed)] = True
    cos[dead, :] = np.nan
    cos[:, dead] = np.nan
    rows, cols = _upper_pairs(len(cos))
    pair_cos = cos[rows, cols]  # each pair once, i < j
    finite = pair_cos[~np.isnan(pair_cos)]
    # Selection works on cosines (angle < t <=> cos > cos t), so arccos runs on a handful of
    # values instead of the whole n x n matrix.
    cos_t = math.cos(math.radians(threshold))
    with np.errstate(invalid="ignore"):  # NaN comparisons are False, as intended
        similar = pair_cos > cos_t
        compl = pair_cos < -cos_t
    k = np.flatnonzero(similar | compl)
    # Most extreme first: min(angle, 180 - angle) ascending <=> |cos| descending.
    k = k[np.argsort(-np.abs(pair_cos[k]), kind="stable")]
    cand_angles = np.degrees(np.arccos(pair_cos[k]))
    return _Analysis(
        candidates=np.stack([rows[k], cols[k]], axis=1),
        candidate_angles=cand_angles,
        n_alive=int((~dead).sum()),
        # Largest cosine = smallest angle.
        min_angle=math.degrees(math.acos(finite.max())) if finite.size else float("nan"),
        max_angle=math.degrees(math.acos(finite.min())) if finite.size else float("nan"),
        n_similar=int(similar.sum()),
        n_complementary=int(compl.sum()),
    )


def distinctiveness_step(
    fc_in: nn.Linear,
    fc_out: nn.Linear,
    activations: ArrayLike | None,
    threshold: float,
    mode: str = "output_weights",
    complementary: str = "remove_both",
    activation: str = "sigmoid",
    removed: Iterable[int] = frozenset(),
) -> PruneStep:
    """Apply Gedeon's distinctiveness rules once to the hidden units between fc_in and fc_out.

    Args:
        fc_in: Linear layer into the hidden units, weight (n_hidden, n_in).
        fc_out: Linear layer out of them, weight (n_out, n_hidden); must have a bias.
        activations: (n_patterns, n_hidden) post-activation outputs over the training patterns
            (raw, not centred). Needed by mode ``activations`` and by any complementary pair (whose
            removal is compensated from the activations); may be None otherwise.
        threshold: t in degrees, in (0, 90).
        mode: see :func:`neuron_vectors`.
        complementary: ``remove_both`` or ``fold``.
        activation: the hidden units' function (centring, and the fold's complement rule).
        removed: indices already removed; they, and neurons whose weights are all zero, are
            ignored.

    A similar merge adds the removed neuron's outgoing weights to the kept one's, which keeps the
    next layer's input exactly only when the two activations are equal over the inputs that
    matter. In mode ``activations`` a small angle means nearly equal centred activations, so the
    merge is nearly exact; in ``output_weights`` (the paper's) it only means the two neurons
    *push* the next layer the same way, and the merge can change the output.

    Pairs are taken greedily, most extreme first (smallest min(angle, 180 - angle)), each neuron
    at most once per step. Weights are modified in place.
    """
    if complementary not in COMPLEMENTARY:
        raise ValueError(
            f"unknown complementary option {complementary!r}; use one of {COMPLEMENTARY}"
        )
    if fc_out.bias is None:
        raise ValueError("fc_out needs a bias to absorb removed neurons' contribution")
    an = _analyse(fc_in, fc_out, activations, threshold, mode, activation, removed)
    step = PruneStep(
        min_angle=an.min_angle,
        max_angle=an.max_angle,
        n_similar_pairs=an.n_similar,
        n_complementary_pairs=an.n_complementary,
    )
    acts = mean = None
    if an.n_complementary:
        # Checked before any write so a failure leaves the layer untouched.
        if activations is None:
            raise ValueError("complementary pairs need the activations to compensate their removal")
        acts = to_float64(activations)
        if acts.ndim != 2 or acts.shape[1] != fc_in.out_features:
            raise ValueError(
                f"activations must have shape (n_patterns, {fc_in.out_features}), got {acts.shape}"
            )
        mean = acts.mean(axis=0)
    used: set[int] = set()
    w = fc_out.weight
    with torch.no_grad():
        # Few pairs: a Python loop is fine here.
        for (i, j), angle in zip(an.candidates.tolist(), an.candidate_angles.tolist()):
            if i in used or j in used:
                continue
            used.update((i, j))
            if angle < 90.0:  # every candidate is past one threshold or the other
                w[:, i] += w[:, j]  # OUTGOING weights: keeps the output when a_i == a_j
                step.similar.append((i, j, angle))
                step.removed.add(j)
            elif complementary == "remove_both":
                fc_out.bias += w[:, i] * float(mean[i]) + w[:, j] * float(mean[j])
                step.complementary.append((i, j, angle))
                step.removed.update((i, j))
            else:
                # a_j ~ alpha + beta * a_i  =>  W_i a_i + W_j a_j = (W_i + beta W_j) a_i + alpha W_j
                alpha, beta = _complement_rule(acts, i, j, activation)
                w[:, i] += beta * w[:, j]
                fc_out.bias += alpha * w[:, j]
                step.complementary.append((i, j, angle))
                step.removed.add(j)
    zero_neurons(fc_in, fc_out, sorted(step.removed))
    return step


def _complement_rule(acts: np.ndarray, i: int, j: int, activation: str) -> tuple[float, float]:
    """(alpha, beta) with a_j = alpha + beta * a_i when the centred outputs are exact opposites.

    sigmoid: a_j = 1 - a_i; tanh: a_j = -a_i; relu (scaled by each unit's max m over the
    patterns, then centred): a_j / m_j = 1 - a_i / m_i.
    """
    if activation == "sigmoid":
        return 1.0, -1.0
    if activation == "tanh":
        return 0.0, -1.0
    if activation == "relu":
        m_i, m_j = float(acts[:, i].max()), float(acts[:, j].max())
        if m_i <= 0:  # unit i never fires (possible in the weight modes): keep j's mean instead
            return float(acts[:, j].mean()), 0.0
        return m_j, -m_j / m_i
    raise ValueError(f"unknown activation {activation!r}; use one of {ACTIVATIONS}")


def layer_angle_stats(
    model: CNN,
    layer: str,
    activations: ArrayLike | None,
    mode: str = "output_weights",
    threshold: float = 15.0,
    activation: str | None = None,
    removed: Iterable[int] = frozenset(),
) -> dict[str, float | int]:
    """Angle statistics of one hidden layer without pruning (for the min/max angle traces).

    Args:
        activations: (n_patterns, width) post-activation outputs (mode ``activations`` only).
        activation: defaults to ``model.fc_activation``.

    Returns:
        dict with min_angle, max_angle (NaN with < 2 live neurons), n_similar, n_complementary
        (pairs past the thresholds) and n_alive.
    """
    fc_in, fc_out = model.fc_pair(layer)
    an = _analyse(
        fc_in, fc_out, activations, threshold, mode, activation or model.fc_activation, removed
    )
    return {
        "min_angle": an.min_angle,
        "max_angle": an.max_angle,
        "n_similar": an.n_similar,
        "n_complementary": an.n_complementary,
        "n_alive": an.n_alive,
    }


def prune_model(
    model: CNN,
    activations_by_layer: Mapping[str, ArrayLike],
    mask: PruneMask,
    threshold: float,
    mode: str = "output_weights",
    complementary: str = "remove_both",
) -> dict[str, PruneStep]:
    """One distinctiveness check over each of ``mask.layers``, updating the mask.

    Args:
        activations_by_layer: {layer: (n_patterns, width)} post-activation outputs, collected
            before the call. A layer's activations are not recomputed after pruning the layer
            below it: similar merges keep the function (nearly) the same, so they stay valid.
    """
    steps: dict[str, PruneStep] = {}
    for layer in mask.layers:
        fc_in, fc_out = model.fc_pair(layer)
        steps[layer] = distinctiveness_step(
            fc_in,
            fc_out,
            activations_by_layer.get(layer),
            threshold,
            mode=mode,
            complementary=complementary,
            activation=model.fc_activation,
            removed=mask.removed[layer],
        )
        mask.add(layer, steps[layer].removed)
    mask.apply()
    return steps

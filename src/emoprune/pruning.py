"""Gedeon's distinctiveness pruning of the CNN's hidden fully connected units.

Each hidden neuron is described by a vector (its outgoing weights, as in the paper, or its
activations over the training patterns, as in Gedeon & Harris 1991); the angle between two
neurons' vectors measures how alike they are. With a threshold ``t`` in degrees:

* angle < t: the pair is *similar* -> keep the lower index, add the other's OUTGOING weights to it,
  remove the other;
* angle > 180 - t: the pair is *complementary* -> remove both (adding their mean contribution to
  the next layer's bias) or, with ``complementary="fold"``, fold one into the other.

Removed neurons are not deleted during training: their incoming row and bias and their outgoing
column are zeroed, and :class:`PruneMask` keeps them at zero through later optimiser steps.
:func:`shrink` builds a physically smaller network once training is done.

Angles are computed for all pairs at once from one normalised Gram matrix, so a check over the
paper's 512 + 128 + 64 hidden units costs milliseconds.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from emoprune.models.cnn import CNN, HIDDEN_LAYERS, count_parameters

MODES = ("output_weights", "input_weights", "full_weights", "activations")
COMPLEMENTARY = ("remove_both", "fold")
ACTIVATION_FUNCS = ("sigmoid", "relu", "tanh")

ArrayLike = np.ndarray | torch.Tensor


def _to_numpy(x: ArrayLike) -> np.ndarray:
    """float64 numpy copy of an array or tensor (angles near 0/180 need the precision)."""
    if isinstance(x, torch.Tensor):
        # Always a copy: a float64 CPU tensor would otherwise share memory with a parameter.
        return x.detach().to("cpu", torch.float64, copy=True).numpy()
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------------------- angles


def cosines(vectors: ArrayLike) -> np.ndarray:
    """Pairwise cosines between the rows of ``vectors``: one normalised float64 Gram matrix.

    Args:
        vectors: (n_neurons, dim), numpy array or torch tensor.

    Returns:
        (n_neurons, n_neurons) cosines clipped to [-1, 1]; the diagonal and the rows and columns
        of all-zero vectors (removed neurons) are NaN.
    """
    v = _to_numpy(vectors)
    if v.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n_neurons, dim), got shape {v.shape}")
    norms = np.linalg.norm(v, axis=1)
    zero = norms == 0
    # Dividing by 1 leaves zero rows at zero; they are set to NaN below.
    unit = v / np.where(zero, 1.0, norms)[:, None]
    cos = unit @ unit.T  # a @ a.T: numpy uses the symmetric BLAS kernel
    # Rounding can push |cos| slightly past 1, where arccos returns NaN.
    np.clip(cos, -1.0, 1.0, out=cos)
    cos[zero, :] = np.nan
    cos[:, zero] = np.nan
    np.fill_diagonal(cos, np.nan)
    return cos


def angles(vectors: ArrayLike) -> np.ndarray:
    """Pairwise angles in degrees between the rows of ``vectors``.

    Args:
        vectors: (n_neurons, dim), numpy array or torch tensor.

    Returns:
        (n_neurons, n_neurons) float64 angles in [0, 180]. The diagonal is NaN, and so are the
        rows and columns of all-zero vectors (removed neurons), so comparisons with them are
        always False downstream.
    """
    ang = cosines(vectors)
    return np.degrees(np.arccos(ang, out=ang), out=ang)  # NaN stays NaN


def neuron_vectors(
    fc_in: nn.Linear,
    fc_out: nn.Linear,
    activations: ArrayLike | None,
    mode: str,
    activation: str = "sigmoid",
) -> np.ndarray:
    """One vector per hidden neuron, whose pairwise angles measure distinctiveness.

    Args:
        fc_in: Linear layer into the hidden units, weight (n_hidden, n_in).
        fc_out: Linear layer out of the hidden units, weight (n_out, n_hidden).
        activations: (n_patterns, n_hidden) post-activation outputs; only used (and required)
            by mode ``activations``.
        mode: ``output_weights`` -> (n_hidden, n_out), the columns of fc_out.weight (the paper);
            ``input_weights`` -> (n_hidden, n_in + 1), rows of fc_in.weight with the bias last;
            ``full_weights`` -> (n_hidden, n_in + 1 + n_out), both concatenated;
            ``activations`` -> (n_hidden, n_patterns), the centred activations transposed.
        activation: the hidden units' function, which sets the centring in mode ``activations``:
            sigmoid -> a - 0.5 (so angles span 0-180; raw sigmoid vectors all lie in the positive
            orthant, where no angle exceeds 90 and the complementary case could never occur);
            tanh -> as is (already centred on 0); relu -> a / max(a) - 0.5 per neuron, and a
            dead neuron (max 0) stays all zero so it is ignored like a removed one.

    Returns:
        float64 (n_hidden, dim) array (a new array, possibly a transposed view).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    n_hidden = fc_in.out_features
    if fc_out.in_features != n_hidden:
        raise ValueError(
            f"fc_out takes {fc_out.in_features} inputs but fc_in has {n_hidden} outputs"
        )
    # Convert only what the mode uses: fc1's incoming weights are 512 x 2304.
    if mode == "activations":
        # Transposed views of fresh arrays: a transposing copy of 540 x 512 costs as much as
        # half the Gram matrix.
        return _centred_activations(activations, n_hidden, activation).T
    if mode == "output_weights":
        return _to_numpy(fc_out.weight).T
    w_in = _to_numpy(fc_in.weight)
    b_in = _to_numpy(fc_in.bias) if fc_in.bias is not None else np.zeros(n_hidden)
    incoming = np.concatenate([w_in, b_in[:, None]], axis=1)
    if mode == "input_weights":
        return incoming
    return np.concatenate([incoming, _to_numpy(fc_out.weight).T], axis=1)


def _centred_activations(
    activations: ArrayLike | None, n_hidden: int, activation: str
) -> np.ndarray:
    """(n_patterns, n_hidden) activations centred on the activation function's midpoint."""
    if activations is None:
        raise ValueError("mode 'activations' needs the hidden units' activations")
    a = _to_numpy(activations)
    if a.ndim != 2 or a.shape[1] != n_hidden:
        raise ValueError(f"activations must have shape (n_patterns, {n_hidden}), got {a.shape}")
    if activation == "sigmoid":
        return a - 0.5
    if activation == "tanh":
        return a.copy()  # np.asarray may have returned the caller's own array
    if activation == "relu":
        peak = a.max(axis=0)
        alive = peak > 0
        scaled = a / np.where(alive, peak, 1.0)
        # A dead unit would otherwise become a constant -0.5 vector, "similar" to every other dead
        # unit and to nothing useful; zero makes it ignored like a removed neuron.
        return np.where(alive, scaled - 0.5, 0.0)
    raise ValueError(f"unknown activation {activation!r}; use one of {ACTIVATION_FUNCS}")


# --------------------------------------------------------------------------- one pruning check


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


def _removed_by_weights(fc_in: nn.Linear, fc_out: nn.Linear) -> np.ndarray:
    """(n_hidden,) bool: neurons whose incoming row, bias and outgoing column are all zero."""
    with torch.no_grad():
        # The small outgoing matrix first; only neurons with a zero column need their (long)
        # incoming row checked.
        dead = (fc_out.weight == 0).all(dim=0)
        idx = dead.nonzero().flatten()
        if len(idx):
            rows_zero = (fc_in.weight.index_select(0, idx.to(fc_in.weight.device)) == 0).all(dim=1)
            if fc_in.bias is not None:
                rows_zero &= fc_in.bias.index_select(0, idx.to(fc_in.bias.device)) == 0
            dead[idx] = rows_zero.to(dead.device)
    return dead.cpu().numpy()


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
    dead = _removed_by_weights(fc_in, fc_out)
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


def _zero_neuron(fc_in: nn.Linear, fc_out: nn.Linear, idx: Sequence[int]) -> None:
    """Zero the incoming rows, biases and outgoing columns of hidden neurons ``idx`` (no_grad).

    Writes go to the parameters under no_grad rather than to ``.data`` so the version counter is
    bumped: a graph built before pruning then fails loudly instead of back-propagating stale
    weights.
    """
    if len(idx) == 0:
        return
    idx_t = torch.as_tensor(list(idx), dtype=torch.long, device=fc_in.weight.device)
    with torch.no_grad():
        fc_in.weight.index_fill_(0, idx_t, 0.0)
        if fc_in.bias is not None:
            fc_in.bias.index_fill_(0, idx_t, 0.0)
        fc_out.weight.index_fill_(1, idx_t.to(fc_out.weight.device), 0.0)


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
        acts = _to_numpy(activations)
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
    _zero_neuron(fc_in, fc_out, sorted(step.removed))
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
    raise ValueError(f"unknown activation {activation!r}; use one of {ACTIVATION_FUNCS}")


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
        activation: defaults to ``model.activation``.

    Returns:
        dict with min_angle, max_angle (NaN with < 2 live neurons), n_similar, n_complementary
        (pairs past the thresholds) and n_alive.
    """
    fc_in, fc_out = model.fc_pair(layer)
    an = _analyse(
        fc_in, fc_out, activations, threshold, mode, activation or model.activation, removed
    )
    return {
        "min_angle": an.min_angle,
        "max_angle": an.max_angle,
        "n_similar": an.n_similar,
        "n_complementary": an.n_complementary,
        "n_alive": an.n_alive,
    }


# ----------------------------------------------------------------------------------- the mask


class PruneMask:
    """Keeps removed hidden neurons dead while the network trains on.

    Zeroing weights once is not enough: Adam's running moments keep moving a zeroed weight, so
    :meth:`attach` both zeroes the masked gradients (hooks) and re-applies the mask after every
    optimiser step.
    """

    def __init__(self, model: CNN, layers: Sequence[str] = HIDDEN_LAYERS):
        for layer in layers:
            model.fc_pair(layer)  # raises on an unknown layer name
        self.model = model
        self.layers: tuple[str, ...] = tuple(layers)
        self.removed: dict[str, set[int]] = {layer: set() for layer in self.layers}
        self._handles: list = []

    def width(self, layer: str) -> int:
        return self.model.fc_pair(layer)[0].out_features

    def add(self, layer: str, indices: Iterable[int]) -> None:
        """Mark ``indices`` of ``layer`` as removed (call :meth:`apply` to zero them)."""
        if layer not in self.removed:
            raise ValueError(f"layer {layer!r} is not masked; masked layers: {self.layers}")
        idx = {int(i) for i in indices}
        bad = [i for i in idx if not 0 <= i < self.width(layer)]
        if bad:
            raise ValueError(f"neuron indices {sorted(bad)} out of range for {layer}")
        self.removed[layer] |= idx

    def alive(self, layer: str) -> np.ndarray:
        """(width,) bool, False for removed neurons."""
        keep = np.ones(self.width(layer), dtype=bool)
        keep[sorted(self.removed[layer])] = False
        return keep

    def apply(self) -> None:
        """Re-zero every removed neuron's incoming row, bias and outgoing column."""
        for layer in self.layers:
            _zero_neuron(*self.model.fc_pair(layer), sorted(self.removed[layer]))

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero masked gradients on backward and re-apply the mask after each ``optimizer.step``.

        The hooks read :attr:`removed` when they fire, so neurons added later are covered too.
        """
        self.detach()
        # One hook per parameter: fc2.weight is fc_out of fc1 (columns) AND fc_in of fc2 (rows).
        targets: dict[int, tuple[nn.Parameter, list[tuple[str, str]]]] = {}
        for layer in self.layers:
            fc_in, fc_out = self.model.fc_pair(layer)
            parts = [(fc_in.weight, "rows"), (fc_out.weight, "cols")]
            if fc_in.bias is not None:
                parts.append((fc_in.bias, "rows"))
            for p, kind in parts:
                targets.setdefault(id(p), (p, []))[1].append((layer, kind))
        for p, uses in targets.values():
            self._handles.append(p.register_hook(self._grad_hook(uses)))
        self._handles.append(optimizer.register_step_post_hook(lambda *_: self.apply()))
        self.apply()

    def _grad_hook(self, uses: list[tuple[str, str]]):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            grad = grad.clone()  # never modify autograd's buffer in place
            for layer, kind in uses:
                idx = sorted(self.removed[layer])
                if idx:
                    idx_t = torch.as_tensor(idx, dtype=torch.long, device=grad.device)
                    grad.index_fill_(0 if kind == "rows" else 1, idx_t, 0.0)
            return grad

        return hook

    def detach(self) -> None:
        """Remove the gradient and optimiser hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def state(self) -> dict[str, list[int]]:
        """JSON-serialisable {layer: sorted removed indices}, for checkpoints."""
        return {layer: sorted(self.removed[layer]) for layer in self.layers}

    @classmethod
    def from_state(cls, model: CNN, state: Mapping[str, Sequence[int]]) -> PruneMask:
        """Rebuild a mask saved with :meth:`state` (does not apply it)."""
        mask = cls(model, tuple(state))
        for layer, idx in state.items():
            mask.add(layer, idx)
        return mask


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
            activation=model.activation,
            removed=mask.removed[layer],
        )
        mask.add(layer, steps[layer].removed)
    mask.apply()
    return steps


# ------------------------------------------------------------------------ the smaller network


def shrink(model: CNN, mask: PruneMask | None = None) -> CNN:
    """A physically smaller CNN without the removed hidden neurons; same outputs.

    Removed neurons are those in ``mask`` (for its layers; the mask must have been applied), or,
    for layers without a mask, those whose incoming row, bias and outgoing column are all zero.
    Deleting them is exact: a removed sigmoid unit still outputs sigmoid(0) = 0.5, but its
    outgoing column is zero.

    Returns:
        A new CNN with ``hidden`` = the alive counts, on the model's device, in the model's
        train/eval mode.
    """
    keep: dict[str, torch.Tensor] = {}
    for layer in HIDDEN_LAYERS:
        if mask is not None and layer in mask.removed:
            alive = mask.alive(layer)
        else:
            alive = ~_removed_by_weights(*model.fc_pair(layer))
        keep[layer] = torch.as_tensor(np.flatnonzero(alive), dtype=torch.long)
    if any(len(k) == 0 for k in keep.values()):
        raise ValueError(
            f"cannot shrink: a layer has no live neurons ({ {k: len(v) for k, v in keep.items()} })"
        )
    ref = model.fc1.weight
    small = CNN(
        n_classes=model.n_classes,
        activation=model.activation,
        hidden=tuple(len(keep[layer]) for layer in HIDDEN_LAYERS),
        in_size=model.in_size,
    ).to(device=ref.device, dtype=ref.dtype)
    small.features.load_state_dict(model.features.state_dict())
    with torch.no_grad():
        prev: torch.Tensor | None = None  # live inputs of the current fc layer
        for n, layer in enumerate((*HIDDEN_LAYERS, "fc4")):
            src, dst = getattr(model, f"fc{n + 1}"), getattr(small, f"fc{n + 1}")
            rows = keep[layer].to(ref.device) if layer in keep else None
            w = src.weight
            if rows is not None:
                w = w.index_select(0, rows)
            if prev is not None:
                w = w.index_select(1, prev)
            dst.weight.copy_(w)
            dst.bias.copy_(src.bias if rows is None else src.bias.index_select(0, rows))
            prev = rows
    small.train(model.training)
    return small


def model_size_and_latency(
    model: nn.Module,
    in_size: int | None = None,
    batch: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> dict[str, float | int]:
    """Trainable parameter count and CPU inference latency per image.

    Runs ``repeats`` timed forward passes on a (batch, 3, in_size, in_size) input under
    torch.inference_mode in eval mode on a CPU copy of the model; latency is the median batch time
    divided by ``batch``, in ms. ``in_size`` defaults to ``model.in_size`` (227 for the paper's
    CNN). ``threads`` sets torch's intra-op threads for the measurement
    (restored afterwards); 1 gives stable numbers on a shared machine, where spinning worker
    threads that lose their core can make a forward pass tens of times slower.
    """
    cpu = model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()
    was_training = cpu.training
    cpu.eval()
    side = in_size if in_size is not None else getattr(model, "in_size", 227)
    x = torch.randn(batch, 3, side, side, dtype=next(cpu.parameters()).dtype)
    times = []
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for r in range(warmup + repeats):
                t0 = time.perf_counter()
                cpu(x)
                if r >= warmup:
                    times.append(time.perf_counter() - t0)
    finally:
        cpu.train(was_training)
        torch.set_num_threads(old_threads)
    return {
        "params": count_parameters(model),
        "latency_ms": 1000.0 * statistics.median(times) / batch,
    }

"""Neuron vectors and the pairwise angles between them: how alike two hidden units are.

Each hidden neuron is described by a vector (its outgoing weights, as in the paper, or its
activations over the training patterns, as in Gedeon & Harris 1991). All pairs are computed at
once from one normalised float64 Gram matrix, so a check over 512 units costs milliseconds.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from emoprune.choices import ACTIVATIONS, PRUNE_MODES

ArrayLike = np.ndarray | torch.Tensor


def to_float64(x: ArrayLike) -> np.ndarray:
    """float64 numpy copy of an array or tensor (angles near 0/180 need the precision)."""
    if isinstance(x, torch.Tensor):
        # Always a copy: a float64 CPU tensor would otherwise share memory with a parameter.
        return x.detach().to("cpu", torch.float64, copy=True).numpy()
    return np.asarray(x, dtype=np.float64)


def cosines(vectors: ArrayLike) -> np.ndarray:
    """Pairwise cosines between the rows of ``vectors``: one normalised float64 Gram matrix.

    Args:
        vectors: (n_neurons, dim), numpy array or torch tensor.

    Returns:
        (n_neurons, n_neurons) cosines clipped to [-1, 1]; the diagonal and the rows and columns
        of all-zero vectors (removed neurons) are NaN.
    """
    v = to_float64(vectors)
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
    if mode not in PRUNE_MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {PRUNE_MODES}")
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
        return to_float64(fc_out.weight).T
    w_in = to_float64(fc_in.weight)
    b_in = to_float64(fc_in.bias) if fc_in.bias is not None else np.zeros(n_hidden)
    incoming = np.concatenate([w_in, b_in[:, None]], axis=1)
    if mode == "input_weights":
        return incoming
    return np.concatenate([incoming, to_float64(fc_out.weight).T], axis=1)


def _centred_activations(
    activations: ArrayLike | None, n_hidden: int, activation: str
) -> np.ndarray:
    """(n_patterns, n_hidden) activations centred on the activation function's midpoint."""
    if activations is None:
        raise ValueError("mode 'activations' needs the hidden units' activations")
    a = to_float64(activations)
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
    raise ValueError(f"unknown activation {activation!r}; use one of {ACTIVATIONS}")

"""Pruning and angle tracing as callbacks of the training loop (``training.loop.fit``)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emoprune.models.cnn import CNN
from emoprune.pruning.angles import angles, neuron_vectors
from emoprune.pruning.distinctiveness import layer_angle_stats, prune_model
from emoprune.pruning.mask import PruneMask
from emoprune.training.loop import EpochStats


def collect_activations(
    model: CNN, x: torch.Tensor, layers: Sequence[str], device: torch.device, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Post-activation outputs {layer: (N, width)} over inputs ``x`` (N, 3, S, S), eval mode."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            _, hidden = model.forward_with_hidden(x[start : start + batch_size].to(device), layers)
            for layer in layers:
                chunks[layer].append(hidden[layer].float().cpu())
    model.train(was_training)
    return {layer: torch.cat(c).numpy() for layer, c in chunks.items()}


TRACE_FILE = "unpruned_trace.json"


def save_unpruned_trace(
    folder: str | Path,
    mode: str,
    epoch_rows: Sequence[Mapping[str, Any]],
    angle_rows: Sequence[Mapping[str, Any]],
) -> None:
    """``folder/unpruned_trace.json``: an unpruned run's epochs (EpochStats fields but the wall
    time) and angle trace rows, {fold: {"epochs": [...], "angles": [...]}}, at full float
    precision.

    prune_cnn reads it to start each fold where a distinctiveness check could first act
    (pruning.resume.skip_epoch): until then the pruned run *is* this run.
    """
    # No "seconds": a timing would make train_cnn's output differ on every run, so identical
    # weights would still make DVC rerun prune_cnn (reports/ keep the timings).
    dropped = {"fold", "seconds"}
    folds: dict[str, dict[str, list]] = {}
    for key, rows in (("epochs", epoch_rows), ("angles", angle_rows)):
        for row in rows:
            entry = folds.setdefault(str(row["fold"]), {"epochs": [], "angles": []})
            entry[key].append({k: v for k, v in row.items() if k not in dropped})
    # Written into train_cnn's output folder while it is still a temporary one (atomic_path).
    text = json.dumps({"mode": mode, "folds": folds}, indent=1)
    (Path(folder) / TRACE_FILE).write_text(text + "\n", encoding="utf-8")


def load_unpruned_trace(folder: str | Path, mode: str) -> dict[int, dict[str, list]]:
    """{fold: {"epochs", "angles"}} of ``save_unpruned_trace``; empty when the file is missing
    or traced another ``mode`` (the shortcut then does not apply)."""
    path = Path(folder) / TRACE_FILE
    if not path.is_file():
        return {}
    trace = json.loads(path.read_text(encoding="utf-8"))
    if trace.get("mode") != mode:
        return {}
    return {int(k): v for k, v in trace["folds"].items()}


class AngleTrace:
    """fit callback: the min/max pairwise angle (and pairs past the threshold) per layer.

    Rows go to ``rows`` (for angles.tsv) and to ``log`` (MLflow, step=epoch). Activations are
    collected only in ``activations`` mode, where they define the neuron vectors. With
    ``threshold=None`` only the angles are traced (train_cnn has no pruning threshold).
    """

    def __init__(
        self,
        layers: Sequence[str],
        mode: str,
        threshold: float | None,
        x_train: torch.Tensor,
        device: torch.device,
        fold: int,
        log: Callable[[dict, int], None],
        removed: Callable[[str], set[int]] = lambda layer: set(),
    ):
        self.layers, self.mode, self.threshold = tuple(layers), mode, threshold
        self.x_train, self.device, self.fold, self.log = x_train, device, fold, log
        self.removed = removed
        self.rows: list[dict[str, Any]] = []

    def activations(self, model: CNN) -> dict[str, np.ndarray]:
        if self.mode != "activations":
            return {}
        return collect_activations(model, self.x_train, self.layers, self.device)

    def record(self, epoch: int, model: CNN, acts: dict[str, np.ndarray]) -> None:
        rows = []
        for layer in self.layers:
            st = layer_angle_stats(
                model,
                layer,
                acts.get(layer),
                self.mode,
                self.threshold or 15.0,
                removed=self.removed(layer),
            )
            if self.threshold is None:  # min/max only: pair counts need a pruning threshold
                del st["n_similar"], st["n_complementary"]
            rows.append(
                {
                    "fold": self.fold,
                    "epoch": epoch,
                    "layer": layer,
                    **st,
                    "pruned_now": 0,
                    "removed_total": len(self.removed(layer)),
                }
            )
        self.add_rows(rows)

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        self.log(
            {
                f"fold{r['fold']}/{r['layer']}/{k}": float(v)
                for r in rows
                for k, v in r.items()
                if k not in ("fold", "epoch", "layer")
            },
            rows[0]["epoch"],
        )

    def __call__(self, stats: EpochStats, model: nn.Module) -> None:
        self.record(stats.epoch, model, self.activations(model))


@dataclass
class UnprunedState:
    """A run's weights and Adam state after ``epoch``, before any neuron was removed."""

    epoch: int
    weights: dict[str, torch.Tensor]
    adam: dict

    @classmethod
    def of(cls, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> UnprunedState:
        """Copies, which the run's later steps leave alone."""
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return cls(epoch, weights, copy.deepcopy(optimizer.state_dict()))


class Pruner(AngleTrace):
    """fit callback: Gedeon's distinctiveness check every ``every`` epochs, traced every epoch.

    The mask it fills is attached to the optimizer, so removed neurons stay dead through Adam's
    later steps. ``on_first_prune(model)`` runs once, right after the first check that removed
    something, to score the network "just after pruning". Given the run's ``optimizer``, it
    keeps the state just before that check as ``before_first_removal``: until then the run is
    the unpruned one, so the equal-size controls, whose first removal is at the same epoch,
    pick it up there instead of retraining from an earlier checkpoint.
    """

    def __init__(
        self,
        mask: PruneMask,
        *,
        complementary: str,
        start_epoch: int,
        every: int,
        on_first_prune: Callable[[nn.Module], None] | None = None,
        **kwargs: Any,
    ):
        super().__init__(mask.layers, removed=lambda layer: mask.removed[layer], **kwargs)
        self.mask, self.complementary = mask, complementary
        self.start_epoch, self.every = start_epoch, every
        self.on_first_prune = on_first_prune
        self.optimizer: torch.optim.Optimizer | None = None
        self.before_first_removal: UnprunedState | None = None
        self.log_ids: list[dict[str, Any]] = []  # the pruned neuron ids per check (JSON log)
        self.histograms: dict[str, dict[str, np.ndarray]] = {}  # see snapshot

    def is_check(self, epoch: int) -> bool:
        """Whether fit's call after ``epoch`` runs a distinctiveness check (the start itself is
        the checkpoint pruning resumes: it is traced, not checked)."""
        return epoch > self.start_epoch and (epoch - self.start_epoch) % self.every == 0

    def snapshot(self, name: str, model: CNN, acts: Mapping[str, np.ndarray]) -> None:
        """Keep the live neurons' pairwise angles {layer: (n_pairs,)} as ``histograms[name]``:
        ``first`` is the checkpoint pruning starts from, ``last`` the last check (before it
        pruned)."""
        for layer in self.layers:
            fc_in, fc_out = model.fc_pair(layer)
            vecs = neuron_vectors(
                fc_in, fc_out, acts.get(layer), self.mode, activation=model.fc_activation
            )
            vecs[sorted(self.mask.removed[layer])] = 0
            a = angles(vecs)
            values = a[np.triu_indices_from(a, 1)]
            self.histograms.setdefault(name, {})[layer] = values[~np.isnan(values)]

    def __call__(self, stats: EpochStats, model: nn.Module) -> None:
        epoch = stats.epoch
        if (epoch - self.start_epoch) % self.every:
            self.record(epoch, model, self.activations(model))
            return
        # Activations cost a forward pass over the training fold: gather them only when the
        # check needs them (the activations mode, or complementary pairs to fold into the bias).
        need = self.mode == "activations" or any(
            layer_angle_stats(
                model, layer, None, self.mode, self.threshold, removed=self.mask.removed[layer]
            )["n_complementary"]
            for layer in self.layers
        )
        acts = collect_activations(model, self.x_train, self.layers, self.device) if need else {}
        self.snapshot("last", model, acts)
        before = {layer: set(self.mask.removed[layer]) for layer in self.layers}
        unpruned = self.optimizer is not None and not any(before.values())
        state = UnprunedState.of(epoch, model, self.optimizer) if unpruned else None
        steps = prune_model(model, acts, self.mask, self.threshold, self.mode, self.complementary)
        rows = []
        for layer, step in steps.items():
            self.log_ids.append(
                {
                    "fold": self.fold,
                    "epoch": epoch,
                    "layer": layer,
                    "removed": sorted(int(i) for i in step.removed),
                    "similar": [[int(a), int(b), round(float(g), 3)] for a, b, g in step.similar],
                    "complementary": [
                        [int(a), int(b), round(float(g), 3)] for a, b, g in step.complementary
                    ],
                }
            )
            # The angles the check saw (before it pruned), and the neurons removed after it.
            rows.append(
                {
                    "fold": self.fold,
                    "epoch": epoch,
                    "layer": layer,
                    "min_angle": step.min_angle,
                    "max_angle": step.max_angle,
                    "n_similar": step.n_similar_pairs,
                    "n_complementary": step.n_complementary_pairs,
                    "n_alive": self.mask.width(layer) - len(before[layer]),
                    "pruned_now": len(step.removed),
                    "removed_total": len(self.mask.removed[layer]),
                }
            )
        self.add_rows(rows)
        if not any(self.mask.removed[layer] - before[layer] for layer in self.layers):
            return
        if state is not None:
            self.before_first_removal = state
        if self.on_first_prune is not None:
            self.on_first_prune(model)
            self.on_first_prune = None

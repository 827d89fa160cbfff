"""Equal-size controls for distinctiveness pruning: does the *choice* of neurons matter?

Each control starts from the same checkpoint as the distinctiveness-pruned CNN, trains with the
same seeds and batches, and removes the same number of live neurons from the same layer at the
same epochs as distinctiveness did on that fold; only which neurons go differs:

- ``random``: uniformly chosen live neurons (seeded by fold and epoch, apart from torch's RNG,
  so the batches stay the same);
- ``magnitude``: the live neurons with the smallest outgoing-weight norms (a column of the next
  layer's weight matrix), ties broken by the lower index.

Removal is plain (incoming row, bias and outgoing column zeroed, then masked); distinctiveness
also merges a removed neuron's outgoing weights into its twin, which is what it claims helps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from emoprune.models.cnn import CNN
from emoprune.pruning.mask import PruneMask
from emoprune.training.loop import EpochStats

Schedule = dict[int, dict[str, int]]  # {epoch: {layer: neurons to remove after that epoch}}


def schedule_from_log(log_ids: Iterable[Mapping[str, Any]], fold: int) -> Schedule:
    """The removals of one fold's distinctiveness log (pruned_ids.json rows): how many neurons
    of which layer went after which epoch. Checks that removed nothing are left out."""
    out: Schedule = {}
    for row in log_ids:
        if row["fold"] == fold and row["removed"]:
            layers = out.setdefault(int(row["epoch"]), {})
            layers[row["layer"]] = layers.get(row["layer"], 0) + len(row["removed"])
    return out


def choose(
    kind: str, model: CNN, layer: str, alive: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """(n,) sorted indices of live neurons of ``layer`` to remove; ``alive`` is (width,) bool."""
    live = np.flatnonzero(alive)
    if n > len(live):
        raise ValueError(f"{layer}: cannot remove {n} of {len(live)} live neurons")
    if kind == "random":
        return np.sort(rng.choice(live, size=n, replace=False))
    if kind == "magnitude":
        _, fc_out = model.fc_pair(layer)
        with torch.no_grad():
            norms = fc_out.weight[:, torch.as_tensor(live)].norm(dim=0).double().cpu().numpy()
        return np.sort(live[np.argsort(norms, kind="stable")[:n]])
    raise ValueError(f"unknown baseline {kind!r}; expected random or magnitude")


class ScheduledRemoval:
    """fit callback: after each scheduled epoch, remove that many live neurons chosen by
    ``kind``, through the same mask machinery as distinctiveness pruning."""

    def __init__(self, mask: PruneMask, kind: str, schedule: Schedule, seed: int):
        self.mask, self.kind, self.schedule, self.seed = mask, kind, schedule, seed
        self.log: list[dict[str, Any]] = []

    def __call__(self, stats: EpochStats, model: nn.Module) -> None:
        self.remove_at(stats.epoch, model)

    def remove_at(self, epoch: int, model: nn.Module) -> None:
        """Remove what the schedule says goes after ``epoch`` (nothing if it says nothing)."""
        for layer, n in sorted(self.schedule.get(epoch, {}).items()):
            # Its own generator per (seed, epoch): torch's RNG, and so the batches, stay as they
            # are in the distinctiveness run.
            rng = np.random.default_rng([self.seed, epoch])
            idx = choose(self.kind, model, layer, self.mask.alive(layer), n, rng)
            self.mask.add(layer, idx.tolist())
            self.log.append({"epoch": epoch, "layer": layer, "removed": idx.tolist()})
        self.mask.apply()

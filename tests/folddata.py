"""One fold for the pruning tests that train a small CNN: its seeded random images (24 training
and 8 validation images, (3, 67, 67), labels cycling through the 7 classes) and its context."""

from __future__ import annotations

import numpy as np
import torch

from emoprune.training.crossval import FoldTensors
from emoprune.training.driver import FoldContext


def random_fold(seed: int = 0) -> FoldTensors:
    g = torch.Generator().manual_seed(seed)
    return FoldTensors(
        x_train=torch.randn(24, 3, 67, 67, generator=g),
        y_train=torch.arange(24) % 7,
        x_val=torch.randn(8, 3, 67, 67, generator=g),
        y_val=torch.arange(8) % 7,
        mean=np.zeros(3),
        std=np.ones(3),
    )


def cpu_fold(out, precision: str = "fp32") -> FoldContext:
    """Fold 0 of these tests: seed 7, on the CPU, classes a-g, checkpoints in ``out``."""
    return FoldContext(0, 7, torch.device("cpu"), tuple("abcdefg"), out, (), precision)

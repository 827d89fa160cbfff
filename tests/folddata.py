"""One fold of seeded random images for the pruning tests that train a small CNN: 24 training
and 8 validation images, (3, 67, 67), labels cycling through the 7 classes."""

from __future__ import annotations

import numpy as np
import torch

from emoprune.training.crossval import FoldTensors


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

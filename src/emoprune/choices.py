"""The named choices that params, models and pruning share: one source for each list.

Torch-free on purpose, so validating params.yaml never imports torch.
"""

from __future__ import annotations

from typing import Literal, get_args

# SFEW's seven emotions; a class's label is its index here (Angry = 0).
EMOTIONS = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")

Device = Literal["auto", "cpu", "cuda"]
# Training arithmetic: bf16 autocast where the hardware has it (AVX512-BF16/AMX, or a GPU).
Precision = Literal["auto", "fp32", "bf16"]
GroupBy = Literal["none", "clip"]

Activation = Literal["sigmoid", "relu", "tanh"]
Init = Literal["pytorch", "he", "glorot"]
HiddenLayer = Literal["fc1", "fc2", "fc3"]
PruneMode = Literal["output_weights", "input_weights", "full_weights", "activations"]
Complementary = Literal["remove_both", "fold"]
Baseline = Literal["random", "magnitude"]  # equal-size controls of distinctiveness pruning

Arch = Literal["resnet18", "resnet34", "resnet50"]
Weights = Literal["auto", "imagenet", "none"]

ACTIVATIONS: tuple[str, ...] = get_args(Activation)
INITS: tuple[str, ...] = get_args(Init)
HIDDEN_LAYERS: tuple[str, ...] = get_args(HiddenLayer)
PRUNE_MODES: tuple[str, ...] = get_args(PruneMode)
COMPLEMENTARY: tuple[str, ...] = get_args(Complementary)
BASELINES: tuple[str, ...] = get_args(Baseline)
ARCHS: tuple[str, ...] = get_args(Arch)
WEIGHTS: tuple[str, ...] = get_args(Weights)

# Degrees, open: 0 prunes nothing, and from 90 the similar and complementary ranges overlap.
PRUNE_THRESHOLD_RANGE = (0, 90)

"""Shared fixtures: a tiny generated SFEW-like sample, and helpers for crafted data trees."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from emoprune.data import sample

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory) -> Path:
    """4 frames per class (3 for Disgust), generated once per test session. Treat as read-only."""
    out = tmp_path_factory.mktemp("sample") / "raw"
    sample.generate(out, per_class=4, seed=0)
    return out


@pytest.fixture
def raw_copy(tiny_sample, tmp_path) -> Path:
    """A writable copy of the tiny sample, to break in a test."""
    dst = tmp_path / "raw"
    shutil.copytree(tiny_sample, dst)
    return dst


@pytest.fixture
def clean_env(monkeypatch):
    """No tracking settings leaking in from the developer's shell or from DVC."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "DVC_ROOT",
                "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "EMOPRUNE_PIPELINE_ID"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for running stages and dvc: the venv first on PATH, no tracking leaks."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "DVC_", "EMOPRUNE_"))}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env

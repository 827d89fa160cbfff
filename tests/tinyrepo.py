"""A tiny but real copy of the project in a temporary git repo, for the end-to-end tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from benchmarks.project import make_project, set_params  # noqa: F401 (re-exported)
from conftest import subprocess_env

# Tiny but real: every stage runs, with budgets small enough for 2 CPU cores.
TINY_PARAMS = {
    "cv.folds": 2,
    "cnn.epochs": 2,
    "cnn.checkpoint_every": 1,
    "prune.start_epoch": 1,
    "prune.layers": ["fc1", "fc2", "fc3"],
    "mlp.epochs": 3,
    "finetune.epochs": 1,
}


def env_for(repo: Path, **extra: str) -> dict[str, str]:
    # An empty torch cache: the result must not depend on the developer's downloaded weights;
    # and offline: the weights "mirror" is a loopback port nobody listens on (refused at once).
    return subprocess_env(
        TORCH_HOME=str(repo.parent / "torch-home"),
        EMOPRUNE_WEIGHTS_MIRROR="http://127.0.0.1:9",
        **extra,
    )


def run(repo: Path, *cmd: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``repo`` (venv first on PATH, ``env`` added); it must succeed."""
    proc = subprocess.run(
        cmd, cwd=repo, env=env_for(repo, **env), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def commit(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)


def make_repo(repo: Path, sample: Path) -> Path:
    """The project's files, tiny params and ``sample`` as data/raw, committed; not yet run."""
    return make_project(
        repo, lambda raw: shutil.copytree(sample, raw), TINY_PARAMS, env=env_for(repo)
    )


# The stages that log an MLflow run, in DAG order (check_params imports no MLflow).
LOGGED_STAGES = (
    "ingest",
    "resize",
    "features",
    "train_mlp",
    "train_cnn",
    "prune_cnn",
    "finetune_resnet",
    "evaluate",
)
TIMINGS = ("seconds", "latency", "ms_per_image")  # wall-clock figures vary run to run
METRICS = ("ingest", "train_mlp", "train_cnn", "prune_cnn", "finetune_resnet", "evaluate")


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not any(t in k for t in TIMINGS)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def read_metrics(repo: Path) -> dict:
    """Every stage's metrics.json and details.json, but wall-clock fields."""
    return {
        f"{s}/{f}": without_timings(json.loads((repo / f"reports/{s}/{f}").read_text()))
        for s in METRICS
        for f in ("metrics.json", "details.json")
    }

"""Shared fixtures: a tiny generated SFEW-like sample, and helpers for crafted data trees."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from benchmarks.project import clean_env as project_env
from emoprune.data import sample

REPO = Path(__file__).resolve().parents[1]

# Under pytest-xdist every worker (and each stage or dvc process it starts, which inherits the
# environment) runs torch on one thread: two workers with two OpenMP threads each oversubscribe
# two cores, and spinning OpenMP threads then slow every one of them several times over.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"
CHROMIUM = "/usr/bin/chromium"
# Headless as root, and quiet: with background networking on, Chromium keeps dialling Google's
# hosts, which this machine's closed network refuses.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = REPO / "test-artifacts" / "browser"  # the browser tests' screenshots


SYSTEM_TMP = tempfile.gettempdir()  # before session_tmpdir: reachable by other users


@pytest.fixture(scope="session", autouse=True)
def session_tmpdir(tmp_path_factory):
    """The temporary files of the tests, and of every process they start, go under the session's
    basetemp, which pytest prunes: MLflow never removes the folder it downloads a ``runs:/``
    model into, and a stage killed with SIGKILL cannot remove its own."""
    before = os.environ.get("TMPDIR")
    path = tmp_path_factory.mktemp("tmp")
    os.environ["TMPDIR"] = str(path)
    tempfile.tempdir = None  # recomputed from TMPDIR when next needed
    yield path
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before
    tempfile.tempdir = None


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by Playwright (which downloads no browser here)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"{CHROMIUM} is missing: .ci/run installs Debian's chromium with apt-get "
            "(`make test` alone installs no system package)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


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
    for var in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_RUN_ID",
        "MLFLOW_EXPERIMENT_NAME",
        "DVC_ROOT",
        "DVC_EXP_NAME",
        "DVC_EXP_BASELINE_REV",
        "EMOPRUNE_PIPELINE_ID",
        "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING",
    ):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for running stages and dvc: the venv first on PATH, no tracking leaks."""
    return project_env(**extra)


@pytest.fixture(scope="session")
def pipeline(tiny_sample, tmp_path_factory):
    """A tiny repo after `dvc repro` and a commit: (repo, repro's output, git status after it).

    Shared by the end-to-end, browser and tracking-server tests; tests may add experiments,
    never break it. The repro's metrics are kept in ``first_metrics.json`` beside the repo.
    """
    import json

    import tinyrepo

    repo = tinyrepo.make_repo(tmp_path_factory.mktemp("repo"), tiny_sample)
    proc = tinyrepo.run(repo, "dvc", "repro")
    (repo.parent / "first_metrics.json").write_text(json.dumps(tinyrepo.read_metrics(repo)))
    status = tinyrepo.run(repo, "git", "status", "--porcelain").stdout
    # What a user commits after a repro: queued experiments start from the committed state.
    tinyrepo.commit(repo, "repro")
    return repo, proc.stdout + proc.stderr, status

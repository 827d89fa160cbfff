"""End to end: the real `dvc repro` on a tiny generated sample, in a temporary git repo.

One module-scoped pipeline run feeds every assertion below; later stages extend it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from emoprune.data.ingest import read_manifest

from conftest import REPO, subprocess_env

pytestmark = pytest.mark.e2e

# Tiny but real: every stage runs, with budgets small enough for 2 CPU cores.
TINY_PARAMS = {
    "cv.folds": 2,
}
SKIP = {"data.dvc", "dvc.lock"}


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [f for f in out if f and f not in SKIP and not f.startswith("reports/")
            and (REPO / f).is_file()]


def set_params(repo: Path, values: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in values.items():
        *sections, key = dotted.split(".")
        node = params
        for s in sections:
            node = node.setdefault(s, {})
        node[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def sh(repo: Path, *cmd: str, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=repo, env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def pipeline(tiny_sample, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    for f in project_files():
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, repo / f)
    set_params(repo, TINY_PARAMS)
    shutil.copytree(tiny_sample, repo / "data" / "raw")
    (repo / "data.dvc").write_text("outs:\n- path: data/raw\n")
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "dvc", "commit", "-f", "-q", "data.dvc")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    proc = sh(repo, "dvc", "repro")
    return repo, proc.stdout + proc.stderr


def runs(repo: Path):
    mlflow.set_tracking_uri(f"sqlite:///{repo}/mlflow.db")
    client = MlflowClient()
    exp = client.get_experiment_by_name("emoprune")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_outputs(pipeline):
    repo, _ = pipeline
    records = read_manifest(repo / "outputs/ingest/manifest.csv")
    assert len(records) == 27 and {r.fold for r in records} == {0, 1}
    report = json.loads((repo / "reports/ingest.json").read_text())
    assert report["n_images"] == 27 and report["per_class"]["Disgust"] == 3
    cnn = np.load(repo / "outputs/resize/cnn_227.npy")
    resnet = np.load(repo / "outputs/resize/resnet_224.npy")
    assert cnn.shape == (27, 227, 227, 3) and resnet.shape == (27, 224, 224, 3)


def test_dvc_status_is_clean_and_git_sees_no_strays(pipeline):
    repo, _ = pipeline
    status = sh(repo, "dvc", "status", "--json").stdout
    assert json.loads(status) == {}
    porcelain = sh(repo, "git", "status", "--porcelain").stdout.splitlines()
    # Only what a repro is expected to change: the lock file and the metrics reports.
    assert all(l[3:] in ("dvc.lock",) or l[3:].startswith("reports/") for l in porcelain), porcelain


def test_mlflow_runs_and_tags(pipeline):
    repo, _ = pipeline
    _, all_runs = runs(repo)
    parents = [r for r in all_runs if r.data.tags.get("emoprune.role") == "pipeline"]
    assert len(parents) == 1
    stages = {r.info.run_name: r for r in all_runs if r not in parents}
    assert {"ingest", "resize"} <= set(stages)
    head = sh(repo, "git", "rev-parse", "HEAD").stdout.strip()
    for name, r in stages.items():
        tags = r.data.tags
        assert r.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["dvc.stage"] == name and tags["dvc.exp_name"] == "workspace"
        assert tags["git.commit"] == head and tags["dvc.baseline_rev"] == head
        assert tags["pipeline.id"] == parents[0].data.tags["pipeline.id"]
    assert stages["ingest"].data.params["cv.folds"] == "2"
    assert stages["ingest"].data.metrics["n_images"] == 27
    client, _ = runs(repo)
    artifacts = [a.path for a in client.list_artifacts(stages["ingest"].info.run_id)]
    assert "class_distribution.png" in artifacts
    assert (repo / "mlartifacts").is_dir()


def test_second_repro_is_cached_and_logs_nothing(pipeline):
    repo, _ = pipeline
    _, before = runs(repo)
    out = sh(repo, "dvc", "repro").stdout
    assert "didn't change, skipping" in out and "Running stage" not in out
    _, after = runs(repo)
    assert len(after) == len(before)

"""A shared tracking server, as a team runs one: `mlflow server` over PostgreSQL, artifacts on
local disk, the whole tiny pipeline logging to it over HTTP; then the server goes away."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import tinyrepo
from servers import free_port, mlflow_server, postgres, psql

# Its own worker: the server repro is long, and the other long group is `pipeline`.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("server")]

UPSTREAM = (
    "outputs/ingest",
    "outputs/resize",
    "outputs/features",
    "outputs/models/cnn",
    "outputs/models/mlp",
    "outputs/models/resnet",
    "reports/train_cnn",
    "reports/train_mlp",
)


def digests(repo: Path, folders) -> dict[str, str]:
    return {
        str(p.relative_to(repo)): hashlib.sha1(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted((repo / folder).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def served(tiny_sample, tmp_path_factory):
    """(repo, server URL, database URI, server artifacts) after `dvc repro` against it."""
    base = tmp_path_factory.mktemp("shared")
    artifacts = base / "artifacts"
    with postgres() as db, mlflow_server(db, artifacts, base / "server.log") as url:
        repo = tinyrepo.make_repo(base / "repo", tiny_sample)
        tinyrepo.run(repo, "dvc", "repro", MLFLOW_TRACKING_URI=url)
        tinyrepo.commit(repo, "repro")  # metrics files (cache: false) are git's to keep
        yield repo, url, db, artifacts


def test_the_pipeline_logs_to_the_server_and_its_postgres(served):
    repo, url, db, artifacts = served
    assert not (repo / "mlflow.db").exists()  # nothing went to the local store
    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("emoprune")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("emoprune.role") == "pipeline"]
    stages = {r.data.tags["dvc.stage"]: r for r in runs if r not in parents}
    assert len(parents) == 1 and set(stages) == set(tinyrepo.LOGGED_STAGES)
    assert all(
        r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        for r in stages.values()
    )
    # The runs live in PostgreSQL's tables...
    stored = psql(db, f"SELECT count(*) FROM runs WHERE experiment_id = {exp.experiment_id}")
    assert int(stored) == len(runs)
    steps = psql(db, "SELECT count(*) FROM metrics WHERE key = 'fold0/fc2/min_angle'")
    assert int(steps) >= 2
    # ...and the artifacts went through the server to its artifact root.
    evaluate = stages["evaluate"].info.run_id
    assert client.get_run(evaluate).info.artifact_uri.startswith("mlflow-artifacts:")
    local = client.download_artifacts(
        evaluate, "evaluate/plots/confusion_cnn.png", str(repo.parent)
    )
    assert Path(local).read_bytes()[:4] == b"\x89PNG"
    assert list(artifacts.rglob("confusion_cnn.png"))
    models = list(artifacts.rglob("model_fold0*")) + list(artifacts.rglob("MLmodel"))
    assert models, "logged models must reach the server's artifact root"


def test_same_results_as_the_sqlite_run(served, pipeline):
    """The whole DAG is deterministic: two fresh repros of the same data and params (one on
    sqlite, one on the server) give equal metrics, wall-clock fields aside."""
    repo, _, _, _ = served
    local, _, _ = pipeline
    first = json.loads((local.parent / "first_metrics.json").read_text())
    assert tinyrepo.read_metrics(repo) == first


def test_predict_loads_a_logged_model_through_the_server(served, tmp_path):
    """By run id (MLFLOW_TRACKING_URI set to the server) and by the server's artifact URL, the
    same model gives the same lines, and no download is left in the temporary folder."""
    from emoprune.predict import ARTIFACTS_API

    repo, url, _, _ = served
    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("emoprune")
    (run,) = client.search_runs([exp.experiment_id], "tags.`dvc.stage` = 'train_cnn'")
    (model,) = [
        m
        for m in client.search_logged_models(
            [exp.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        if m.name == "model_fold0"
    ]
    location = model.artifact_location
    assert location.startswith("mlflow-artifacts:/"), location
    images = [str(p) for p in sorted((repo / "data/raw").rglob("*.png"))[:3]]
    lines = []
    for uri in (
        f"runs:/{run.info.run_id}/model_fold0",
        url + ARTIFACTS_API + "/" + location.removeprefix("mlflow-artifacts:/"),
    ):
        proc = subprocess.run(
            ["emoprune", "predict", "--uri", uri, *images],
            cwd=repo,
            capture_output=True,
            text=True,
            env=tinyrepo.env_for(repo, MLFLOW_TRACKING_URI=url, TMPDIR=str(tmp_path)),
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines.append(proc.stdout.splitlines())
    assert len(lines[0]) == len(images) and lines[0] == lines[1]
    assert not any(tmp_path.iterdir())


def test_an_unreachable_server_fails_fast_and_touches_nothing_upstream(served):
    """No server answers; a param change reruns prune_cnn, which must stop at once."""
    repo, _, _, _ = served
    before = digests(repo, UPSTREAM)
    dead = f"http://127.0.0.1:{free_port()}"
    tinyrepo.set_params(repo, {"prune.threshold": 15})
    start = time.monotonic()
    proc = subprocess.run(
        ["dvc", "repro"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=tinyrepo.env_for(repo, MLFLOW_TRACKING_URI=dead),
        timeout=300,
    )
    elapsed = time.monotonic() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert elapsed < 90, elapsed
    assert f"error: [prune_cnn] MLflow tracking server {dead} is unreachable" in out, out[-2000:]
    assert "Traceback" not in out
    assert digests(repo, UPSTREAM) == before
    assert not list((repo / "outputs").rglob(".*.tmp"))  # no half-written output
    # Nothing is lost: DVC removed prune_cnn's outputs before running it, and restores them
    # from its cache (models) and git (metrics files) once the params are back.
    tinyrepo.run(repo, "git", "checkout", "--", ".")
    tinyrepo.run(repo, "dvc", "checkout", "-q")
    status = tinyrepo.run(repo, "dvc", "status", "--json").stdout
    assert status.strip() == "{}", status

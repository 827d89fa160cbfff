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
    "cnn.epochs": 2,
    "cnn.checkpoint_every": 1,
    "prune.start_epoch": 1,
    "prune.layers": ["fc1", "fc2", "fc3"],
    "mlp.epochs": 3,
    "finetune.epochs": 1,
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
    # An empty torch cache: the result must not depend on the developer's downloaded weights.
    env = subprocess_env(TORCH_HOME=str(repo.parent / "torch-home"))
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
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
    status = sh(repo, "git", "status", "--porcelain").stdout
    # What a user commits after a repro: queued experiments start from the committed state.
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "repro")
    return repo, proc.stdout + proc.stderr, status


def runs(repo: Path):
    mlflow.set_tracking_uri(f"sqlite:///{repo}/mlflow.db")
    client = MlflowClient()
    exp = client.get_experiment_by_name("emoprune")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_outputs(pipeline):
    repo, _, _ = pipeline
    records = read_manifest(repo / "outputs/ingest/manifest.csv")
    assert len(records) == 27 and {r.fold for r in records} == {0, 1}
    report = json.loads((repo / "reports/ingest.json").read_text())
    assert report["n_images"] == 27 and report["per_class"]["Disgust"] == 3
    cnn = np.load(repo / "outputs/resize/cnn_227.npy")
    resnet = np.load(repo / "outputs/resize/resnet_224.npy")
    assert cnn.shape == (27, 227, 227, 3) and resnet.shape == (27, 224, 224, 3)


def test_dvc_status_is_clean_and_git_sees_no_strays(pipeline):
    repo, _, after_repro = pipeline
    status = sh(repo, "dvc", "status", "--json").stdout
    assert json.loads(status) == {}
    porcelain = after_repro.splitlines()
    # Only what a repro is expected to change: the lock file and the metrics reports.
    assert all(l[3:] in ("dvc.lock",) or l[3:].startswith("reports/") for l in porcelain), porcelain


def test_mlflow_runs_and_tags(pipeline):
    repo, _, _ = pipeline
    _, all_runs = runs(repo)
    parents = [r for r in all_runs if r.data.tags.get("emoprune.role") == "pipeline"]
    assert len(parents) == 1
    stages = {r.info.run_name: r for r in all_runs if r not in parents}
    assert {"ingest", "resize", "features", "train_mlp", "train_cnn", "prune_cnn",
            "finetune_resnet", "evaluate"} <= set(stages)
    head = sh(repo, "git", "rev-parse", "HEAD~1").stdout.strip()  # the commit repro ran on
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
    repo, _, _ = pipeline
    _, before = runs(repo)
    out = sh(repo, "dvc", "repro").stdout
    assert "didn't change, skipping" in out and "Running stage" not in out
    _, after = runs(repo)
    assert len(after) == len(before)


TIMINGS = ("seconds", "latency", "ms_per_image")  # wall-clock figures vary run to run
METRICS = ("train_mlp", "train_cnn", "prune_cnn", "finetune_resnet", "evaluate")


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items()
                if not any(t in k for t in TIMINGS)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def read_metrics(repo: Path) -> dict:
    return {s: without_timings(json.loads((repo / f"reports/{s}/metrics.json").read_text()))
            for s in METRICS}


def test_the_whole_dag_is_deterministic(pipeline):
    repo, _, _ = pipeline
    first = read_metrics(repo)
    sh(repo, "dvc", "repro", "-f")
    assert read_metrics(repo) == first


def _wait_for_first_epoch(repo: Path, timeout: float = 240) -> None:
    """Until fold 0's epoch-1 checkpoint exists in the stage's temporary output folder."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list((repo / "outputs/models").glob(".cnn.*.tmp/fold0_epoch001.pt")):
            return
        time.sleep(0.2)
    raise AssertionError("train_cnn never finished an epoch")


@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_a_killed_stage_leaves_nothing_and_reruns_to_the_same_metrics(pipeline, sig):
    import os
    import signal
    import time

    repo, _, _ = pipeline
    before = read_metrics(repo)
    started = time.time()
    env = subprocess_env(TORCH_HOME=str(repo.parent / "torch-home"))
    proc = subprocess.Popen(["dvc", "repro", "-f", "-s", "train_cnn"], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_for_first_epoch(repo)
        # The whole process group, as a terminal's Ctrl-C or a `kill -9` of the job would.
        os.killpg(proc.pid, getattr(signal, sig))
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    if sig == "SIGINT":
        assert "Traceback" not in out, out[-2000:]
        assert not list((repo / "outputs/models").glob(".cnn.*.tmp"))  # cleaned on the way out
    sh(repo, "dvc", "repro")
    assert not list((repo / "outputs/models").glob(".*.tmp"))
    assert read_metrics(repo) == before
    killed = [r for r in runs(repo)[1] if r.info.run_name == "train_cnn"
              and r.info.start_time / 1000 > started]
    statuses = sorted(r.info.status for r in killed)
    assert statuses == ["FINISHED", "KILLED"], statuses  # never left RUNNING


def test_train_cnn_outputs_and_tracking(pipeline):
    from emoprune.cnn_cv import load_cnn_checkpoint

    repo, _, _ = pipeline
    for k in (0, 1):
        model, meta, opt = load_cnn_checkpoint(repo / f"outputs/models/cnn/fold{k}.pt")
        assert meta["epoch"] == 2 and meta["hidden"] == [512, 128, 64] and opt is None
        _, meta1, opt1 = load_cnn_checkpoint(repo / f"outputs/models/cnn/fold{k}_epoch001.pt")
        assert meta1["epoch"] == 1 and opt1 is not None  # resumable: Adam's state is kept
    metrics = json.loads((repo / "reports/train_cnn/metrics.json").read_text())
    for key in ("train_acc", "train_f1", "val_acc", "val_f1", "seconds_per_epoch"):
        assert set(metrics[key]) == {"mean", "std"}
        assert set(metrics["per_fold"]) == {"0", "1"} and key in metrics["per_fold"]["0"]
    assert metrics["n_params"] == 1_328_615
    epochs = (repo / "reports/train_cnn/epochs.tsv").read_text().splitlines()
    assert epochs[0].split("\t")[:3] == ["epoch", "train_loss", "train_acc"] and len(epochs) == 3
    client, all_runs = runs(repo)
    run = next(r for r in all_runs if r.info.run_name == "train_cnn")
    for name in ("fold0/train_loss", "fold1/val_acc", "val_acc", "fc2/min_angle",
                 "fold0/fc1/max_angle"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2], name
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list",
        filter_string=f"source_run_id='{run.info.run_id}'")
    assert {m.name for m in models} == {"model_fold0", "model_fold1"}
    info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model_fold0")
    assert tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 3, 227, 227)
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert {"reports/loss.png", "reports/metrics.json", "reports/angles.tsv"} <= arts
    loaded = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model_fold0")
    assert loaded.fc1.out_features == 512


def test_prune_cnn_outputs(pipeline):
    repo, _, _ = pipeline
    metrics = json.loads((repo / "reports/prune_cnn/metrics.json").read_text())
    for key in ("val_acc_before", "val_acc_after_first_prune", "val_acc", "val_f1",
                "fc1_left", "fc2_left", "fc3_left", "params_shrunk", "latency_ms_shrunk"):
        assert set(metrics[key]) == {"mean", "std"}, key
    assert metrics["threshold"] == 25
    header = (repo / "reports/prune_cnn/angles.tsv").read_text().splitlines()[0].split("\t")
    assert {"fc1_min_angle", "fc2_max_angle", "fc3_n_similar", "fc1_removed_total"} <= set(header)
    ids = json.loads((repo / "reports/prune_cnn/pruned_ids.json").read_text())
    assert {e["layer"] for e in ids} == {"fc1", "fc2", "fc3"}


def test_exp_run_threshold_reruns_only_pruning(pipeline):
    repo, _, _ = pipeline
    proc = sh(repo, "dvc", "exp", "run", "-n", "t15", "-S", "prune.threshold=15")
    ran = {line.split("'")[1] for line in proc.stdout.splitlines()
           if line.startswith("Running stage")}
    assert ran == {"prune_cnn", "evaluate"}, proc.stdout
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    names = {r["name"]: r for e in exps for r in e.get("revs", [])}
    assert "t15" in names
    params = names["t15"]["data"]["params"]["params.yaml"]["data"]
    assert params["prune"]["threshold"] == 15
    client, all_runs = runs(repo)
    pruned = [r for r in all_runs if r.info.run_name == "prune_cnn"
              and r.data.tags.get("dvc.exp_name") == "t15"]
    assert len(pruned) == 1
    run = pruned[0]
    assert run.data.params["prune.threshold"] == "15.0"
    for layer in ("fc1", "fc2", "fc3"):
        for stat in ("min_angle", "max_angle", "n_similar", "n_complementary", "removed_total"):
            assert client.get_metric_history(run.info.run_id, f"fold0/{layer}/{stat}"), stat
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["dvc.exp_name"] == "t15"


def test_finetune_resnet_is_labelled_honestly(pipeline):
    repo, _, _ = pipeline
    metrics = json.loads((repo / "reports/finetune_resnet/metrics.json").read_text())
    r18 = metrics["resnet18"]
    # No ImageNet file in the test's torch cache: random init, and it says so.
    assert r18["weights"] == "random" and r18["pretrained"] is False
    assert r18["folds"] == [0] and set(r18["per_fold"]) == {"0"}
    probas = np.load(repo / "outputs/models/resnet/resnet18/val_proba.npz")
    assert list(probas) == ["fold0"] and probas["fold0"].shape[1] == 7
    _, all_runs = runs(repo)
    run = next(r for r in all_runs if r.info.run_name == "finetune_resnet")
    assert run.data.tags["weights"] == "random"


def test_evaluate_compares_every_model_on_the_same_folds(pipeline):
    repo, _, _ = pipeline
    metrics = json.loads((repo / "reports/evaluate/metrics.json").read_text())
    for model in ("mlp", "cnn", "pruned", "resnet18"):
        assert {"acc_mean", "acc_std", "f1_mean", "f1_std", "recall", "n_params"} <= set(
            metrics[model]), model
        assert len(metrics[model]["recall"]) == 7
    assert metrics["cnn"]["folds"] == metrics["pruned"]["folds"] == metrics["mlp"]["folds"] == [0, 1]
    assert metrics["resnet18"]["folds"] == [0] and metrics["resnet18"]["weights"] == "random"
    assert "neurons_removed" in metrics["pruned"] and "ms_per_image" in metrics["cnn"]
    report = (repo / "reports/evaluate/comparison.md").read_text()
    assert "published" in report.lower() and "NOT transfer learning" in report
    assert "paired t-test" in report
    confusion = (repo / "reports/evaluate/confusion/cnn.tsv").read_text().splitlines()
    assert confusion[0] == "actual\tpredicted" and len(confusion) == 28
    client, all_runs = runs(repo)
    run = next(r for r in all_runs if r.info.run_name == "evaluate"
               and r.data.tags["dvc.exp_name"] == "workspace")
    for key in ("cnn/acc_mean", "pruned/acc_mean", "mlp/f1_mean", "resnet18/acc_mean"):
        assert key in run.data.metrics, key
    assert run.data.params["prune.threshold"] == "25" and run.data.params["cnn.epochs"] == "2"
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluate")}
    assert {"evaluate/comparison.md", "evaluate/metrics.json", "evaluate/plots"} <= arts
    figs = {a.path for a in client.list_artifacts(run.info.run_id, "evaluate/plots")}
    assert "evaluate/plots/confusion_cnn.png" in figs


def test_queued_experiments_share_the_sqlite_store(pipeline):
    """`dvc queue start -j 2`: two workers write to one sqlite file; nothing locks or gets lost."""
    import time

    repo, _, _ = pipeline
    names = {"q18": 18, "q22": 22}
    for name, t in names.items():
        sh(repo, "dvc", "exp", "run", "--queue", "-n", name, "-S", f"prune.threshold={t}")
    sh(repo, "dvc", "queue", "start", "-j", "2")
    deadline = time.monotonic() + 480
    status = ""
    while time.monotonic() < deadline:
        status = sh(repo, "dvc", "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            break
        time.sleep(5)
    sh(repo, "dvc", "queue", "stop")
    assert "Success" in status and "Failed" not in status, status
    for name in names:
        logs = sh(repo, "dvc", "queue", "logs", name).stdout
        assert "database is locked" not in logs
    client, all_runs = runs(repo)
    for name, t in names.items():
        mine = [r for r in all_runs if r.data.tags.get("dvc.exp_name") == name]
        stages = {r.info.run_name: r for r in mine if r.info.run_name != "pipeline"
                  and not r.info.run_name.startswith("pipeline ")}
        assert set(stages) == {"prune_cnn", "evaluate"}, (name, set(stages))
        assert all(r.info.status == "FINISHED" for r in stages.values())
        assert stages["prune_cnn"].data.params["prune.threshold"] == f"{float(t)}"
        parents = {r.data.tags["mlflow.parentRunId"] for r in stages.values()}
        assert len(parents) == 1  # one parent run per experiment

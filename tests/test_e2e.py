"""End to end: the real `dvc repro` on a tiny generated sample, in a temporary git repo.

One session-scoped pipeline run (conftest's ``pipeline``) feeds every assertion below.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import torchvision
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

import tinyrepo
from conftest import subprocess_env
from emoprune.data.ingest import read_manifest
from emoprune.pipeline.tracking import flatten, headline_metrics
from emoprune.training.loop import resolve_precision

# One xdist worker runs every test of the shared `pipeline` repo, in file order (some count
# the runs that earlier ones added).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("pipeline")]


def sh(repo: Path, *cmd: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return tinyrepo.run(repo, *cmd, timeout=timeout)


def _reset_workspace(repo: Path) -> None:
    """Back to the committed params, lock and reports, and the outputs they name."""
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout", "--force")


def runs(repo: Path, experiment: str = "emoprune"):
    mlflow.set_tracking_uri(f"sqlite:///{repo}/mlflow.db")
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_outputs(pipeline):
    repo, _, _ = pipeline
    records = read_manifest(repo / "outputs/ingest/manifest.csv")
    assert len(records) == 27 and {r.fold for r in records} == {0, 1}
    report = json.loads((repo / "reports/ingest/details.json").read_text())
    assert report["n_images"] == 27 and report["per_class"]["Disgust"] == 3
    counts = json.loads((repo / "reports/ingest/metrics.json").read_text())["data"]
    assert counts == {"n_images": 27, "n_skipped": 0, "per_class": report["per_class"]}
    cnn = np.load(repo / "outputs/resize/cnn_227.npy")
    resnet = np.load(repo / "outputs/resize/resnet_224.npy")
    assert cnn.shape == (27, 227, 227, 3) and resnet.shape == (27, 224, 224, 3)


def test_metrics_files_hold_headline_numbers_only(pipeline):
    """What dvc.yaml declares as metrics: few numbers, none of them per fold or wall-clock."""
    repo, _, _ = pipeline
    declared = yaml.safe_load((repo / "dvc.yaml").read_text())["metrics"]
    numbers = {}
    for path in declared:
        flat = flatten(json.loads((repo / path).read_text()))
        assert not [k for k in flat if any(t in k for t in ("latency", "seconds", "ms_", "fold"))]
        numbers.update({f"{path}:{k}": v for k, v in flat.items() if isinstance(v, int | float)})
    assert len(numbers) <= 60, sorted(numbers)
    assert "reports/finetune_resnet/metrics.json" in declared
    names = [k.split(":")[1] for k in numbers]
    assert len(names) == len(set(names)), "column names must be unique across metrics files"


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
    stages = {r.data.tags["dvc.stage"]: r for r in all_runs if r not in parents}
    assert set(tinyrepo.LOGGED_STAGES) <= set(stages)
    head = sh(repo, "git", "rev-parse", "HEAD~1").stdout.strip()  # the commit repro ran on
    for name, r in stages.items():
        tags = r.data.tags
        assert r.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["dvc.stage"] == name and tags["dvc.exp_name"] == "workspace"
        assert tags["git.commit"] == head and tags["dvc.baseline_rev"] == head
        assert tags["pipeline.id"] == parents[0].data.tags["pipeline.id"]
    for name, r in stages.items():  # MLflow's own system tags: Source, User, Version columns
        assert r.data.tags["mlflow.source.name"] == f"stages/{name}.py"
        assert r.data.tags["mlflow.source.git.commit"] == head and r.data.tags["mlflow.user"]
        assert r.info.run_name == (f"{name} t=25" if name == "prune_cnn" else name)
    # The pipeline run compares on its own: every param, every headline metric.
    parent = parents[0].data
    assert parent.params == {
        k: str(v) for k, v in flatten(yaml.safe_load((repo / "params.yaml").read_text())).items()
    }
    assert parent.metrics == headline_metrics(repo)
    assert {"cnn.acc.mean", "pruned.acc.mean", "resnet18.acc.mean", "random.acc.mean"} <= set(
        parent.metrics
    )
    assert stages["ingest"].data.params["cv.folds"] == "2"
    assert stages["ingest"].data.metrics["n_images"] == 27
    client, _ = runs(repo)
    artifacts = [a.path for a in client.list_artifacts(stages["ingest"].info.run_id, "reports")]
    assert "reports/class_distribution.png" in artifacts
    assert (repo / "mlartifacts").is_dir()


def test_second_repro_is_cached_and_logs_nothing(pipeline):
    repo, _, _ = pipeline
    _, before = runs(repo)
    out = sh(repo, "dvc", "repro").stdout
    assert "didn't change, skipping" in out and "Running stage" not in out
    _, after = runs(repo)
    assert len(after) == len(before)


def _wait_for_first_epoch(repo: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    """Until fold 0's epoch-1 checkpoint exists in the stage's temporary output folder, or the
    run has ended."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if list((repo / "outputs/models").glob(".cnn.*.tmp/fold0_epoch001.pt")):
            return
        time.sleep(0.2)
    assert proc.poll() is not None, "train_cnn never finished an epoch"


def _interrupt_train_cnn(repo: Path, sig: str) -> tuple[subprocess.Popen, str, float]:
    """`dvc repro -f -s train_cnn`, hit with ``sig`` while it is still training: the process,
    its output and when it started.

    The tiny stage trains for a second or two after its first checkpoint, so a signal sent then
    can land after it is done. The process group is stopped first (SIGSTOP): if the temporary
    output folder is still there, the stage has committed nothing and ``sig`` is sent before
    it runs again; if not, the run is let finish and tried again.
    """
    import os
    import signal
    import time

    env = subprocess_env(TORCH_HOME=str(repo.parent / "torch-home"))
    for _ in range(5):
        started = time.time()
        proc = subprocess.Popen(
            ["dvc", "repro", "-f", "-s", "train_cnn"],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_for_first_epoch(repo, proc)
            training = proc.poll() is None
            if training:
                # The whole process group, as a terminal's Ctrl-C or a `kill -9` would.
                os.killpg(proc.pid, signal.SIGSTOP)
                training = bool(list((repo / "outputs/models").glob(".cnn.*.tmp")))
                if training:
                    os.killpg(proc.pid, getattr(signal, sig))
                os.killpg(proc.pid, signal.SIGCONT)
            out = proc.communicate(timeout=60)[0].decode()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        if training:
            return proc, out, started
        assert proc.returncode == 0, out[-2000:]
    raise AssertionError("train_cnn always finished before it could be interrupted")


@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_a_killed_stage_leaves_nothing_and_reruns_to_the_same_metrics(pipeline, sig):
    repo, _, _ = pipeline
    before = tinyrepo.read_metrics(repo)
    proc, out, started = _interrupt_train_cnn(repo, sig)
    assert proc.returncode != 0
    if sig == "SIGINT":
        assert "Traceback" not in out, out[-2000:]
        assert not list((repo / "outputs/models").glob(".cnn.*.tmp"))  # cleaned on the way out
    out = sh(repo, "dvc", "repro").stdout
    assert not list((repo / "outputs/models").glob(".*.tmp"))
    assert tinyrepo.read_metrics(repo) == before
    # The rerun wrote the same model files as the cached run (no timings in them), so prune_cnn
    # stays cached; evaluate reruns, as it reads train_cnn's report and its fresh timings.
    assert "Running stage 'train_cnn'" in out, out[-2000:]
    assert "Stage 'prune_cnn' didn't change, skipping" in out, out[-2000:]
    killed = [
        r
        for r in runs(repo)[1]
        if r.data.tags.get("dvc.stage") == "train_cnn" and r.info.start_time / 1000 > started
    ]
    statuses = sorted(r.info.status for r in killed)
    assert statuses == ["FINISHED", "KILLED"], statuses  # never left RUNNING


def test_train_cnn_outputs_and_tracking(pipeline):
    from emoprune.training.checkpoints import load_cnn_checkpoint

    repo, _, _ = pipeline
    for k in (0, 1):
        model, meta, opt = load_cnn_checkpoint(repo / f"outputs/models/cnn/fold{k}.pt")
        assert meta["epoch"] == 2 and meta["hidden"] == [512, 128, 64] and opt is None
        _, meta1, opt1 = load_cnn_checkpoint(repo / f"outputs/models/cnn/fold{k}_epoch001.pt")
        assert meta1["epoch"] == 1 and opt1 is not None  # resumable: Adam's state is kept
    details = json.loads((repo / "reports/train_cnn/details.json").read_text())
    for key in ("train_acc", "train_f1", "val_acc", "val_f1", "seconds_per_epoch"):
        assert set(details[key]) == {"mean", "std"}
        assert set(details["per_fold"]) == {"0", "1"} and key in details["per_fold"]["0"]
    assert details["n_params"] == 1_328_615
    metrics = json.loads((repo / "reports/train_cnn/metrics.json").read_text())
    # precision: auto resolved for this CPU, recorded in the metrics and on the run
    precision = resolve_precision("auto", torch.device("cpu"))
    assert details["precision"] == precision
    assert metrics == {
        "cnn": {
            "acc": details["val_acc"],
            "f1": details["val_f1"],
            "n_params": 1_328_615,
            "precision": precision,
        }
    }
    epochs = (repo / "reports/train_cnn/epochs.tsv").read_text().splitlines()
    assert epochs[0].split("\t")[:3] == ["epoch", "train_loss", "train_acc"] and len(epochs) == 3
    client, all_runs = runs(repo)
    run = next(r for r in all_runs if r.data.tags.get("dvc.stage") == "train_cnn")
    assert (
        run.data.tags["precision"] == precision and run.data.params["precision.precision"] == "auto"
    )
    for name in (
        "fold0/train_loss",
        "fold1/val_acc",
        "val_acc",
        "fc2/min_angle",
        "fold0/fc1/max_angle",
    ):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2], name
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        output_format="list",
        filter_string=f"source_run_id='{run.info.run_id}'",
    )
    assert {m.name for m in models} == {"model_fold0", "model_fold1"}
    info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model_fold0")
    spec = info.signature.inputs.to_dict()[0]["tensor-spec"]
    assert (spec["dtype"], tuple(spec["shape"])) == ("uint8", (-1, -1, -1, 3))  # raw frames
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert {"reports/loss.png", "reports/metrics.json", "reports/details.json"} <= arts
    traced = {a.path for a in client.list_artifacts(run.info.run_id, "reports/angles")}
    assert traced == {f"reports/angles/{layer}.tsv" for layer in ("fc1", "fc2", "fc3")}
    # The logged model holds its preprocessing: a raw frame gets the probabilities the
    # pipeline computed for it (fold 0's first validation image).
    loaded = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model_fold0")
    records = read_manifest(repo / "outputs/ingest/manifest.csv")
    first = next(r for r in records if r.folds[0] == 0)
    frame = np.asarray(Image.open(repo / first.path).convert("RGB"))[None]
    expected = np.load(repo / "outputs/models/cnn/val_proba.npz")["fold0"][0]
    np.testing.assert_allclose(loaded.predict(frame)[0], expected, atol=1e-5)


def test_prune_cnn_outputs(pipeline):
    repo, _, _ = pipeline
    metrics = json.loads((repo / "reports/prune_cnn/details.json").read_text())
    for key in (
        "val_acc_before",
        "val_acc_after_first_prune",
        "val_acc",
        "val_f1",
        "fc1_left",
        "fc2_left",
        "fc3_left",
        "fc2_removed",
        "params_shrunk",
        "latency_ms_shrunk",
    ):
        assert set(metrics[key]) == {"mean", "std"}, key
    assert metrics["threshold"] == 25
    # One trace file per pruned layer (prune.layers), as dvc.yaml's angle plots read them.
    traces = sorted(p.name for p in (repo / "reports/prune_cnn/angles").iterdir())
    assert traces == ["fc1.tsv", "fc2.tsv", "fc3.tsv"]
    header = (repo / "reports/prune_cnn/angles/fc2.tsv").read_text().splitlines()[0].split("\t")
    assert {"epoch", "min_angle", "max_angle", "n_similar", "removed_total"} <= set(header)
    headline = json.loads((repo / "reports/prune_cnn/metrics.json").read_text())["pruned"]
    assert headline["n_params"] == metrics["params_shrunk"]["mean"]
    assert headline["removed"] == {f"fc{i}": metrics[f"fc{i}_removed"]["mean"] for i in (1, 2, 3)}
    ids = json.loads((repo / "reports/prune_cnn/pruned_ids.json").read_text())
    assert {e["layer"] for e in ids} == {"fc1", "fc2", "fc3"}
    # Pruning acted: neurons were removed, and the shrunk network is really smaller.
    assert sum(e["removed"] != [] for e in ids) > 0
    assert metrics["params_shrunk"]["mean"] < metrics["params_unpruned"]["mean"]
    assert sum(metrics[f"{layer}_left"]["mean"] for layer in ("fc1", "fc2", "fc3")) < 512 + 128 + 64


def test_the_equal_size_controls_remove_as_many_neurons_on_every_fold(pipeline):
    repo, _, _ = pipeline
    details = json.loads((repo / "reports/prune_cnn/details.json").read_text())
    ids = json.loads((repo / "reports/prune_cnn/pruned_ids.json").read_text())
    assert set(details["baselines"]) == {"random", "magnitude"}
    for kind, control in details["baselines"].items():
        for k, fold in details["per_fold"].items():
            for layer in ("fc1", "fc2", "fc3"):
                assert control["per_fold"][k][f"{layer}_removed"] == fold[f"{layer}_removed"]
                assert control["per_fold"][k][f"{layer}_left"] == fold[f"{layer}_left"]
            assert control["per_fold"][k]["params_shrunk"] == fold["params_shrunk"]
        # The same counts after the same epochs, but its own choice of neurons.
        count = lambda rows: sorted(  # noqa: E731
            (r["fold"], r["epoch"], r["layer"], len(r["removed"])) for r in rows if r["removed"]
        )
        assert count(control["removed_ids"]) == count(ids)
        probas = np.load(repo / f"outputs/models/pruned/{kind}/val_proba.npz")
        assert sorted(probas) == ["fold0", "fold1"]
    headline = json.loads((repo / "reports/prune_cnn/metrics.json").read_text())
    assert set(headline["random"]["acc"]) == {"mean"} and "magnitude" in headline
    compared = json.loads((repo / "reports/evaluate/details.json").read_text())
    for key in ("pruned_vs_cnn", "pruned_vs_random", "pruned_vs_magnitude"):
        assert {"mean_diff", "corrected_pvalue", "verdict"} <= set(compared[key]), key
    assert set(json.loads((repo / "reports/evaluate/metrics.json").read_text())["p_vs"]) == {
        "cnn",
        "random",
        "magnitude",
    }
    report = (repo / "reports/evaluate/comparison.md").read_text()
    assert "CNN + random removal (equal size)" in report and "corrected t-test p" in report


def test_exp_run_threshold_reruns_only_pruning(pipeline):
    repo, _, _ = pipeline
    before = json.loads((repo / "reports/prune_cnn/details.json").read_text())
    proc = sh(repo, "dvc", "exp", "run", "-n", "t15", "-S", "prune.threshold=15")
    ran = {
        line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")
    }
    assert ran == {"check_params", "prune_cnn", "evaluate"}, proc.stdout
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    names = {r["name"]: r for e in exps for r in e.get("revs", [])}
    assert "t15" in names
    params = names["t15"]["data"]["params"]["params.yaml"]["data"]
    assert params["prune"]["threshold"] == 15
    # One threshold experiment reads in a terminal: only what changed, no wall-clock noise.
    table = sh(repo, "dvc", "exp", "show", "--only-changed", "--md").stdout
    assert max(len(line) for line in table.splitlines()) <= 400, table
    assert "| pruned." in table and "prune.threshold" in table, table
    assert not any(t in table for t in ("latency", "seconds", "ms_per", "per_fold")), table
    diff = sh(repo, "dvc", "exp", "diff", "HEAD", "t15").stdout
    assert not any(t in diff for t in ("latency", "seconds", "ms_per", "per_fold")), diff
    # The threshold changes what pruning does, not just the latency noise.
    after = json.loads((repo / "reports/prune_cnn/details.json").read_text())
    left = [f"{layer}_left" for layer in ("fc1", "fc2", "fc3")]
    assert [after[k]["mean"] for k in left] != [before[k]["mean"] for k in left]
    client, all_runs = runs(repo)
    pruned = [
        r
        for r in all_runs
        if r.data.tags.get("dvc.stage") == "prune_cnn" and r.data.tags.get("dvc.exp_name") == "t15"
    ]
    assert len(pruned) == 1
    run = pruned[0]
    assert run.info.run_name == "prune_cnn t=15 t15"  # apart from the workspace's in an overlay
    assert run.data.params["prune.threshold"] == "15.0"
    version = client.get_model_version_by_alias("emoprune-pruned-cnn", "t15")
    assert version.run_id == run.info.run_id and version.tags["param.prune.threshold"] == "15"
    for layer in ("fc1", "fc2", "fc3"):
        for stat in ("min_angle", "max_angle", "n_similar", "n_complementary", "removed_total"):
            assert client.get_metric_history(run.info.run_id, f"fold0/{layer}/{stat}"), stat
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["dvc.exp_name"] == "t15"


def test_finetune_resnet_is_labelled_honestly(pipeline):
    repo, _, _ = pipeline
    r18 = json.loads((repo / "reports/finetune_resnet/details.json").read_text())["resnet18"]
    # No ImageNet file in the test's torch cache: random init, and it says so.
    assert r18["weights"] == "random" and r18["pretrained"] is False
    assert r18["folds"] == [0] and set(r18["per_fold"]) == {"0"}
    probas = np.load(repo / "outputs/models/resnet/resnet18/val_proba.npz")
    assert list(probas) == ["fold0"] and probas["fold0"].shape[1] == 7
    _, all_runs = runs(repo)
    run = next(r for r in all_runs if r.data.tags.get("dvc.stage") == "finetune_resnet")
    assert run.data.tags["weights"] == "random"


def test_evaluate_compares_every_model_on_the_same_folds(pipeline):
    repo, _, _ = pipeline
    metrics = json.loads((repo / "reports/evaluate/details.json").read_text())
    for model in ("mlp", "cnn", "pruned", "resnet18"):
        assert {"acc_mean", "acc_std", "f1_mean", "f1_std", "recall", "n_params"} <= set(
            metrics[model]
        ), model
        assert len(metrics[model]["recall"]) == 7
    assert (
        metrics["cnn"]["folds"] == metrics["pruned"]["folds"] == metrics["mlp"]["folds"] == [0, 1]
    )
    assert metrics["resnet18"]["folds"] == [0] and metrics["resnet18"]["weights"] == "random"
    assert "neurons_removed" in metrics["pruned"] and "ms_per_image" in metrics["cnn"]
    report = (repo / "reports/evaluate/comparison.md").read_text()
    assert "published" in report.lower() and "NOT transfer learning" in report
    assert "paired t-test" in report
    confusion = (repo / "reports/evaluate/confusion/cnn.tsv").read_text().splitlines()
    assert confusion[0] == "actual\tpredicted" and len(confusion) == 28
    client, all_runs = runs(repo)
    run = next(
        r
        for r in all_runs
        if r.data.tags.get("dvc.stage") == "evaluate" and r.data.tags["dvc.exp_name"] == "workspace"
    )
    for key in (
        "cnn/acc_mean",
        "pruned/acc_mean",
        "mlp/f1_mean",
        "resnet18/acc_mean",
        "random/acc_mean",
        "magnitude/acc_mean",
        "pruned_vs_random/mean_diff",
    ):
        assert key in run.data.metrics, key
    assert float(run.data.params["prune.threshold"]) == 25 and run.data.params["cnn.epochs"] == "2"
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluate")}
    assert {"evaluate/comparison.md", "evaluate/metrics.json", "evaluate/plots"} <= arts
    figs = {a.path for a in client.list_artifacts(run.info.run_id, "evaluate/plots")}
    assert "evaluate/plots/confusion_cnn.png" in figs


def test_runs_name_their_data_and_evaluate_registers_self_contained_models(pipeline, tmp_path):
    repo, _, _ = pipeline
    client, all_runs = runs(repo)
    dvc_hash = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"]

    def workspace(stage):
        return next(
            r
            for r in all_runs
            if r.data.tags.get("dvc.stage") == stage and r.data.tags["dvc.exp_name"] == "workspace"
        )

    inputs = workspace("train_cnn").inputs.dataset_inputs
    assert {i.dataset.name for i in inputs} == {
        f"data/raw fold{k} {part}" for k in (0, 1) for part in ("train", "validation")
    }
    assert {i.dataset.digest for i in inputs} == {dvc_hash.removesuffix(".dir")}
    scored = workspace("evaluate").inputs.dataset_inputs
    assert {i.dataset.name for i in scored} == {
        "data/raw fold0 validation",
        "data/raw fold1 validation",
    }
    for name, stage in (("emoprune-cnn", "train_cnn"), ("emoprune-pruned-cnn", "prune_cnn")):
        version = client.get_model_version_by_alias(name, "workspace")
        assert client.get_run(version.run_id).data.tags["dvc.stage"] == stage  # its lineage
        assert "metric.pruned.acc.mean" in version.tags and version.tags["fold"] == "0"
    # The registered model carries its preprocessing and code: it predicts from anywhere.
    image = next((repo / "data/raw/Happy").glob("*.png"))
    uri = "models:/emoprune-pruned-cnn@workspace"
    env = subprocess_env(MLFLOW_TRACKING_URI=f"sqlite:///{repo}/mlflow.db")
    far = subprocess.run(
        ["emoprune", "predict", "--uri", uri, str(image)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert far.returncode == 0, far.stderr
    local = sh(repo, "emoprune", "predict", "--model", "pruned", "--fold", "0", str(image))
    assert far.stdout == local.stdout and far.stdout.count("\t") == 2


def test_mlflow_run_experiment_nests_the_stages_under_its_run(pipeline):
    """The MLproject's experiment entry point, exactly as a user types it (plus tiny epochs)."""
    repo, _, _ = pipeline
    proc = sh(
        repo,
        "mlflow",
        "run",
        ".",
        "-e",
        "experiment",
        "-P",
        "threshold=20",
        "-P",
        "epochs=2",
        "--env-manager",
        "local",
    )
    ran = {
        line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")
    }
    assert ran == {"check_params", "prune_cnn", "evaluate"}, proc.stdout
    # No MLFLOW_TRACKING_URI: `mlflow run` and the stages share the repo's sqlite store.
    client, launched = runs(repo, "Default")
    outer = [r for r in launched if "mlflow.parentRunId" not in r.data.tags]
    assert len(outer) == 1 and outer[0].info.status == "FINISHED"
    assert outer[0].data.params["threshold"] == "20"
    stages = {r.data.tags["dvc.stage"]: r for r in launched if r is not outer[0]}
    assert set(stages) == {"prune_cnn", "evaluate"}
    for r in stages.values():
        assert r.data.tags["mlflow.parentRunId"] == outer[0].info.run_id
        assert r.info.status == "FINISHED" and r.data.tags["dvc.exp_name"] != "workspace"
    assert stages["prune_cnn"].data.params["prune.threshold"] == "20.0"
    assert "evaluate/plots/confusion_cnn.png" in {
        a.path for a in client.list_artifacts(stages["evaluate"].info.run_id, "evaluate/plots")
    }
    assert sh(repo, "git", "status", "--porcelain", "--", "mlruns").stdout == ""  # ignored


def test_sweep_runs_three_thresholds_in_parallel_on_one_sqlite_store(pipeline):
    """`emoprune sweep` (the MLproject's sweep entry point): three experiments queued with
    `dvc exp run --queue`, run by `dvc queue start -j 2`, all on the default sqlite store.

    Thresholds no earlier test used, so that DVC's run cache cannot skip the stages.
    """
    repo, _, _ = pipeline
    proc = sh(repo, "emoprune", "sweep", "--thresholds", "12,18,30", "--jobs", "2", timeout=900)
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 3 and all("| Success |" in row for row in rows), proc.stdout
    # Every metric found; a p-value may be undefined ("-") where a tiny run's folds tie.
    top = next(line for line in proc.stdout.splitlines() if line.startswith("| threshold"))
    header = [c.strip() for c in top.strip("|").split("|")]
    for row in rows:
        cells = dict(zip(header, (c.strip() for c in row.strip("|").split("|"))))
        assert all(v != "-" for k, v in cells.items() if "pvalue" not in k), proc.stdout
    client, all_runs = runs(repo)
    sweep = [r for r in all_runs if r.data.tags.get("sweep.thresholds") == "12,18,30"]
    assert len(sweep) == 1 and sweep[0].info.status == "FINISHED"
    names = [row.split("|")[2].strip() for row in rows]
    for name, t in zip(names, (12, 18, 30)):
        logs = sh(repo, "dvc", "queue", "logs", name).stdout
        assert "database is locked" not in logs and "Traceback" not in logs, logs[-2000:]
        mine = [r for r in all_runs if r.data.tags.get("dvc.exp_name") == name]
        parent = [r for r in mine if r.data.tags.get("emoprune.role") == "pipeline"]
        assert len(parent) == 1, name  # one pipeline run per experiment...
        assert parent[0].data.tags["mlflow.parentRunId"] == sweep[0].info.run_id  # ...in the sweep
        stages = {r.data.tags["dvc.stage"]: r for r in mine if r is not parent[0]}
        assert set(stages) == {"prune_cnn", "evaluate"}, (name, set(stages))
        assert all(r.info.status == "FINISHED" for r in stages.values())
        assert all(
            r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in stages.values()
        )
        assert stages["prune_cnn"].data.params["prune.threshold"] == f"{float(t)}"
    history = client.get_metric_history(sweep[0].info.run_id, "pruned/acc_mean")
    assert sorted(m.step for m in history) == [12, 18, 30]  # accuracy against threshold


def _tree_digest(repo: Path) -> dict[str, str]:
    import hashlib

    return {
        str(f.relative_to(repo)): hashlib.sha1(f.read_bytes()).hexdigest()
        for root in ("outputs", "reports")
        for f in sorted((repo / root).rglob("*"))
        if f.is_file()
    }


def _fails(repo: Path, *cmd: str) -> str:
    """Run ``cmd`` in ``repo``; it must fail. Returns its stdout + stderr."""
    proc = subprocess.run(
        cmd, cwd=repo, env=tinyrepo.env_for(repo), capture_output=True, text=True, timeout=300
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    return out


BAD_VALUES = [
    ("prune.threshold=abc", "prune.threshold must be a number, got 'abc'"),  # wrong type
    ("cnn.epochs=0", "cnn.epochs must be > 0, got 0"),  # out of range
    ("prune.layers=[fc9]", "prune.layers must be drawn from fc1, fc2, fc3, got ['fc9']"),
    ("cnn.conv_activation=gelu", "cnn.conv_activation must be one of sigmoid, relu, tanh"),
    ("prune.threshold=[15,20]", "prune.threshold must be a number, got [15, 20]"),  # a list
    ("prune.layers=[]", "prune.layers must list at least one of fc1, fc2, fc3, got []"),
    (  # a folder that is not there: DVC alone would say only "No such file or directory"
        "data.raw=/nonexistent/SFEW",
        "data.raw: /nonexistent/SFEW not found (put SFEW there or set data.raw to where it is)",
    ),
]


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_a_bad_value_stops_before_any_output_is_touched(pipeline, override, message):
    repo, _, _ = pipeline
    before, params = _tree_digest(repo), (repo / "params.yaml").read_text()
    try:
        for cmd in (("dvc", "exp", "run", "-S", override), ("dvc", "repro")):
            # `dvc exp run -S` writes the value into params.yaml; `dvc repro` then meets it there.
            out = _fails(repo, *cmd)
            errors = [line for line in out.splitlines() if line.startswith("error: [check_params]")]
            assert len(errors) == 1 and message in errors[0], out
            assert "Traceback" not in out and "Running stage 'ingest'" not in out, out
            assert _tree_digest(repo) == before  # every output and report byte-identical
    finally:
        (repo / "params.yaml").write_text(params)


def test_a_relative_untracked_data_raw_in_a_temp_experiment_is_told_to_be_absolute(pipeline):
    """`dvc exp run --temp` copies only what git and DVC track: a relative data.raw naming an
    untracked folder is missing there, and check_params says so before ingest runs."""
    repo, _, _ = pipeline
    before = _tree_digest(repo)
    shutil.copytree(repo / "data" / "raw", repo / "sfew")
    exclude = repo / ".git" / "info" / "exclude"
    kept = exclude.read_text() if exclude.exists() else ""
    exclude.write_text(kept + "/sfew\n")  # untracked, and the workspace stays clean for git
    try:
        out = _fails(repo, "dvc", "exp", "run", "--temp", "-S", "data.raw=sfew")
        errors = [line for line in out.splitlines() if line.startswith("error: [check_params]")]
        assert len(errors) == 1, out
        assert errors[0].endswith(
            "data.raw: sfew not found (`dvc exp run --temp/--queue` runs in a copy holding only "
            "what git and DVC track: set data.raw to an absolute path)"
        ), out
        assert "Running stage 'ingest'" not in out and "Traceback" not in out, out
        assert _tree_digest(repo) == before
    finally:
        shutil.rmtree(repo / "sfew")
        exclude.write_text(kept)


def test_an_unknown_key_in_params_yaml_stops_before_any_output_is_touched(pipeline):
    repo, _, _ = pipeline
    before, params = _tree_digest(repo), repo / "params.yaml"
    text = params.read_text()
    try:
        params.write_text(text.replace("prune:", "prunning:", 1))
        out = _fails(repo, "dvc", "repro")
        assert "unknown key prunning (did you mean prune?)" in out, out
        assert "Traceback" not in out and _tree_digest(repo) == before
    finally:
        params.write_text(text)


def test_cached_imagenet_weights_become_a_tracked_input_and_label_the_report(pipeline):
    """A (test-made) IMAGENET1K_V1 file in torch's cache is copied into models/pretrained, which
    finetune_resnet depends on. The workspace and the cache are put back afterwards."""
    repo, _, _ = pipeline
    model = torchvision.models.resnet18(weights=None)
    cache = repo.parent / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), cache / "resnet18-f37072fd.pth")
    try:
        _imagenet_experiment(repo, cache)
    finally:
        (cache / "resnet18-f37072fd.pth").unlink()
        _reset_workspace(repo)


def _imagenet_experiment(repo: Path, cache: Path) -> None:
    proc = sh(repo, "dvc", "exp", "run", "-n", "imagenet", "-S", "finetune.weights=imagenet")
    ran = {
        line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")
    }
    assert ran == {"check_params", "pretrained", "finetune_resnet", "evaluate"}, proc.stdout
    placed = repo / "models/pretrained/resnet18-f37072fd.pth"
    assert placed.read_bytes() == (cache / placed.name).read_bytes()
    lock = (repo / "dvc.lock").read_text()
    assert "path: models/pretrained" in lock  # finetune_resnet's dep, pinned by its hash
    r18 = json.loads((repo / "reports/finetune_resnet/details.json").read_text())["resnet18"]
    assert r18["weights"] == "imagenet" and r18["pretrained"] is True
    assert r18["weights_file"]["file"] == placed.name
    report = (repo / "reports/evaluate/comparison.md").read_text()
    assert "ResNet18 (ImageNet weights)" in report and "NOT transfer learning" not in report
    assert "random init" not in proc.stdout + proc.stderr
    # The file is in DVC's cache: a fresh checkout gets it back without the network.
    placed.unlink()
    sh(repo, "dvc", "checkout", "models/pretrained")
    assert placed.is_file()


def _output_hashes(repo: Path) -> dict[str, str]:
    """{out path: hash} of every stage's outputs in dvc.lock, the reports (timings) aside."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {
        out["path"]: out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
        if not out["path"].startswith("reports/")
    }


def test_a_forced_rerun_reproduces_every_output_byte_for_byte(pipeline):
    """Outputs hold no timings, so `dvc repro -f` writes the same bytes: DVC's cache keys stay
    valid, and a stage that reads only outputs a rerun reproduced has nothing to redo."""
    repo, _, _ = pipeline
    before = _output_hashes(repo)
    assert any(p.startswith("outputs/models/") for p in before), before
    try:
        sh(repo, "dvc", "repro", "-f")
        assert _output_hashes(repo) == before
    finally:
        _reset_workspace(repo)

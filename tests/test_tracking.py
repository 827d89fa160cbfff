import subprocess
import sys
import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from conftest import subprocess_env
from emoprune.errors import UserError
from emoprune.pipeline import tracking
from servers import file_server, free_port


def test_uri_env_wins(clean_env, tmp_path):
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5555")
    assert tracking.tracking_uri() == "http://127.0.0.1:5555"


def test_uri_uses_dvc_root(clean_env, tmp_path):
    clean_env.setenv("DVC_ROOT", str(tmp_path))
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.artifact_location() == (tmp_path.resolve() / "mlartifacts").as_uri()


def test_a_relative_sqlite_uri_is_relative_to_the_repo_root(clean_env, tmp_path):
    # `mlflow run` passes sqlite:///mlflow.db on; queued experiments run in a temporary copy.
    clean_env.setenv("DVC_ROOT", str(tmp_path))
    clean_env.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    clean_env.setenv("MLFLOW_TRACKING_URI", "sqlite:///sub/x.db?timeout=5")
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/sub/x.db?timeout=5"
    clean_env.setenv("MLFLOW_TRACKING_URI", "sqlite:////abs/x.db")
    assert tracking.tracking_uri() == "sqlite:////abs/x.db"


def test_uri_walks_up_to_the_repo_root(clean_env, tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    clean_env.chdir(deep)
    assert tracking.project_root() == tmp_path.resolve()
    assert tracking.tracking_uri().endswith(f"{tmp_path.resolve()}/mlflow.db")


def test_passwords_are_masked():
    assert (
        tracking.mask_uri("postgresql://bob:s3cret@db:5432/mlflow")
        == "postgresql://bob:***@db:5432/mlflow"
    )
    assert tracking.mask_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_flatten():
    assert tracking.flatten({"cnn": {"lr": 0.1, "hidden": [1, 2]}, "seed": 3}) == {
        "cnn.lr": 0.1,
        "cnn.hidden": "1,2",
        "seed": 3,
    }


def test_unreachable_server_fails_fast_naming_the_uri(clean_env, tmp_path):
    uri = f"http://user:pw@127.0.0.1:{free_port()}"
    clean_env.setenv("MLFLOW_TRACKING_URI", uri)
    clean_env.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(UserError) as exc:
        with tracking.stage_run("ingest", "emoprune", {}):
            pass
    assert time.monotonic() - start < 30
    message = str(exc.value)
    assert "unreachable" in message and "127.0.0.1" in message and "pw" not in message


def test_a_server_refusing_the_credentials_is_one_line(clean_env, tmp_path):
    # /health answers (reachable) but the API wants a login, as MLflow's basic-auth app does.
    with file_server({"/health": b"OK"}, missing=401) as url:
        clean_env.setenv("MLFLOW_TRACKING_URI", url)
        clean_env.chdir(tmp_path)
        with pytest.raises(UserError) as exc:
            with tracking.stage_run("ingest", "emoprune", {}):
                pass
    message = str(exc.value)
    assert "refused access (401)" in message and "MLFLOW_TRACKING_USERNAME" in message
    assert "\n" not in message and not list(tmp_path.iterdir())  # nothing written


@pytest.fixture
def store(clean_env, tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    clean_env.chdir(tmp_path)
    yield tmp_path
    mlflow.end_run()


def _runs(root, exp="emoprune"):
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    client = MlflowClient()
    e = client.get_experiment_by_name(exp)
    return {r.info.run_id: r for r in client.search_runs([e.experiment_id])}, e


def test_stage_runs_share_one_parent_with_the_contract_tags(store, clean_env):
    clean_env.setenv("EMOPRUNE_PIPELINE_ID", "pipe-1")
    clean_env.setenv("DVC_EXP_NAME", "exp-abc")
    clean_env.setenv("DVC_EXP_BASELINE_REV", "f" * 40)
    for stage in ("ingest", "resize"):
        with tracking.stage_run(stage, "emoprune", {"cv": {"folds": 2}}) as run:
            mlflow.log_metric("m", 1.0)
            parent = MlflowClient().get_run(run.data.tags["mlflow.parentRunId"])
            assert parent.info.status == "RUNNING"  # while any stage of it runs
    runs, exp = _runs(store)
    assert exp.artifact_location == (store.resolve() / "mlartifacts").as_uri()
    parents = [r for r in runs.values() if r.data.tags.get("emoprune.role") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs.values() if r not in parents]
    # The DVC experiment is in the name, so an overlay of two experiments' runs reads apart.
    assert sorted(r.info.run_name for r in children) == ["ingest exp-abc", "resize exp-abc"]
    for r in children:
        tags = r.data.tags
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert r.info.run_name == f"{tags['dvc.stage']} exp-abc"
        assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL"
        assert tags["dvc.exp_name"] == "exp-abc"
        assert tags["dvc.baseline_rev"] == "f" * 40
        assert tags["pipeline.id"] == "pipe-1"
        assert "git.commit" in tags
        assert r.data.params == {"cv.folds": "2"} and r.info.status == "FINISHED"


def test_a_new_invocation_gets_a_new_parent(store, clean_env):
    for pid in ("a", "b"):
        clean_env.setenv("EMOPRUNE_PIPELINE_ID", pid)
        with tracking.stage_run("ingest", "emoprune", {}):
            pass
    runs, _ = _runs(store)
    parents = {
        r.data.tags["mlflow.parentRunId"] for r in runs.values() if r.info.run_name == "ingest"
    }
    assert len(parents) == 2


def test_mlflow_run_id_is_the_parent(store, clean_env):
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    exp_id = MlflowClient().create_experiment("launcher")
    outer = MlflowClient().create_run(exp_id, run_name="mlflow-run").info.run_id
    clean_env.setenv("MLFLOW_RUN_ID", outer)
    with tracking.stage_run("ingest", "emoprune", {}) as run:
        assert run.info.run_id != outer  # we nest, we don't resume the launcher's run
    runs, _ = _runs(store, "launcher")
    child = next(r for r in runs.values() if r.info.run_name == "ingest")
    assert child.data.tags["mlflow.parentRunId"] == outer
    assert MlflowClient().get_run(outer).info.status == "RUNNING"  # left to `mlflow run`


def test_a_sweep_nests_one_pipeline_run_per_experiment(store, clean_env):
    """sweep run -> pipeline run per experiment -> stage runs, all in the sweep's experiment."""
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    exp_id = MlflowClient().create_experiment("sweeps")
    sweep = MlflowClient().create_run(exp_id, run_name="sweep").info.run_id
    clean_env.setenv(tracking.OUTER_RUN_ENV, sweep)
    for name in ("t15", "t20"):
        clean_env.setenv("EMOPRUNE_PIPELINE_ID", name)
        clean_env.setenv("DVC_EXP_NAME", name)
        for stage in ("prune_cnn", "evaluate"):
            with tracking.stage_run(stage, "emoprune", {}):
                pass
    runs, _ = _runs(store, "sweeps")
    pipelines = {
        r.data.tags["dvc.exp_name"]: r
        for r in runs.values()
        if r.data.tags.get("emoprune.role") == "pipeline"
    }
    assert set(pipelines) == {"t15", "t20"}
    for name, parent in pipelines.items():
        assert parent.data.tags["mlflow.parentRunId"] == sweep
        stages = [
            r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        ]
        assert sorted(r.info.run_name for r in stages) == [f"evaluate {name}", f"prune_cnn {name}"]


def test_an_unknown_launching_run_is_one_line(store, clean_env):
    clean_env.setenv("MLFLOW_RUN_ID", "0" * 32)
    with pytest.raises(UserError, match="MLFLOW_RUN_ID=0+ names no run"):
        with tracking.stage_run("ingest", "emoprune", {}):
            pass


def test_failures_and_interrupts_are_recorded(store, clean_env):
    clean_env.setenv("EMOPRUNE_PIPELINE_ID", "p")
    with pytest.raises(UserError):
        with tracking.stage_run("ingest", "emoprune", {}):
            raise UserError("bad data")
    with pytest.raises(KeyboardInterrupt):
        with tracking.stage_run("resize", "emoprune", {}):
            raise KeyboardInterrupt
    runs, _ = _runs(store)
    status = {r.info.run_name: r.info.status for r in runs.values()}
    assert status["ingest"] == "FAILED" and status["resize"] == "KILLED"


def test_sqlite_uri_gets_a_lock_timeout():
    assert (
        tracking._with_sqlite_timeout("sqlite:////x/mlflow.db")
        == f"sqlite:////x/mlflow.db?timeout={tracking.SQLITE_TIMEOUT_S}"
    )
    assert tracking._with_sqlite_timeout("http://h") == "http://h"


def test_a_run_whose_process_died_is_marked_killed(store, clean_env):
    """SIGKILL leaves no chance to end the run: the next execution of the stage cleans up."""
    import subprocess
    import sys

    clean_env.setenv("EMOPRUNE_PIPELINE_ID", "killed")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    client = MlflowClient()
    exp_id = client.create_experiment("emoprune")
    orphan = client.create_run(
        exp_id,
        run_name="train_cnn",
        tags={
            "dvc.stage": "train_cnn",
            tracking.PID_TAG: f"{__import__('socket').gethostname()}:{dead.pid}:1.000",
        },
    ).info.run_id
    alive = client.create_run(
        exp_id,
        run_name="train_cnn",
        tags={"dvc.stage": "train_cnn", tracking.PID_TAG: tracking._process_tag()},
    ).info.run_id
    with tracking.stage_run("train_cnn", "emoprune", {}):
        pass
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(alive).info.status == "RUNNING"  # its process (us) still runs


STAGE_SCRIPT = """
import pathlib, sys
from emoprune.pipeline import tracking

with tracking.stage_run(sys.argv[1], "emoprune", {"prune": {"threshold": 15}}) as run:
    pathlib.Path("reports").mkdir(exist_ok=True)
    pathlib.Path("reports/m.json").write_text(sys.argv[2])
print(run.info.run_id)
"""


def _stage(root, stage, metrics):
    """Run ``stages/stage.py`` of ``root`` as DVC would: a script of the repo, its own process."""
    out = subprocess.run(
        [sys.executable, "stages/stage.py", stage, metrics],
        cwd=root,
        env=subprocess_env(EMOPRUNE_PIPELINE_ID="pipe-2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1]


def test_runs_get_mlflows_system_tags_and_the_pipeline_run_params_and_metrics(store):
    (store / "params.yaml").write_text("cv: {folds: 2}\nprune: {threshold: 15}\n")
    (store / "dvc.yaml").write_text("metrics: [reports/m.json]\nstages: {}\n")
    (store / "stages").mkdir()
    (store / "stages" / "stage.py").write_text(STAGE_SCRIPT)
    git = ["git", "-c", "user.email=t@e", "-c", "user.name=t"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "c"]):
        subprocess.run([*git, *cmd], cwd=store, check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], cwd=store, capture_output=True, text=True)
    run_id = _stage(store, "prune_cnn", '{"cnn": {"acc": {"mean": 0.5}}, "n": 3}')
    runs, _ = _runs(store)
    stage = runs[run_id]
    assert stage.info.run_name == "prune_cnn t=15"
    tags = stage.data.tags
    # MLflow's own context providers: the Source, User and Version columns of the runs table.
    assert tags["mlflow.source.git.commit"] == head.stdout.strip() == tags["git.commit"]
    assert tags["mlflow.source.name"] == "stages/stage.py" and tags["mlflow.user"]
    parent = runs[tags["mlflow.parentRunId"]]
    assert parent.data.params == {"cv.folds": "2", "prune.threshold": "15"}
    assert parent.data.metrics == {"cnn.acc.mean": 0.5, "n": 3.0}
    assert parent.data.tags["mlflow.source.name"] == "dvc.yaml"
    assert parent.data.tags["mlflow.source.git.commit"] == head.stdout.strip()
    # A second stage of the same pipeline logs only what changed: one point per value.
    _stage(store, "evaluate", '{"cnn": {"acc": {"mean": 0.5}}, "n": 4}')
    client = MlflowClient()
    assert [m.value for m in client.get_metric_history(parent.info.run_id, "n")] == [3.0, 4.0]
    assert len(client.get_metric_history(parent.info.run_id, "cnn.acc.mean")) == 1


@pytest.mark.parametrize("enabled", [False, True])
def test_system_metrics_follow_mlflows_own_switch(store, clean_env, enabled):
    if enabled:
        clean_env.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
        clean_env.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
        clean_env.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    with tracking.stage_run("ingest", "emoprune", {}) as run:
        time.sleep(1.5)
    metrics = MlflowClient().get_run(run.info.run_id).data.metrics
    assert any(k.startswith("system/") for k in metrics) == enabled


def test_the_ui_link_opens_the_experiment_on_its_training_runs(store):
    assert tracking.ui_link("http://h:5000/", "emoprune") == (
        "http://h:5000/#/experiments?workflowType=machine_learning"  # no store yet
    )
    with tracking.stage_run("ingest", "emoprune", {}) as run:
        pass
    exp_id = run.info.experiment_id
    assert tracking.ui_link("http://h:5000", "emoprune") == (
        f"http://h:5000/#/experiments/{exp_id}?workflowType=machine_learning"
    )
    exp = MlflowClient().get_experiment(exp_id)
    assert exp.tags[tracking.KIND_TAG] == tracking.TRAINING_KIND  # for UIs that read the tag


# A stage that does nothing but write to the store, so Ctrl-C almost surely arrives mid-write.
WRITER = """
import sys, traceback
from emoprune.pipeline import tracking
from emoprune.pipeline.process import in_store

try:
    with tracking.stage_run("train_cnn", "emoprune", {}):
        step = 0
        while True:
            tracking.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            tracking.flush_metrics()
            step += 1
            if step == 5:
                print("writing", flush=True)
except KeyboardInterrupt as exc:
    frames = traceback.walk_tb(exc.__traceback__)
    print("in store" if any(in_store(f) for f, _ in frames) else "outside the store", flush=True)
    sys.exit(130)
"""


@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_ctrl_c_never_lands_inside_a_store_write(store, clean_env, delay):
    """Else the sqlite connection keeps its write lock, the run cannot be marked KILLED, and
    SQLAlchemy logs a traceback for the cursor it could not close."""
    import signal

    env = subprocess_env(EMOPRUNE_PIPELINE_ID="interrupted")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER],
        cwd=store,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "writing\n", proc.stderr.read()
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert out == "outside the store\n"
    assert "Traceback" not in err, err
    runs, _ = _runs(store)
    status = {r.info.run_name: r.info.status for r in runs.values()}
    assert status["train_cnn"] == "KILLED" and status["pipeline"] == "KILLED", status

"""The MLproject, python_env.yaml and the pieces of `emoprune sweep` (the full sweep runs
end to end in test_e2e.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from mlflow.projects._project_spec import load_project

from conftest import REPO
from emoprune.errors import UserError
from emoprune.pipeline import sweep
from emoprune.pipeline.sweep import Result


def test_mlproject_entry_points_and_defaults_follow_params_yaml():
    project = load_project(str(REPO))
    assert {"main", "experiment", "sweep"} <= set(project._entry_points)
    assert project.get_entry_point("main").command == "dvc repro"
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    experiment = project.get_entry_point("experiment")
    defaults = {k: p.default for k, p in experiment.parameters.items()}
    assert defaults == {
        "threshold": params["prune"]["threshold"],
        "lr": params["cnn"]["lr"],
        "batch_size": params["cnn"]["batch_size"],
        "epochs": params["cnn"]["epochs"],
    }
    command = experiment.compute_command({"threshold": "20"}, storage_dir=None)
    assert command.startswith("dvc exp run ") and "-S prune.threshold=20" in command
    assert f"-S cnn.lr={params['cnn']['lr']}" in command
    swept = project.get_entry_point("sweep").compute_command({}, storage_dir=None)
    assert swept == "emoprune sweep --thresholds 15,20,25 --jobs 2"


def test_python_env_installs_the_pinned_requirements():
    env = yaml.safe_load((REPO / "python_env.yaml").read_text())
    assert env["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert "-r requirements.txt" in env["dependencies"] and "-e ." in env["dependencies"]


def test_parse_thresholds():
    assert sweep.parse_thresholds("15, 20,25") == [15.0, 20.0, 25.0]
    assert sweep.parse_thresholds("17.5") == [17.5]


@pytest.mark.parametrize(
    "text, message",
    [
        ("15,abc", "threshold 'abc' is not a number"),
        ("15,90", "threshold 90 must be in (0, 90)"),
        ("", "no thresholds given"),
        ("15,15", "thresholds repeat"),
    ],
)
def test_bad_thresholds_are_one_line_errors(text, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sweep.parse_thresholds(text)


def test_bad_thresholds_exit_2_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "emoprune.cli", "sweep", "--thresholds", "x"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: sweep: threshold 'x' is not a number"


def test_experiment_names_are_valid_dvc_names():
    assert sweep.experiment_name("sweep-ab12cd", 15.0) == "sweep-ab12cd-t15"
    assert sweep.experiment_name("sweep-ab12cd", 17.5) == "sweep-ab12cd-t17p5"


def test_queue_status_reads_dvc_queue_status():
    text = """Task     Name              Created    Status
f1a2b3c  sweep-x-t15       10:00 AM   Success
d4e5f6a  sweep-x-t20       10:00 AM   Running
0a1b2c3  sweep-x-t25       10:00 AM   Queued
9f8e7d6  other             09:00 AM   Failed

Worker status: 2 active, 0 idle
"""
    status = sweep.queue_status(text, ["sweep-x-t15", "sweep-x-t20", "sweep-x-t25"])
    assert status == {"sweep-x-t15": "Success", "sweep-x-t20": "Running", "sweep-x-t25": "Queued"}


def test_child_env_nests_under_the_sweep_run(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_RUN_ID", "launcher")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "3")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    env = sweep.child_env("sweep-run", tmp_path)
    assert "MLFLOW_RUN_ID" not in env and "MLFLOW_EXPERIMENT_ID" not in env
    assert env["EMOPRUNE_PARENT_RUN_ID"] == "sweep-run"
    assert "MLFLOW_TRACKING_URI" not in env  # the stages find the repo's store themselves
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")  # as `mlflow run` sets it
    env = sweep.child_env("sweep-run", tmp_path)
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path}/mlflow.db"


def test_summary_table_has_a_row_per_threshold():
    results = [
        Result(15, "s-t15", "Success", {"pruned/acc_mean": 0.5}),
        Result(20, "s-t20", "Failed", {}),
    ]
    table = sweep.summary_table(results).splitlines()
    assert len(table) == 4 and table[0].startswith("| threshold | experiment | status |")
    assert table[2].startswith("| 15 | s-t15 | Success | 0.5 |")
    assert table[3].startswith("| 20 | s-t20 | Failed | - |")
    assert sweep.failed(results) == ["s-t20"]


def test_exp_metrics_come_from_dvc_exp_show():
    shown = [
        {"rev": "workspace", "experiments": None},
        {
            "rev": "abc",
            "experiments": [
                {
                    "revs": [
                        {
                            "name": "s-t15",
                            "data": {
                                "metrics": {
                                    "reports/prune_cnn/metrics.json": {
                                        "data": {
                                            "pruned": {
                                                "acc": {"mean": 0.5, "std": 0.1},
                                                "removed": {"fc1": 3},
                                            },
                                            "random": {"acc": {"mean": 0.45}},
                                        }
                                    },
                                    "reports/train_cnn/metrics.json": {
                                        "data": {"cnn": {"acc": {"mean": 0.6}}}
                                    },
                                    "reports/evaluate/metrics.json": {
                                        "data": {"p_vs": {"cnn": 0.4, "random": None}}
                                    },
                                }
                            },
                        }
                    ]
                },
                {"revs": [{"name": "other", "data": {}}]},
            ],
        },
    ]
    assert sweep.exp_metrics(shown, ["s-t15", "s-t20"]) == {
        "s-t15": {
            "pruned/acc_mean": 0.5,
            "pruned/acc_std": 0.1,
            "cnn/acc_mean": 0.6,
            "random/acc_mean": 0.45,
            "pruned_vs_cnn/corrected_pvalue": 0.4,
        }
    }


def test_a_failing_dvc_call_ends_the_sweep_run_failed(tmp_path, clean_env):
    """A one-line error, and the sweep's own MLflow run is not left RUNNING."""
    import mlflow
    from mlflow.tracking import MlflowClient

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    clean_env.chdir(tmp_path)

    def failing(*args, env, cwd):
        raise UserError(f"`dvc {' '.join(args)}` failed: no dvc here")

    clean_env.setattr(sweep, "_dvc", failing)
    with pytest.raises(UserError, match="dvc exp run --queue"):
        sweep.run_sweep([15.0], jobs=1, experiment="emoprune")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("emoprune").experiment_id])
    assert [(r.info.run_name, r.info.status) for r in runs] == [("sweep", "FAILED")]


def test_the_sweep_waits_for_its_experiments_and_logs_their_metrics(tmp_path, clean_env):
    """run_sweep against a scripted `dvc`: queue, start, poll until done, stop, read metrics."""
    import json

    import mlflow
    from mlflow.tracking import MlflowClient

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    clean_env.chdir(tmp_path)
    calls, polls = [], iter(["Queued", "Running", "Success"])
    names: list[str] = []

    def fake(*args, env, cwd):
        calls.append(args[:2])
        assert env["EMOPRUNE_PARENT_RUN_ID"] and "MLFLOW_RUN_ID" not in env
        if args[:3] == ("exp", "run", "--queue"):
            names.append(args[4])
        if args[:2] == ("queue", "status"):
            state = next(polls)
            return "Task Name Created Status\n" + "".join(f"abc {n} 10:00 {state}\n" for n in names)
        if args[:2] == ("exp", "show"):
            return json.dumps(
                [
                    {
                        "rev": "abc",
                        "experiments": [
                            {
                                "revs": [
                                    {
                                        "name": n,
                                        "data": {
                                            "metrics": {
                                                "reports/prune_cnn/metrics.json": {
                                                    "data": {
                                                        "pruned": {"acc": {"mean": 0.5 + i / 10}}
                                                    }
                                                }
                                            }
                                        },
                                    }
                                    for i, n in enumerate(names)
                                ]
                            }
                        ],
                    }
                ]
            )
        return ""

    clean_env.setattr(sweep, "_dvc", fake)
    results = sweep.run_sweep([15.0, 20.0], jobs=2, experiment="emoprune", poll_s=0)
    assert [(r.threshold, r.status, r.metrics) for r in results] == [
        (15.0, "Success", {"pruned/acc_mean": 0.5}),
        (20.0, "Success", {"pruned/acc_mean": 0.6}),
    ]
    assert calls == [
        ("exp", "run"),
        ("exp", "run"),
        ("queue", "start"),
        ("queue", "status"),
        ("queue", "status"),
        ("queue", "status"),
        ("queue", "stop"),
        ("exp", "show"),
    ]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("emoprune").experiment_id])
    assert run.info.run_name == "sweep" and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "pruned/acc_mean")
    assert sorted((m.step, m.value) for m in history) == [(15, 0.5), (20, 0.6)]

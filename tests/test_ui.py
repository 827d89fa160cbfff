"""`emoprune ui` (`make ui`): a taken port is a one-line error before any link is printed, and a
free one serves MLflow's UI over the project's store."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from emoprune import cli
from emoprune.errors import UserError
from emoprune.pipeline import ui
from servers import free_port, stop_group, wait_healthy


@pytest.fixture
def taken_port():
    """A port a server is listening on, for as long as the test runs."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@pytest.fixture
def no_exec(monkeypatch):
    """Record the command ``serve`` would become, instead of replacing the test process; what
    it sets in the environment for that command stays in a copy."""
    calls = []
    monkeypatch.setattr(ui.os, "execv", lambda path, argv: calls.append(argv))
    monkeypatch.setattr(ui.os, "environ", ui.os.environ.copy())
    return calls


def test_a_taken_port_is_named_with_the_next_one_to_try(taken_port):
    with pytest.raises(UserError) as err:
        ui.check_port_free("127.0.0.1", taken_port)
    assert str(err.value) == (
        f"127.0.0.1:{taken_port} is already in use (another MLflow UI? stop it, or pick another "
        f"port: `make ui PORT={taken_port + 1}`)"
    )


def test_a_free_port_passes():
    ui.check_port_free("127.0.0.1", free_port())


def test_an_unknown_host_is_named():
    with pytest.raises(UserError, match=r"^nohost\.invalid: unknown host"):
        ui.check_port_free("nohost.invalid", free_port())


def test_outside_a_project_nothing_starts_and_no_store_is_made(tmp_path, no_exec, capsys):
    with pytest.raises(UserError, match="no emoprune project here or above"):
        ui.serve("127.0.0.1", free_port(), tmp_path)
    assert no_exec == [] and list(tmp_path.iterdir()) == []
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "host, base",
    [
        ("127.0.0.1", "http://127.0.0.1:5000"),
        ("0.0.0.0", "http://127.0.0.1:5000"),  # every interface: the link goes through loopback
        ("::", "http://[::1]:5000"),
        ("::1", "http://[::1]:5000"),
        ("lab-box", "http://lab-box:5000"),
    ],
)
def test_the_link_is_one_a_browser_here_opens(host, base):
    assert ui.link_base(host, 5000) == base


def test_the_cli_stops_on_a_taken_port_before_any_link(taken_port, no_exec, capsys):
    assert cli.main(["ui", "--port", str(taken_port)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and no_exec == []
    assert (
        err == f"error: 127.0.0.1:{taken_port} is already in use (another MLflow UI? stop "
        f"it, or pick another port: `make ui PORT={taken_port + 1}`)\n"
    )


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_a_bad_port_is_one_line(port, no_exec, capsys):
    assert cli.main(["ui", "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --port: expected a port") and err.count("\n") == 1
    assert no_exec == []


def test_serve_prints_the_link_then_becomes_mlflow_ui_over_the_project_store(
    tmp_path, no_exec, capsys
):
    ui.os.environ.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", None)  # the fixture's copy
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    port = free_port()
    ui.serve("127.0.0.1", port, tmp_path)
    first = capsys.readouterr().out.splitlines()[0]
    # No store yet: the link opens the experiments list.
    assert first == (
        f"MLflow UI, the training runs: http://127.0.0.1:{port}/#/experiments"
        "?workflowType=machine_learning"
    )
    (argv,) = no_exec
    assert argv[:4] == [sys.executable, "-m", "mlflow", "ui"]
    assert argv[4:] == [
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--default-artifact-root",
        str(tmp_path / "mlartifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    assert ui.os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"  # no GenAI job runner


def test_the_job_runner_stays_on_where_the_user_asked_for_it(tmp_path, no_exec):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    ui.os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true"
    ui.serve("127.0.0.1", free_port(), tmp_path)
    assert no_exec  # it did start
    assert ui.os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


def test_the_real_command_serves_the_ui(tmp_path):
    """The exec'd `python -m mlflow ui` really serves, on the port asked for."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    port = free_port()
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emoprune.cli", "ui", "--port", str(port)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", log)
        assert log.read_text().startswith(
            f"MLflow UI, the training runs: http://127.0.0.1:{port}/#/experiments?"
        )
        children = subprocess.run(
            ["pgrep", "-f", "-s", str(proc.pid), "huey_consumer"], capture_output=True, text=True
        )
        assert children.stdout == "", "MLflow's job runner started"
    finally:
        stop_group(proc)

"""A project copied (cp -r) or moved (mv) with its MLflow store keeps a working store."""

import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as mlflow_utils

from emoprune.pipeline import store, tracking


def _files(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}


def _fresh_process() -> None:
    # MLflow caches each run's and logged model's artifact repository per process, by id alone:
    # forget them, as a new process (each stage is one) would.
    mlflow_utils._artifact_repos_cache.clear()


def _client(root: Path) -> MlflowClient:
    _fresh_process()
    return MlflowClient(f"sqlite:///{root}/mlflow.db")


def _stage(root: Path, env, pid: str, text: str) -> str:
    """One stage run in the project at ``root``, logging ``note.txt``; its run id."""
    _fresh_process()
    env.chdir(root)
    env.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri exports it
    env.setenv("EMOPRUNE_PIPELINE_ID", pid)
    with tracking.stage_run("ingest", "emoprune", {}) as run:
        mlflow.log_text(text, "note.txt")
    return run.info.run_id


def _read(root: Path, run_id: str) -> str:
    """note.txt of ``run_id``, downloaded through the store at ``root``."""
    with tempfile.TemporaryDirectory() as dst:
        return Path(_client(root).download_artifacts(run_id, "note.txt", dst)).read_text()


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty, migrated MLflow database, made once: creating the tables takes seconds."""
    db = tmp_path_factory.mktemp("empty") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def project_a(clean_env, tmp_path, empty_store):
    """A project at tmp/A whose store holds a stage run with an artifact, a logged model with an
    artifact, a registered version of it and a trace; yields (A, run id, model id)."""
    a = (tmp_path / "A").resolve()
    a.mkdir()
    (a / "dvc.yaml").write_text("stages: {}\n")
    shutil.copy(empty_store, a / "mlflow.db")
    run_id = _stage(a, clean_env, "first", "from A")
    client = _client(a)
    exp = client.get_experiment_by_name("emoprune")
    model = client.create_logged_model(exp.experiment_id, name="m", source_run_id=run_id)
    (tmp_path / "weights.txt").write_text("w")
    client.log_model_artifact(model.model_id, str(tmp_path / "weights.txt"))
    client.create_registered_model("reg")
    client.create_model_version("reg", model.artifact_location, run_id, model_id=model.model_id)
    mlflow.set_tracking_uri(f"sqlite:///{a}/mlflow.db")  # where traces go
    trace = client.start_trace("t", experiment_id=exp.experiment_id)
    client.end_trace(trace.trace_id)
    mlflow.flush_trace_async_logging()
    yield a, run_id, model.model_id
    mlflow.end_run()


def _assert_points_at(root: Path, old_run: str, model_id: str) -> None:
    """Every artifact location of the store at ``root`` is under root/mlartifacts."""
    art = (root / "mlartifacts").as_uri()
    client = _client(root)
    exp = client.get_experiment_by_name("emoprune")
    assert exp.artifact_location == art
    runs = client.search_runs([exp.experiment_id])
    assert runs and all(r.info.artifact_uri.startswith(art + "/") for r in runs)
    model = client.get_logged_model(model_id)
    assert model.artifact_location.startswith(art + "/")
    version = client.get_model_version("reg", "1")
    assert version.source.startswith(art + "/")
    assert [f.path for f in client.list_artifacts(old_run)] == ["note.txt"]
    assert _read(root, old_run) == "from A"
    assert [f.path for f in client.list_logged_model_artifacts(model_id)] == ["weights.txt"]


def test_a_copied_project_logs_into_its_own_folder(project_a, clean_env, tmp_path, capsys):
    a, old_run, model_id = project_a
    b = tmp_path / "B"
    shutil.copytree(a, b)
    before = _files(a)
    capsys.readouterr()

    new_run = _stage(b, clean_env, "second", "from B")

    assert "the project moved" in capsys.readouterr().err
    assert _files(a) == before  # nothing new under A, not even in its store
    run = _client(b).get_run(new_run)
    assert run.info.artifact_uri.startswith((b / "mlartifacts").as_uri() + "/")
    assert (b / "mlartifacts" / new_run / "artifacts" / "note.txt").read_text() == "from B"
    _assert_points_at(b, old_run, model_id)
    # B reads B's copy of the old run's and model's files, not A's:
    (b / "mlartifacts" / old_run / "artifacts" / "note.txt").write_text("B's copy")
    assert _read(b, old_run) == "B's copy" and _read(a, old_run) == "from A"
    model_dir = Path(urlsplit(_client(b).get_logged_model(model_id).artifact_location).path)
    (model_dir / "weights.txt").unlink()
    assert _client(b).list_logged_model_artifacts(model_id) == []
    (model_dir / "weights.txt").write_text("w")
    _assert_points_at(a, old_run, model_id)  # the original is untouched

    _stage(b, clean_env, "third", "again")  # relocated once: no second message
    assert "the project moved" not in capsys.readouterr().err


def test_a_moved_project_does_not_recreate_the_old_folder(project_a, clean_env, tmp_path):
    a, old_run, model_id = project_a
    b = tmp_path / "B"
    a.rename(b)
    new_run = _stage(b, clean_env, "second", "from B")
    assert not a.exists()
    assert (b / "mlartifacts" / new_run / "artifacts" / "note.txt").is_file()
    _assert_points_at(b, old_run, model_id)


def test_a_temp_copy_under_dvc_logs_into_the_real_project(project_a, clean_env, tmp_path, capsys):
    """`dvc exp run --temp`: the cwd is a store-less copy, $DVC_ROOT the real project."""
    a, _, _ = project_a
    temp = tmp_path / "tmpcopy"
    temp.mkdir()
    (temp / "dvc.yaml").write_text("stages: {}\n")
    clean_env.setenv("DVC_ROOT", str(a))
    capsys.readouterr()
    run_id = _stage(temp, clean_env, "temp", "from temp")
    assert "the project moved" not in capsys.readouterr().err
    assert (a / "mlartifacts" / run_id / "artifacts" / "note.txt").is_file()
    assert not (temp / "mlartifacts").exists() and not (temp / "mlflow.db").exists()


def test_locations_a_user_chose_are_left_alone(project_a, clean_env, tmp_path):
    a, _, _ = project_a
    client = _client(a)
    elsewhere = (tmp_path / "shared" / "mlartifacts").as_uri()  # no project around it
    client.create_experiment("own", artifact_location=elsewhere)
    client.create_experiment("inside", artifact_location=(a / "custom").as_uri())
    b = tmp_path / "B"
    shutil.copytree(a, b)
    _stage(b, clean_env, "second", "from B")
    client = _client(b)
    assert client.get_experiment_by_name("own").artifact_location == elsewhere
    assert client.get_experiment_by_name("inside").artifact_location == (a / "custom").as_uri()


def test_other_tracking_uris_are_never_touched(project_a, clean_env, tmp_path):
    a, _, _ = project_a
    b = tmp_path / "B"
    shutil.copytree(a, b)
    assert store.relocate_if_moved(b, "http://127.0.0.1:5000", "emoprune") == {}
    not_b = f"sqlite:///{a}/mlflow.db"  # a store, but not B's own
    assert store.relocate_if_moved(b, not_b, "emoprune") == {}
    assert _client(b).get_experiment_by_name("emoprune").artifact_location.startswith(a.as_uri())


def test_make_ui_relocates_the_store_first(project_a, clean_env, tmp_path, capsys):
    """``tracking.prepare_ui``, what ``make ui`` runs in a fresh copy before the server."""
    a, old_run, model_id = project_a
    b = tmp_path / "B"
    shutil.copytree(a, b)
    clean_env.chdir(b)
    clean_env.delenv("MLFLOW_TRACKING_URI", raising=False)
    capsys.readouterr()
    link = tracking.prepare_ui("http://127.0.0.1:5000", root=b.resolve())
    assert link.startswith("http://127.0.0.1:5000/#/experiments/")
    assert "the project moved" in capsys.readouterr().err
    _assert_points_at(b, old_run, model_id)
    tracking.prepare_ui("http://127.0.0.1:5000", root=b.resolve())
    assert "moved" not in capsys.readouterr().err  # once only


def test_two_workers_relocating_at_once_do_it_once(project_a, tmp_path):
    a, old_run, model_id = project_a
    b = tmp_path / "B"
    shutil.copytree(a, b)
    results: list[dict] = []
    gate = threading.Barrier(2)

    def worker():
        gate.wait()
        results.append(store.relocate(b / "mlflow.db", b, "emoprune"))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(bool(r) for r in results) == [False, True]
    done = next(r for r in results if r)
    assert done == {a: 7}  # experiment, 2 runs, logged model, version source+storage, trace
    assert store.relocate(b / "mlflow.db", b, "emoprune") == {}
    _assert_points_at(b, old_run, model_id)


def test_every_column_holding_a_location_is_rewritten(project_a, tmp_path):
    """The schema's location columns, checked on a real store: no old path survives anywhere."""
    a, _, _ = project_a
    b = tmp_path / "B"
    shutil.copytree(a, b)
    store.relocate(b / "mlflow.db", b, "emoprune")
    con = sqlite3.connect(b / "mlflow.db")
    for table, columns in store._tables(con).items():
        for column in columns:
            hits = con.execute(
                f"SELECT count(*) FROM '{table}' WHERE instr(CAST(\"{column}\" AS TEXT), ?) > 0",
                (f"{a}/mlartifacts",),
            ).fetchone()[0]
            assert hits == 0, (table, column)
    con.close()


def test_rebase_keeps_the_form_and_only_the_old_tree():
    old, new = Path("/x/a b"), Path("/y/B")
    assert store.rebase("file:///x/a%20b/mlartifacts/r/artifacts", old, new) == (
        "file:///y/B/mlartifacts/r/artifacts"
    )
    assert store.rebase("/x/a b/mlartifacts/3", old, new) == "/y/B/mlartifacts/3"
    assert store.rebase("file:///x/a%20b/mlartifacts", old, new) == "file:///y/B/mlartifacts"
    for other in ("file:///x/a%20b/mlartifacts2", "/x/a b/custom", "s3://b/x", "models:/m-1", None):
        assert store.rebase(other, old, new) is None
    assert store.root_of("file:///x/p/mlartifacts") == Path("/x/p")
    assert store.root_of("/x/p/mlartifacts/4") == Path("/x/p")
    assert store.root_of("/x/p/mlruns/0") is None

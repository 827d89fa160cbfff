"""MLflow tracking, as the tracking contract in docs/design.md specifies.

- URI: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<root>/mlflow.db`` with artifacts in
  ``<root>/mlartifacts``. ``<root>`` is ``$DVC_ROOT`` (DVC points it at the real repo even under
  ``dvc exp run --temp/--queue``), else the nearest folder above the cwd holding dvc.yaml.
- One run per stage execution, named after the stage, tagged ``dvc.stage``, ``dvc.exp_name``,
  ``dvc.baseline_rev``, ``git.commit`` and ``pipeline.id``, nested under one parent run per
  pipeline invocation (or under ``$MLFLOW_RUN_ID`` when ``mlflow run`` launched us). Under
  ``$EMOPRUNE_PARENT_RUN_ID`` (an ``emoprune sweep``) each pipeline run nests under that run.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emoprune.errors import UserError, interrupt_in
from emoprune.pipeline.process import interrupts_outside_store

PIPELINE_TAG = "pipeline.id"
PID_TAG = "emoprune.process"  # host:pid:start time of the process that owns a RUNNING run
ROLE_TAG = "emoprune.role"
KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
OUTER_RUN_ENV = "EMOPRUNE_PARENT_RUN_ID"  # pipeline runs nest under it (set by `emoprune sweep`)
SQLITE_TIMEOUT_S = 60  # -j 2 queue workers share one sqlite file; wait for the lock, never fail
SERVER_TIMEOUT_S = 10


def project_root(cwd: str | Path | None = None) -> Path:
    """The repo root: ``$DVC_ROOT`` when DVC runs us, else the nearest parent with dvc.yaml."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path(cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists() or (folder / ".dvc").is_dir():
            return folder
    return here


def tracking_uri(root: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else the sqlite store at the repo root.

    A relative sqlite path (``sqlite:///mlflow.db``, what ``mlflow run`` passes on by default)
    is taken relative to the repo root, not to the cwd: queued experiments run their stages in
    a temporary copy of the repo, and must still write to the one store.
    """
    root = root or project_root()
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not env:
        return f"sqlite:///{root / 'mlflow.db'}"
    match = re.fullmatch(r"sqlite:///([^/?][^?]*)(\?.*)?", env)
    if match and match.group(1) != ":memory:":
        return f"sqlite:///{root / match.group(1)}{match.group(2) or ''}"
    return env


def artifact_location(root: Path | None = None) -> str:
    return (root or project_root()).joinpath("mlartifacts").as_uri()


def mask_uri(uri: str) -> str:
    """Hide the password in ``scheme://user:password@host`` so it never reaches a log."""
    return re.sub(r"(//[^/:@]+):[^/@]*@", r"\1:***@", uri)


def _with_sqlite_timeout(uri: str) -> str:
    # SQLAlchemy's pysqlite dialect reads ``timeout`` from the URL query: how long a writer waits
    # for the lock instead of raising "database is locked" (the default is 5 s).
    if uri.startswith("sqlite:") and "timeout=" not in uri:
        return f"{uri}{'&' if '?' in uri else '?'}timeout={SQLITE_TIMEOUT_S}"
    return uri


def check_reachable(
    uri: str,
    timeout: float = SERVER_TIMEOUT_S,
    advice: str = "start it or unset MLFLOW_TRACKING_URI",
) -> None:
    """Fail fast, in one line ending with ``advice``, when an HTTP MLflow server does not answer.

    A dead server must not stall the caller in MLflow's retry loop for minutes either: MLflow's
    HTTP retries and timeout are bounded from here on, unless the environment sets them.
    """
    if not uri.startswith(("http://", "https://")):
        return
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(SERVER_TIMEOUT_S))
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            resp.read(64)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise UserError(f"MLflow tracking server {mask_uri(uri)} answered {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"MLflow tracking server {mask_uri(uri)} is unreachable ({reason}); {advice}"
        ) from None


def configure(root: Path | None = None) -> str:
    """Point mlflow at the project's store; returns the (unmasked) URI."""
    import mlflow

    uri = tracking_uri(root)
    check_reachable(uri)
    mlflow.set_tracking_uri(_with_sqlite_timeout(uri))
    check_access(uri)
    return uri


def check_access(uri: str) -> None:
    """One cheap authenticated call to an HTTP server, so missing or wrong credentials (a
    basic-auth server) stop the stage in one line before it writes anything, not with a
    traceback from its first log call. Uses MLflow's own client, so every auth method it
    supports (env credentials, tokens, auth plugins) is what gets checked."""
    if not uri.startswith(("http://", "https://")):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except MlflowException as exc:
        code = re.search(r"error code (401|403)\b", str(exc))
        if code is None:
            raise
        raise UserError(
            f"MLflow tracking server {mask_uri(uri)} refused access ({code.group(1)}): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
        ) from None


# MLflow 3.17's UI opens an experiment on the page of its sidebar's workflow switch (GenAI by
# default, kept in the browser), not by the experiment's mlflow.experimentKind tag; this URL
# parameter selects "Model training", whose experiment page is the runs table.
TRAINING_VIEW = "workflowType=machine_learning"


def ui_link(base: str, experiment: str | None = None, root: Path | None = None) -> str:
    """The UI page of the project's experiment (its training runs), e.g.
    ``http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning``; the experiments
    list while the local store has no such experiment yet."""
    from mlflow.tracking import MlflowClient

    root = root or project_root()
    name = experiment or experiment_name(root)
    exp = None
    if (root / "mlflow.db").is_file():
        mlflow_uri = _with_sqlite_timeout(f"sqlite:///{root / 'mlflow.db'}")
        exp = MlflowClient(tracking_uri=mlflow_uri).get_experiment_by_name(name)
    page = f"experiments/{exp.experiment_id}" if exp else "experiments"
    return f"{base.rstrip('/')}/#/{page}?{TRAINING_VIEW}"


def prepare_ui(base: str, root: Path | None = None) -> str:
    """What ``make ui`` does before starting the server: point a copied or moved project's
    store at this folder (``store.relocate_if_moved``), then return ``ui_link(base)``."""
    from emoprune.pipeline import store

    root = root or project_root()
    name = experiment_name(root)
    store.relocate_if_moved(root, tracking_uri(root), name, SQLITE_TIMEOUT_S)
    return ui_link(base, name, root)


def experiment_name(root: Path) -> str:
    """params.yaml's ``mlflow.experiment`` at ``root``; its default when unset."""
    from emoprune.pipeline.params import MlflowParams

    return (read_yaml(root / "params.yaml").get("mlflow") or {}).get(
        "experiment"
    ) or MlflowParams().experiment


def _git(*args: str, cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _dvc_invocation() -> str | None:
    """PID and start time of the nearest ``dvc`` process above us: one per repro / exp run."""
    try:
        import psutil

        for proc in psutil.Process().parents():
            try:
                cmd = proc.cmdline()
            except (psutil.Error, OSError):
                continue
            head = [Path(c).name for c in cmd[:3]]
            if "dvc" in head[:2] or head[1:3] == ["-m", "dvc"]:
                return f"{proc.pid}-{proc.create_time():.3f}"
    except Exception:  # psutil missing or /proc unreadable: fall back to a fresh id
        return None
    return None


def pipeline_id() -> str:
    """An id shared by every stage of one pipeline invocation.

    ``$EMOPRUNE_PIPELINE_ID`` wins; under ``mlflow run`` it is the launching run; otherwise it is
    derived from the ``dvc`` process that runs the stages, so each ``dvc repro`` and each queued
    experiment gets its own parent run.
    """
    if os.environ.get("EMOPRUNE_PIPELINE_ID"):
        return os.environ["EMOPRUNE_PIPELINE_ID"]
    if os.environ.get("MLFLOW_RUN_ID"):
        return os.environ["MLFLOW_RUN_ID"]
    invocation = _dvc_invocation()
    if invocation is None:
        return uuid.uuid4().hex[:16]
    key = f"{invocation}|{os.environ.get('DVC_EXP_NAME', '')}|{project_root()}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def run_tags(stage: str, pid: str) -> dict[str, str]:
    commit = _git("rev-parse", "HEAD")
    return {
        "dvc.stage": stage,
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME") or "workspace",
        "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV") or commit,
        "git.commit": commit,
        PIPELINE_TAG: pid,
    }


def ensure_experiment(client: Any, name: str, root: Path) -> str:
    """The experiment's id, creating it (with artifacts under <root>/mlartifacts) if needed.

    It is marked a model-training experiment, so the UI opens on its runs, not on GenAI traces.
    A project store copied or moved from another folder is first relocated to this one
    (``store.relocate_if_moved``), so new runs never write into the old folder.
    """
    from mlflow.exceptions import MlflowException

    from emoprune.pipeline import store

    store.relocate_if_moved(root, tracking_uri(root), name, SQLITE_TIMEOUT_S)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if KIND_TAG not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, KIND_TAG, TRAINING_KIND)
        return exp.experiment_id
    local = not tracking_uri(root).startswith(("http://", "https://"))
    try:
        return client.create_experiment(
            name,
            artifact_location=artifact_location(root) if local else None,
            tags={KIND_TAG: TRAINING_KIND},
        )
    except MlflowException:  # a parallel worker created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def ensure_parent(
    client: Any, experiment_id: str, pid: str, tags: Mapping[str, str], outer: str | None = None
) -> str:
    """The parent run of this pipeline invocation: ``$MLFLOW_RUN_ID`` or a run found by tag.

    A parent created here is nested under ``outer`` when given (the run of an ``emoprune
    sweep``), so a sweep shows as sweep -> one pipeline run per experiment -> stage runs.
    """
    if os.environ.get("MLFLOW_RUN_ID"):
        return os.environ["MLFLOW_RUN_ID"]
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PIPELINE_TAG}` = '{pid}' and tags.`{ROLE_TAG}` = 'pipeline'",
        max_results=1,
    )
    if found:
        if found[0].info.status != "RUNNING":  # an earlier stage ended it; this one goes on
            client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    name = tags["dvc.exp_name"]
    parent_tags = {k: v for k, v in tags.items() if k != "dvc.stage"}
    parent_tags[ROLE_TAG] = "pipeline"
    if outer:
        parent_tags["mlflow.parentRunId"] = outer
    run = client.create_run(
        experiment_id,
        run_name=f"pipeline {name}" if name != "workspace" else "pipeline",
        tags=system_tags(parent_tags, source="dvc.yaml"),
    )
    # Every param on the pipeline run, so pipelines compare in the runs table alone.
    _log_params(client, run.info.run_id, flatten(read_yaml("params.yaml")))
    return run.info.run_id


def system_tags(tags: Mapping[str, str], source: str | None = None) -> dict[str, str]:
    """``tags`` plus what MLflow's own run context providers add when ``mlflow.start_run``
    creates a run (``mlflow.user``, ``mlflow.source.name``/``type``, ``mlflow.source.git.*``);
    ``source`` overrides the source name (the pipeline run's is dvc.yaml, not a stage script)."""
    from mlflow.tracking.context.registry import resolve_tags

    resolved = resolve_tags(dict(tags))
    if source is not None:
        resolved["mlflow.source.name"] = source
    return resolved


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 1000  # MLflow's limits per log_batch call


def log_batches(client: Any, run_id: str, *, params: Any = (), metrics: Any = ()) -> None:
    """``client.log_batch`` of ``params`` / ``metrics`` (MLflow entities), split at MLflow's
    per-call limits."""
    params, metrics = list(params), list(metrics)
    for i in range(0, len(params), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=params[i : i + PARAMS_PER_BATCH])
    for i in range(0, len(metrics), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + METRICS_PER_BATCH])


def _log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    log_batches(client, run_id, params=[Param(k, str(v)) for k, v in params.items()])


def headline_metrics(root: str | Path = ".") -> dict[str, float]:
    """Every number of the metrics files ``root``'s dvc.yaml lists, flattened as ``dvc exp
    show`` names them (``cnn.acc.mean``, ``p_vs.random``); files not produced yet are skipped."""
    import json

    out: dict[str, float] = {}
    for name in read_yaml(Path(root) / "dvc.yaml").get("metrics", []):
        try:
            values = flatten(json.loads((Path(root) / name).read_text()))
        except (OSError, ValueError):
            continue
        out.update({k: float(v) for k, v in values.items() if isinstance(v, int | float)})
    return out


def log_pipeline_metrics(client: Any, run_id: str) -> None:
    """The headline metrics on the pipeline run, when a stage ends: after the last stage it
    holds every model's numbers (also those of stages DVC restored from its cache). Only
    changed values are sent, so a metric's history is one point per value it took."""
    from mlflow.entities import Metric

    current = client.get_run(run_id).data.metrics
    now = int(time.time() * 1000)
    changed = [Metric(k, v, now, 0) for k, v in headline_metrics().items() if current.get(k) != v]
    log_batches(client, run_id, metrics=changed)


def run_name(stage: str, params: Mapping[str, Any]) -> str:
    """``prune_cnn t=15 <exp name>``: the stage, the param a threshold experiment varies, and
    the DVC experiment, so an overlay of two runs is not labelled ``prune_cnn`` twice."""
    parts = [stage]
    threshold = (params.get("prune") or {}).get("threshold")
    if stage == "prune_cnn" and threshold is not None:
        parts.append(f"t={threshold:g}")
    if os.environ.get("DVC_EXP_NAME"):
        parts.append(os.environ["DVC_EXP_NAME"])
    return " ".join(parts)


def _experiment_of(client: Any, run_id: str, variable: str) -> str:
    """The experiment holding ``run_id`` (named by ``$variable``); one line if there is none."""
    try:
        return client.get_run(run_id).info.experiment_id
    except Exception:
        raise UserError(f"{variable}={run_id} names no run in {mask_uri(tracking_uri())}") from None


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"cnn": {"lr": 1}} -> {"cnn.lr": 1}; lists become strings."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = ",".join(map(str, value))
        else:
            out[name] = value
    return out


@contextmanager
def stage_run(stage: str, experiment: str, params: Mapping[str, Any]) -> Iterator[Any]:
    """Open the MLflow run of one stage execution, nested under its pipeline's parent run.

    ``params`` is the stage's own params (sections as nested dicts), logged flattened. The run
    ends FINISHED on success, FAILED on an error and KILLED on Ctrl-C or SIGTERM; either signal
    waits for a store write under way to finish, so the store is never left locked.
    """
    with interrupts_outside_store(), _stage_run(stage, experiment, params) as active:
        yield active


@contextmanager
def _stage_run(stage: str, experiment: str, params: Mapping[str, Any]) -> Iterator[Any]:
    import mlflow
    from mlflow.tracking import MlflowClient

    root = project_root()
    uri = configure(root)
    client = MlflowClient()
    pid = pipeline_id()
    tags = run_tags(stage, pid)
    launcher = os.environ.get("MLFLOW_RUN_ID")
    outer = os.environ.get(OUTER_RUN_ENV)
    if launcher:
        # Nest under `mlflow run`'s run, in its experiment, without resuming it ourselves:
        # the UI shows children only within their parent's experiment.
        experiment_id = _experiment_of(client, launcher, "MLFLOW_RUN_ID")
    elif outer:
        experiment_id = _experiment_of(client, outer, OUTER_RUN_ENV)
    else:
        experiment_id = ensure_experiment(client, experiment, root)
    parent_id = ensure_parent(client, experiment_id, pid, tags, outer)
    os.environ.pop("MLFLOW_RUN_ID", None)
    mark_abandoned_runs(client, experiment_id, stage)
    status = "FAILED"
    try:
        # MLflow's own run creation, so its context providers set the Source, User and
        # Version columns; system metrics follow $MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name(stage, params),
            parent_run_id=parent_id,
            tags={**tags, PID_TAG: _process_tag()},
        ) as active:
            mlflow.log_params(flatten(params))
            print(
                f"[{stage}] MLflow run {active.info.run_id} in {mask_uri(uri)} "
                f"(experiment {experiment!r}; `make ui` to browse)",
                file=sys.stderr,
            )
            try:
                yield active
                status = "FINISHED"
            except BaseException as exc:
                if interrupt_in(exc) is not None:  # also a write that failed mid-interrupt
                    status = "KILLED"
                raise
            finally:
                flush_metrics()  # what a failed or killed run measured is still worth seeing
                if status == "KILLED":
                    mlflow.end_run(status="KILLED")
    finally:
        if _is_own_parent(client, parent_id):
            if status == "FINISHED":
                log_pipeline_metrics(client, parent_id)
            client.set_terminated(parent_id, status=status)


def _process_tag(pid: int | None = None) -> str:
    import socket

    import psutil

    proc = psutil.Process(pid)
    return f"{socket.gethostname()}:{proc.pid}:{proc.create_time():.3f}"


def _process_alive(tag: str) -> bool:
    """Whether the process named by a PID_TAG still runs (same host, same pid, same start)."""
    import socket

    import psutil

    host, _, rest = tag.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname():
        return True  # another machine's run: not ours to judge
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}" == started
    except (psutil.Error, ValueError):
        return False


def mark_abandoned_runs(client: Any, experiment_id: str, stage: str) -> list[str]:
    """Mark KILLED the RUNNING runs of ``stage`` whose process is gone (e.g. after SIGKILL),
    and their pipeline parent, so the UI never shows a dead attempt as still running."""
    stale = []
    for run in client.search_runs(
        [experiment_id],
        filter_string=f"tags.`dvc.stage` = '{stage}' and attributes.status = 'RUNNING'",
    ):
        tag = run.data.tags.get(PID_TAG)
        if tag and not _process_alive(tag):
            client.set_terminated(run.info.run_id, status="KILLED")
            stale.append(run.info.run_id)
            parent = run.data.tags.get("mlflow.parentRunId")
            if (
                parent
                and _is_own_parent(client, parent)
                and client.get_run(parent).info.status == "RUNNING"
            ):
                client.set_terminated(parent, status="KILLED")
    return stale


def _is_own_parent(client: Any, run_id: str) -> bool:
    try:
        return client.get_run(run_id).data.tags.get(ROLE_TAG) == "pipeline"
    except Exception:
        return False


class MetricBuffer:
    """Per-epoch metrics, sent to MLflow in batches.

    One ``log_metrics`` call per epoch costs a database round trip (tens of ms on sqlite, more on
    a remote server): for a 450-epoch MLP that is most of the stage's time. Buffered metrics keep
    their step and timestamp and are flushed every ``every_s`` seconds (the UI stays nearly
    live) and when the stage's run ends.
    """

    def __init__(self, every_s: float = 15.0):
        self.every_s = every_s
        self.pending: list[Any] = []
        self.last_flush = time.monotonic()

    def add(self, metrics: Mapping[str, float], step: int) -> None:
        import math

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [
            Metric(k, float(v), now, int(step))
            for k, v in metrics.items()
            if v is not None and not math.isnan(v)
        ]
        if time.monotonic() - self.last_flush > self.every_s:
            self.flush()

    def flush(self) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        run = mlflow.active_run()
        if run is not None and self.pending:
            log_batches(MlflowClient(), run.info.run_id, metrics=self.pending)
        self.pending = []
        self.last_flush = time.monotonic()


_buffer = MetricBuffer()


def log_metrics(metrics: Mapping[str, float], step: int) -> None:
    """Log to the active run at ``step`` (buffered); NaN, e.g. an angle with < 2 live neurons,
    is skipped."""
    _buffer.add(metrics, step)


def flush_metrics() -> None:
    _buffer.flush()


def set_tag(key: str, value: str) -> None:
    """Tag the active run (a stage's); nothing outside one (unit tests of a stage's parts)."""
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.set_tag(key, value)


def epoch_logger(prefix: str):
    """A ``fit`` callback logging one epoch's loss/accuracy as ``<prefix>train_loss`` etc."""

    def log(stats: Any, model: Any) -> None:
        log_metrics(
            {
                f"{prefix}{k}": getattr(stats, k)
                for k in ("train_loss", "train_acc", "val_loss", "val_acc", "seconds")
            },
            step=stats.epoch,
        )

    return log


def log_folder(folder: str | Path, artifact_path: str) -> None:
    """Log every file under ``folder`` but dotfiles (DVC's .gitignore is not a report)."""
    import mlflow

    folder = Path(folder)
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            parent = rel.parent.as_posix()
            mlflow.log_artifact(
                str(path), f"{artifact_path}/{parent}" if parent != "." else artifact_path
            )


def log_model(package: Mapping[str, Any], name: str) -> Any:
    """Log a pyfunc model as ``name`` on the active run; returns its ``ModelInfo``.

    ``package`` holds the keyword arguments of ``mlflow.pyfunc.log_model``: for the pipeline's
    models ``pipeline.packaged.package``'s (the network with its preprocessing and code, pinned
    requirements, signature, a small example, metadata). Requirements must be given in it:
    inferring them imports every module and takes minutes.
    """
    import mlflow.pyfunc

    # Logging validates the input example by loading the model back: no progress bar per model.
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        return mlflow.pyfunc.log_model(name=name, **package)
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def log_comparison(headline: Mapping[str, float], reports: str | Path) -> None:
    """evaluate's run: every model's headline numbers, the union of every stage's params (so the
    evaluate run alone identifies the experiment), the data version, and the report files."""
    import mlflow
    import yaml

    mlflow.log_metrics(dict(headline))
    everything = flatten(read_yaml("params.yaml"))
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({k: v for k, v in everything.items() if k not in logged})
    lock = yaml.safe_load(Path("dvc.lock").read_text()) if Path("dvc.lock").exists() else {}
    data = (lock.get("stages", {}).get("ingest", {}).get("deps") or [{}])[0]
    if data.get("md5"):
        mlflow.set_tag("data.md5", data["md5"])
    log_folder(reports, "evaluate")


def fold_model_logger(name: str, package: Any):
    """A ``cross_validate`` ``on_fold_end`` hook logging each fold's model as ``name.format(k=k)``.

    It returns ``log_model``'s ``ModelInfo``. ``package(k, fit, scratch)`` gives what
    ``log_model`` logs (``packaged.fold_packager``: the
    fold's checkpoint with its preprocessing, as a pyfunc). Passed in rather than imported, so
    the stages that only track runs do not depend on the model code. ``scratch`` is a temporary
    folder outside the stage's DVC outputs, removed once the model is logged.
    """
    import tempfile

    def log(k: int, fit: Any) -> Any:
        with tempfile.TemporaryDirectory(prefix="emoprune-model-") as scratch:
            return log_model(package(k, fit, Path(scratch)), name.format(k=k))

    return log


def fold_epoch_logger(prefix: str):
    """``cross_validate``'s ``callbacks``: fold k logs its epochs under ``prefix.format(k=k)``."""
    return lambda k: [epoch_logger(prefix.format(k=k))]

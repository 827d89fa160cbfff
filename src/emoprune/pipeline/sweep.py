"""``emoprune sweep``: queue one DVC experiment per pruning threshold, run them in parallel with
``dvc queue start -j N``, wait, and summarise them on one MLflow run.

The sweep's run (``mlflow run``'s own, or one opened here) is the parent of each experiment's
pipeline run, which is the parent of that experiment's stage runs; the sweep run also gets each
threshold's headline metrics with ``step`` = the threshold, so the UI draws accuracy against
threshold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from emoprune.choices import PRUNE_THRESHOLD_RANGE
from emoprune.errors import UserError
from emoprune.pipeline import tracking

DONE = ("Success", "Failed")
LOST_AFTER_S = 120  # a queued name missing from `dvc queue status` this long is an error
# Each experiment's headline metrics for the sweep run, named as on the evaluate runs:
# {MLflow name: key in the metrics files dvc.yaml declares (keys are unique across files)}.
SUMMARY = {
    "pruned/acc_mean": "pruned.acc.mean",
    "pruned/acc_std": "pruned.acc.std",
    "pruned/n_params": "pruned.n_params",
    "cnn/acc_mean": "cnn.acc.mean",
    "random/acc_mean": "random.acc.mean",
    "magnitude/acc_mean": "magnitude.acc.mean",
    "pruned_vs_cnn/corrected_pvalue": "p_vs.cnn",
    "pruned_vs_random/corrected_pvalue": "p_vs.random",
}


@dataclass
class Result:
    threshold: float
    name: str
    status: str
    metrics: Mapping[str, float]


def parse_thresholds(text: str) -> list[float]:
    """``"15,20,25"`` -> ``[15.0, 20.0, 25.0]``, each inside prune.threshold's range."""
    low, high = PRUNE_THRESHOLD_RANGE
    values = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        try:
            value = float(item)
        except ValueError:
            raise UserError(f"sweep: threshold {item!r} is not a number") from None
        if not low < value < high:
            raise UserError(f"sweep: threshold {value:g} must be in ({low:g}, {high:g})")
        values.append(value)
    if not values:
        raise UserError("sweep: no thresholds given (e.g. --thresholds 15,20,25)")
    if len(set(values)) != len(values):
        raise UserError(f"sweep: thresholds repeat: {text}")
    return values


def experiment_name(prefix: str, threshold: float) -> str:
    return f"{prefix}-t{threshold:g}".replace(".", "p")


def queue_status(text: str, names: Sequence[str]) -> dict[str, str]:
    """Each named task's status (Queued, Running, Success, Failed) in ``dvc queue status``."""
    status = {}
    for line in text.splitlines():
        words = line.split()
        for name in names:
            if name in words:
                status[name] = next(
                    (w for w in reversed(words) if w in ("Queued", "Running", *DONE)), "Unknown"
                )
    return status


def _dvc(*args: str, env: Mapping[str, str], cwd: Path) -> str:
    proc = subprocess.run(["dvc", *args], cwd=cwd, env=dict(env), capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise UserError(f"`dvc {' '.join(args)}` failed: {last[0]}")
    return proc.stdout


def child_env(sweep_run_id: str, root: Path) -> dict[str, str]:
    """What the queue workers run with: their pipeline runs nest under the sweep run.

    A configured ``$MLFLOW_TRACKING_URI`` is passed on made absolute (the workers run in
    temporary copies of the repo); without one the stages find the repo's own store themselves.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "EMOPRUNE_PIPELINE_ID")
    }
    env[tracking.OUTER_RUN_ENV] = sweep_run_id
    if env.get("MLFLOW_TRACKING_URI", "").strip():
        env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri(root)
    return env


def run_sweep(
    thresholds: Sequence[float], jobs: int, experiment: str, poll_s: float = 5.0, out=sys.stderr
) -> list[Result]:
    """Queue, run and summarise one experiment per threshold; returns them in order."""
    from mlflow.tracking import MlflowClient

    root = tracking.project_root()
    tracking.configure(root)
    client = MlflowClient()
    launcher = os.environ.get("MLFLOW_RUN_ID")
    if launcher:
        sweep_id = launcher
    else:
        exp_id = tracking.ensure_experiment(client, experiment, root)
        sweep_id = client.create_run(
            exp_id, run_name="sweep", tags={tracking.ROLE_TAG: "sweep"}
        ).info.run_id
    client.set_tag(sweep_id, "sweep.thresholds", ",".join(f"{t:g}" for t in thresholds))
    prefix = f"sweep-{uuid.uuid4().hex[:6]}"
    names = [experiment_name(prefix, t) for t in thresholds]
    env = child_env(sweep_id, root)
    status: dict[str, str] = {}
    try:
        for name, t in zip(names, thresholds):
            _dvc(
                "exp",
                "run",
                "--queue",
                "-n",
                name,
                "-S",
                f"prune.threshold={t:g}",
                env=env,
                cwd=root,
            )
            print(f"[sweep] queued {name} (prune.threshold={t:g})", file=out)
        _dvc("queue", "start", "-j", str(jobs), env=env, cwd=root)
        print(
            f"[sweep] {len(names)} experiments on {jobs} workers; "
            f"`dvc queue status` shows progress",
            file=out,
        )
        last_seen = time.monotonic()
        while True:
            status = queue_status(_dvc("queue", "status", env=env, cwd=root), names)
            if all(status.get(n) in DONE for n in names):
                break
            if len(status) == len(names):
                last_seen = time.monotonic()
            elif time.monotonic() - last_seen > LOST_AFTER_S:
                lost = [n for n in names if n not in status]
                raise UserError(
                    f"sweep: {', '.join(lost)} left the DVC queue unfinished "
                    "(`dvc queue status`, `dvc queue logs NAME`)"
                )
            time.sleep(poll_s)
        _dvc("queue", "stop", env=env, cwd=root)  # the workers we started; they'd idle otherwise
        shown = json.loads(_dvc("exp", "show", "--json", env=env, cwd=root) or "[]")
    except KeyboardInterrupt:
        print(
            f"[sweep] interrupted; queued experiments may still run: `dvc queue status`, "
            f"`dvc queue kill {' '.join(names)}`",
            file=out,
        )
        if not launcher:
            client.set_terminated(sweep_id, status="KILLED")
        raise
    except BaseException:
        if not launcher:  # never leave our run RUNNING in the UI
            client.set_terminated(sweep_id, status="FAILED")
        raise
    metrics = exp_metrics(shown, names)
    results = [Result(t, n, status[n], metrics.get(n, {})) for n, t in zip(names, thresholds)]
    _log_summary(client, sweep_id, results)
    if not launcher:
        failed = any(r.status != "Success" for r in results)
        client.set_terminated(sweep_id, status="FAILED" if failed else "FINISHED")
    return results


def exp_metrics(shown: list, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """The SUMMARY metrics of each named experiment, from ``dvc exp show --json``.

    DVC, not MLflow, is the source: an experiment whose stages all came from DVC's cache
    logged no new runs, but its metrics are still there.
    """
    found: dict[str, dict[str, float]] = {}
    for rev in shown:
        for exp in rev.get("experiments") or []:
            for r in exp.get("revs") or []:
                if r.get("name") in names:
                    files = ((r.get("data") or {}).get("metrics") or {}).values()
                    flat = {
                        k: v
                        for f in files
                        for k, v in tracking.flatten(f.get("data") or {}).items()
                    }
                    found[r["name"]] = {
                        name: float(flat[key])
                        for name, key in SUMMARY.items()
                        if flat.get(key) is not None  # an undefined p-value is null
                    }
    return found


def summary_table(results: Sequence[Result]) -> str:
    """A markdown table: one row per threshold."""
    lines = [
        "| threshold | experiment | status | " + " | ".join(SUMMARY) + " |",
        "|---|---|---|" + "---|" * len(SUMMARY),
    ]
    for r in results:
        cells = [f"{r.metrics[k]:.4g}" if k in r.metrics else "-" for k in SUMMARY]
        lines.append(f"| {r.threshold:g} | {r.name} | {r.status} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _log_summary(client, run_id: str, results: Sequence[Result]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, round(r.threshold)) for r in results for k, v in r.metrics.items()]
    if metrics:
        client.log_batch(run_id, metrics=metrics)
    client.log_text(run_id, summary_table(results), "sweep.md")


def failed(results: Sequence[Result]) -> list[str]:
    return [r.name for r in results if r.status != "Success"]

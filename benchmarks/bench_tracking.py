"""Per-epoch metric logging on a sqlite store: the project's ``tracking.MetricBuffer`` vs MLflow's
own asynchronous logging, with plain synchronous ``mlflow.log_metrics`` as a reference.

Every training stage calls ``tracking.log_metrics(metrics, step)`` once per epoch and fold. Two
loads like the stages': ``mlp`` (train_mlp: 5 folds x 450 epochs x 5 metrics) and ``cnn``
(train_cnn / prune_cnn: 5 folds x 100 epochs x 12 metrics, the 5 epoch stats plus 7 fc1 angle
metrics), logged as ``fold<k>/<name>`` at ``step = epoch``. Methods:

- ``buffer``: ``tracking.MetricBuffer()`` (the baseline): ``add`` per epoch, ``flush`` at the end;
- ``sync``: ``mlflow.log_metrics(metrics, step=step)``, one store write per epoch;
- ``async``: ``mlflow.log_metrics(..., synchronous=False)`` (what MLFLOW_ENABLE_ASYNC_LOGGING=true
  gives), drained by ``mlflow.end_run()``; MLflow's defaults, so every call is queued as its own
  batch and written by a pool of 10 threads;
- ``async_buffered``: the same with ``MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1``, which makes
  MLflow's logging thread wait 1 s between drains and merge the queued calls into batches of up
  to 1000 entries.

Two scenarios. Back to back (``log_<load>_<method>_*``): the calls come with no training work
between them, the logging cost alone; ``blocked`` is the time spent inside the logging calls,
``total`` the time from the first call until every point is in the store and the run has ended
(flush + end_run). The buffer's 15 s flush never fires inside such a short loop, so its
``blocked`` leaves out the writes a real stage makes mid-loop. Paced (``log_<load>_paced_*``,
no ``sync``): each epoch first sleeps 2 ms (training work that releases the GIL, as torch kernels
do) and the buffer flushes every 15 s scaled by 2 ms / the stage's real epoch, so it flushes as
often per epoch as in the real stage; ``blocked`` then includes those flushes, and ``drain`` is
the time from the last epoch until everything is stored and the run has ended.
Each run goes to its own copy of a freshly created store (``sqlite:///<tmp>/...db?timeout=60``,
the project's sqlite timeout); afterwards the metric history of every key is read back and must
hold every step once, with the logged value and a timestamp taken at call time (not at write
time), or the bench fails. Values are medians over the repetitions, the methods interleaved;
``ratio`` = method / buffer (above 1: slower than the buffer).
Run: ``PYTHONPATH=src python benchmarks/bench_tracking.py [--smoke]``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

GROUP = "tracking"
METHODS = ("buffer", "sync", "async", "async_buffered")
EPOCH_STATS = ("train_loss", "train_acc", "val_loss", "val_acc", "seconds")
ANGLE_STATS = tuple(
    f"fc1/{m}"
    for m in (
        "min_angle",
        "max_angle",
        "n_alive",
        "n_similar",
        "n_complementary",
        "pruned_now",
        "removed_total",
    )
)
BUFFERING_ENV = "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"
# Mean epoch "seconds" of this project's train_mlp and train_cnn runs on a 2-core CPU.
MLP_EPOCH_S, CNN_EPOCH_S = 0.016, 0.8
PACE_S = 0.002  # the paced runs' epoch: real epochs scaled down, the flush interval with them


@dataclass(frozen=True)
class Load:
    name: str
    folds: int
    epochs: int
    metrics: tuple[str, ...]
    epoch_s: float  # a real epoch of the stage this load mimics

    @property
    def calls(self) -> int:
        return self.folds * self.epochs

    @property
    def points(self) -> int:
        return self.calls * len(self.metrics)

    def describe(self) -> str:
        return f"{self.folds} folds x {self.epochs} epochs x {len(self.metrics)} metrics"


def loads(smoke: bool) -> tuple[Load, Load]:
    folds, (mlp, cnn) = (2, (15, 5)) if smoke else (5, (450, 100))
    return (
        Load("mlp", folds, mlp, EPOCH_STATS, MLP_EPOCH_S),
        Load("cnn", folds, cnn, EPOCH_STATS + ANGLE_STATS, CNN_EPOCH_S),
    )


def _value(fold: int, epoch: int, j: int) -> float:
    """A distinct, exactly representable value per point, to check what was stored."""
    return fold * 10_000 + epoch + j / 16


def _payload(load: Load) -> list[tuple[int, dict[str, float]]]:
    return [
        (epoch, {f"fold{k}/{m}": _value(k, epoch, j) for j, m in enumerate(load.metrics)})
        for k in range(load.folds)
        for epoch in range(load.epochs)
    ]


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _method(
    name: str, every_s: float
) -> tuple[Callable[[dict[str, float], int], object], Callable[[], None]]:
    """(log one epoch's metrics, make everything durable) for a method."""
    import mlflow

    from emoprune.pipeline import tracking

    if name == "buffer":
        buffer = tracking.MetricBuffer(every_s=every_s)
        return buffer.add, buffer.flush
    if name == "sync":
        return (lambda m, step: mlflow.log_metrics(m, step=step)), (lambda: None)
    # No explicit mlflow.flush_async_logging(): end_run drains the queue anyway, and a flush
    # before it would pay the logging thread's 1 s queue poll twice.
    return (lambda m, step: mlflow.log_metrics(m, step=step, synchronous=False)), (lambda: None)


def _template(folder: Path) -> tuple[Path, str]:
    """A freshly migrated store with one experiment; each run gets a copy (migration takes s)."""
    from mlflow.tracking import MlflowClient

    path = folder / "template.db"
    experiment_id = MlflowClient(f"sqlite:///{path.as_posix()}").create_experiment("bench")
    return path, experiment_id


def _verify(uri: str, run_id: str, load: Load, first_ms: int, last_ms: int) -> None:
    """Every point arrived once, at its step, with its value and a call-time timestamp."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    problems = []
    if client.get_run(run_id).info.status != "FINISHED":
        problems.append("run not FINISHED")
    for k in range(load.folds):
        for j, m in enumerate(load.metrics):
            key = f"fold{k}/{m}"
            hist = sorted(client.get_metric_history(run_id, key), key=lambda p: p.step)
            steps = [p.step for p in hist]
            if steps != list(range(load.epochs)):
                problems.append(f"{key}: {len(hist)} points, steps {steps[:3]}..")
                continue
            if any(p.value != _value(k, p.step, j) for p in hist):
                problems.append(f"{key}: wrong values")
            stamps = [p.timestamp for p in hist]
            if stamps != sorted(stamps) or not first_ms - 1 <= stamps[0] <= stamps[-1] <= last_ms:
                problems.append(f"{key}: timestamps not the call times")
    if problems:
        raise RuntimeError(f"{load.name}: metrics lost or altered: {'; '.join(problems[:5])}")


def _trial(
    method: str, load: Load, template: Path, experiment_id: str, db: Path, paced: bool
) -> dict:
    """One run logged with ``method``: blocked, total and drain seconds (verified afterwards).

    ``paced``: each epoch first sleeps ``PACE_S`` (training work that releases the GIL, as torch
    kernels do) and the buffer flushes every ``15 s * PACE_S / load.epoch_s``, so it flushes as
    often per epoch as in the real stage; otherwise the calls come back to back.
    """
    import mlflow

    shutil.copyfile(template, db)
    uri = f"sqlite:///{db.as_posix()}?timeout=60"
    mlflow.set_tracking_uri(uri)
    with _env(BUFFERING_ENV, "1" if method == "async_buffered" else None):
        run_id = mlflow.start_run(experiment_id=experiment_id, log_system_metrics=False).info.run_id
        every_s = 15.0 * PACE_S / load.epoch_s if paced else 15.0
        log, finish = _method(method, every_s)
        payload = _payload(load)
        first_ms = int(time.time() * 1000)
        blocked = 0.0
        t0 = time.perf_counter()
        for step, metrics in payload:
            if paced:
                time.sleep(PACE_S)
            c = time.perf_counter()
            log(metrics, step)
            blocked += time.perf_counter() - c
        last_ms = int(time.time() * 1000) + 1
        t_loop = time.perf_counter()
        finish()
        mlflow.end_run()
        total = time.perf_counter() - t0
    _verify(uri, run_id, load, first_ms, last_ms)
    return {"blocked": blocked, "total": total, "drain": total - (t_loop - t0)}


def _rows(load: Load, results: dict[str, list[dict]], reps: int, paced: bool) -> list[dict]:
    med = {
        m: {f: statistics.median(r[f] for r in runs) for f in ("blocked", "total", "drain")}
        for m, runs in results.items()
    }
    base = med["buffer"]
    if paced:
        every = 15.0 * PACE_S / load.epoch_s
        how = (
            f"paced: {1e3 * PACE_S:g} ms sleep per epoch (the stage's {load.epoch_s:g} s epoch "
            f"scaled down), buffer every_s {every:.3g} s (15 s scaled alike)"
        )
        fields = (
            ("blocked", "time inside the logging calls, the buffer's periodic flushes included"),
            ("drain", "last epoch until every point is stored and the run ended"),
        )
    else:
        how = "back-to-back calls (no training work between them)"
        fields = (
            ("blocked", "time inside the logging calls"),
            ("total", "first call until every point is stored and the run ended"),
        )
    rows = []
    for method in results:
        for field, what in fields:
            value = med[method][field]
            is_base = method == "buffer"
            per_call = f"{1e6 * value / load.calls:.0f} us per call; " if field == "blocked" else ""
            drain = f"flush+end_run {med[method]['drain']:.3f} s; " if field == "total" else ""
            rows.append(
                {
                    "group": GROUP,
                    "name": f"log_{load.name}{'_paced' if paced else ''}_{method}_{field}",
                    "value": round(1e3 * value, 3),
                    "unit": "ms",
                    "baseline": None if is_base else round(1e3 * base[field], 3),
                    "ratio": None if is_base else round(value / base[field], 3),
                    "note": (
                        f"{what}; {load.describe()} = {load.points} points, all verified; "
                        f"{how}; {per_call}{drain}median of {reps}; "
                        + (
                            "baseline itself (tracking.MetricBuffer)"
                            if is_base
                            else f"ratio = {method} / buffer"
                        )
                    ),
                }
            )
    return rows


def run(smoke: bool = False) -> list[dict]:
    """All tracking benchmark rows; ``smoke`` logs a few dozen epochs once per method."""
    import mlflow

    reps = 1 if smoke else 3
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    rows: list[dict] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_tracking_") as tmp:
            folder = Path(tmp)
            template, experiment_id = _template(folder)
            # Paced runs leave out sync: its calls write synchronously however the epochs go.
            for paced, methods in (
                (False, METHODS),
                (True, tuple(m for m in METHODS if m != "sync")),
            ):
                for load in loads(smoke):
                    results: dict[str, list[dict]] = {m: [] for m in methods}
                    for rep in range(reps):
                        order = methods[rep % len(methods) :] + methods[: rep % len(methods)]
                        for method in order:
                            db = folder / f"{load.name}-{paced:d}-{method}-{rep}.db"
                            results[method].append(
                                _trial(method, load, template, experiment_id, db, paced)
                            )
                    rows += _rows(load, results, reps, paced)
    finally:
        if mlflow.active_run() is not None:
            mlflow.end_run(status="FAILED")
        mlflow.set_tracking_uri(previous)
    return rows


if __name__ == "__main__":
    for row in run(smoke="--smoke" in sys.argv[1:]):
        print(row)

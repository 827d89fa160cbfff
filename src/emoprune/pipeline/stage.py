"""The shell every stage script runs in: params, an MLflow run, and clean failure.

A stage script is ``run_stage("name", body, sections=(...))``. A ``UserError`` (bad data, bad
params, unreachable server) prints one line and exits non-zero, without a traceback; Ctrl-C exits
130 with the MLflow run marked KILLED. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import resource
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from emoprune.errors import UserError, interrupt_in
from emoprune.pipeline.params import Params, load_params
from emoprune.pipeline.process import exit_now


def one_blas_thread() -> None:
    """Run numpy's and scipy's BLAS on one thread, unless ``OPENBLAS_NUM_THREADS`` says otherwise.

    The stages' heavy work is torch's, on its own threads; their numpy matrices are small (the
    angle traces of every epoch: 512 x 512). But after each call OpenBLAS keeps a worker thread
    spinning, and on 2 cores it took 13-15% of a core from torch's threads, which wait for each
    other: train_cnn took 168 s with it and 124 s without, with the same metrics.
    """
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # for an OpenBLAS loaded later (scipy's)
    from threadpoolctl import ThreadpoolController

    # For those already loaded (numpy's). OpenBLAS only: never an MKL that torch may share.
    ThreadpoolController().select(internal_api="openblas").limit(limits=1)


def run_stage(name: str, body: Callable[[Params], Any], sections: Sequence[str]) -> None:
    """Run ``body(params)`` inside the stage's MLflow run; exit like a well-behaved CLI."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    one_blas_thread()
    # MLflow and friends warn about things users can't act on; keep stage logs readable.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
    start = time.perf_counter()
    try:
        params = load_params()
        from emoprune.pipeline import tracking

        logged = {s: params.section(s) for s in sections}
        with tracking.stage_run(name, params.mlflow.experiment, logged):
            body(params)
    except UserError as exc:
        print(f"error: [{name}] {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except BaseException as exc:
        if interrupt_in(exc) is None:  # a bug: keep its traceback
            raise
        print(f"[{name}] interrupted; partial outputs were discarded", file=sys.stderr)
        sys.exit(130)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        f"[{name}] done in {time.perf_counter() - start:.1f} s, peak RSS {peak:.0f} MiB",
        file=sys.stderr,
    )
    exit_now(0)

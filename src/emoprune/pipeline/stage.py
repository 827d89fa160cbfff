"""The shell every stage script runs in: params, an MLflow run, and clean failure.

A stage script is ``run_stage("name", body, sections=(...))``. A ``UserError`` (bad data, bad
params, unreachable server) prints one line and exits non-zero, without a traceback; Ctrl-C exits
130 with the MLflow run marked KILLED. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import ctypes
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


# glibc's mallopt parameters (malloc.h) and the values set: a freed block of up to 1 GiB stays in
# the heap for the next allocation, and the heap's top is given back only above 2 GiB.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 1 << 30, (1 << 31) - 1
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for the next allocation; True where it was set.

    By default glibc serves a block above its mmap threshold (128 KiB, rising to 32 MiB at most)
    from a fresh ``mmap`` and unmaps it when freed, and gives the heap's free top back to the
    kernel; so each training step's new activation tensors fault in again, one zeroed 4 KiB page
    at a time. finetune_resnet (bf16, the bundled sample) took 16.1 million page faults and
    199-224 s that way, and 0.45 million and 192-193 s with the thresholds raised. The cost is
    a peak RSS 3-4% higher (gaps between aligned blocks), kept until the process exits. Left
    alone where the user tunes malloc (``GLIBC_TUNABLES`` or ``MALLOC_*_``) and where the C
    library is not glibc.
    """
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "") or any(
        v in os.environ for v in _MALLOC_ENV
    ):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # Both: setting either one ends glibc's sliding thresholds, leaving the other at its 128 KiB
    # default (the trim threshold alone made ResNet18's step fault 10x more).
    return bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)) and bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    )


def run_stage(name: str, body: Callable[[Params], Any], sections: Sequence[str]) -> None:
    """Run ``body(params)`` inside the stage's MLflow run; exit like a well-behaved CLI."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    one_blas_thread()
    reuse_freed_memory()
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

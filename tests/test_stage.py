"""The stage shell's process settings: numpy's BLAS on one thread, beside torch's own, and a
malloc that keeps freed memory for reuse."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, subprocess_env
from emoprune.pipeline.stage import _MALLOC_ENV

PROBE = """
import json, os
import numpy, torch
from threadpoolctl import threadpool_info
from emoprune.pipeline.stage import one_blas_thread

torch.set_num_threads(2)
one_blas_thread()
import scipy.linalg  # an OpenBLAS loaded after the call
print(json.dumps({
    "blas": sorted(i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"),
    "torch": torch.get_num_threads(),
}))
"""


def _run(script: str, *args: str, unset: tuple[str, ...], **env: str) -> dict:
    """``script``'s JSON output, run in a fresh interpreter with the stages' environment, less
    the ``unset`` variables that ``env`` does not give."""
    base = subprocess_env(**env)
    for var in unset:
        if var not in env:
            base.pop(var, None)
    argv = [sys.executable, "-c", script, *args]
    out = subprocess.run(argv, cwd=REPO, env=base, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _probe(**env: str) -> dict:
    return _run(PROBE, unset=("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"), **env)


def test_stages_run_every_openblas_on_one_thread_and_leave_torch_alone():
    # numpy's and scipy's own OpenBLAS copies, limited whether loaded before or after.
    assert _probe(OMP_NUM_THREADS="2") == {"blas": [1, 1], "torch": 2}


def test_a_users_openblas_setting_wins():
    assert _probe(OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2") == {"blas": [2, 2], "torch": 2}


MALLOC_PROBE = """
import json, resource, sys
import torch
from emoprune.pipeline.stage import reuse_freed_memory

applied = reuse_freed_memory() if sys.argv[1] == "call" else None
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
# Blocks above 32 MiB, the ceiling of glibc's sliding mmap threshold, are always fresh mmaps by
# default, whatever the heap's layout; the small ones fault or not depending on where the heap
# lies (a mix of 12, 24 and 6 MiB blocks faulted 35-76% of pages by default, machine to machine).
MIB = (48, 12, 40, 6, 64, 36)

def step():  # a training step's pattern: activations of several sizes alive at once, then freed
    kept = [torch.empty(mib << 20, dtype=torch.uint8).fill_(1) for mib in MIB]
    del kept

for _ in range(5):  # the first touches always fault
    step()
start = faults()
for _ in range(10):
    step()
pages = sum(MIB) * 256
print(json.dumps({"applied": applied, "faulted": (faults() - start) / 10 / pages}))
"""


def _malloc_probe(call: bool, **env: str) -> dict:
    unset = ("GLIBC_TUNABLES", *_MALLOC_ENV)
    return _run(MALLOC_PROBE, "call" if call else "skip", unset=unset, **env)


def test_freed_memory_is_reused_without_page_faults():
    # By default the large blocks' pages (91% of a step's) fault in again every step; then, at
    # most a few percent, where glibc's aligned blocks leave a gap between freed ones.
    assert _malloc_probe(call=False)["faulted"] > 0.85
    probe = _malloc_probe(call=True)
    assert probe["applied"] is True
    assert probe["faulted"] < 0.2


def test_a_users_malloc_tuning_wins():
    probe = _malloc_probe(call=True, GLIBC_TUNABLES="glibc.malloc.arena_max=2")
    assert probe["applied"] is False
    assert probe["faulted"] > 0.85  # untouched: glibc's defaults

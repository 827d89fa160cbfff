"""The stage shell's process settings: numpy's BLAS on one thread, beside torch's own."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, subprocess_env

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


def _probe(**env: str) -> dict:
    base = subprocess_env(**env)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if var not in env:
            base.pop(var, None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=base, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_stages_run_every_openblas_on_one_thread_and_leave_torch_alone():
    # numpy's and scipy's own OpenBLAS copies, limited whether loaded before or after.
    assert _probe(OMP_NUM_THREADS="2") == {"blas": [1, 1], "torch": 2}


def test_a_users_openblas_setting_wins():
    assert _probe(OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2") == {"blas": [2, 2], "torch": 2}

"""`make test`'s wall time: the Makefile's own recipe (two pytest-xdist workers by default).

The target is under 10 minutes on 2 cores. ``smoke`` times one small test file instead, so the
module can be checked in seconds; the full run is part of `make bench` only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from benchmarks.project import REPO, clean_env

SUMMARY = re.compile(r"(\d+) passed")
# The full row runs the recipe itself, so it times whatever `make test` runs today.
MAKE_TEST = ["make", "-s", "test"]


def _timed(command: list[str]) -> tuple[float, str]:
    """Wall seconds and the last output line of ``command`` run from the repo root; must pass."""
    start = time.perf_counter()
    proc = subprocess.run(
        command,
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stdout[-3000:]}")
    return wall, proc.stdout.strip().splitlines()[-1]


def run(smoke: bool = False) -> list[dict]:
    command = (
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_process.py"]
        if smoke
        else MAKE_TEST
    )
    wall, last = _timed(command)
    passed = SUMMARY.search(last)
    return [
        {
            "group": "tests",
            "name": "make_test_smoke" if smoke else "make_test",
            "value": wall,
            "unit": "s",
            "baseline": None,
            "ratio": None,
            "note": f"{'pytest tests/test_process.py' if smoke else 'make test'}: "
            f"{passed.group(1) if passed else '?'} passed, "
            f"{os.cpu_count()} cores, one run",
        }
    ]


if __name__ == "__main__":
    for row in run(smoke="--smoke" in sys.argv[1:]):
        print(row)

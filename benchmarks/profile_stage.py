"""`python -m benchmarks.profile_stage OUT SCRIPT [ARGS...]`: run a stage script under cProfile
and write its stats to OUT.

`python -m cProfile -o OUT` writes OUT only when the script returns, and a stage ends with
``emoprune.pipeline.process.exit_now`` (``os._exit`` after the atexit handlers, to skip the
interpreter's teardown), so it would write nothing. Here the dump is itself an atexit handler:
registered first, it runs last, after MLflow's own handlers, on either way out.
"""

from __future__ import annotations

import atexit
import cProfile
import runpy
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    out, script, *args = argv
    profiler = cProfile.Profile()

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(out)

    atexit.register(dump)
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).resolve().parent))  # what `python SCRIPT` puts first
    profiler.enable()
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])

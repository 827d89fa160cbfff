"""How a stage process ends: exit_now keeps a normal exit's effects and skips the teardown."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import REPO, subprocess_env
from emoprune.errors import interrupt_in

SCRIPT = textwrap.dedent(
    """
    import atexit, sys, threading, time
    from pathlib import Path
    from emoprune.pipeline.process import exit_now

    out = Path(sys.argv[1])
    atexit.register(lambda: (out / "atexit").write_text("ran"))

    def late():
        time.sleep(0.3)
        (out / "thread").write_text("done")

    threading.Thread(target=late).start()  # not a daemon: a normal exit waits for it
    sys.stdout.write("no newline, still buffered")
    exit_now(3)
    (out / "after").write_text("exit_now returned")
    """
)


def test_exit_now_waits_for_threads_runs_exit_handlers_flushes_and_keeps_the_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "no newline, still buffered"
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "after").exists()


def test_an_error_raised_while_unwinding_an_interrupt_counts_as_the_interrupt():
    # Ctrl-C during torch.save: the zip writer's cleanup raises its own error.
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("unexpected pos 299136 vs 299088") from None
    except RuntimeError as exc:
        error = exc
    assert error.__cause__ is None and isinstance(error.__context__, KeyboardInterrupt)
    assert interrupt_in(error) is error.__context__
    assert isinstance(interrupt_in(KeyboardInterrupt()), KeyboardInterrupt)
    assert interrupt_in(RuntimeError("a bug")) is None and interrupt_in(None) is None

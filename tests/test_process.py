"""How a stage process ends: exit_now keeps a normal exit's effects and skips the teardown."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, subprocess_env
from emoprune.errors import interrupt_in
from emoprune.pipeline.process import in_store

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


def _run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    """``script`` run by a fresh interpreter in the project, with ``args`` as its argv."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_exit_now_waits_for_threads_runs_exit_handlers_flushes_and_keeps_the_code(tmp_path):
    proc = _run_script(SCRIPT, str(tmp_path))
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


# A stand-in for a tracking-store call: code whose module name is SQLAlchemy's, busy for a while
# (as a slow sqlite commit is). argv: the signal's name, then process.GIVE_UP_S.
FAKE_STORE = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from emoprune.pipeline import process

    process.GIVE_UP_S = float(sys.argv[2])
    namespace = {"__name__": "sqlalchemy.engine.fake", "time": time}
    exec("def commit(seconds):\\n    end = time.monotonic() + seconds\\n"
         "    while time.monotonic() < end:\\n        pass", namespace)
    commit = namespace["commit"]
    events = []
    """
)

# The interrupt waits for the store call under way, and comes once it has returned.
STORE_SCRIPT = FAKE_STORE + textwrap.dedent(
    """
    with process.interrupts_outside_store():
        try:
            # Arrives while the store is busy, as Ctrl-C would.
            threading.Timer(0.1, os.kill, (os.getpid(), getattr(signal, sys.argv[1]))).start()
            commit(0.5)
            events.append("store returned")
            while True:
                time.sleep(0.01)
        except KeyboardInterrupt:
            events.append("interrupted")
    print(",".join(events))
    """
)


# The store call the interrupt waits for is the block's last: the interrupt comes as the block
# ends, and never after it.
LAST_STORE_SCRIPT = FAKE_STORE + textwrap.dedent(
    """
    try:
        with process.interrupts_outside_store():
            threading.Timer(0.1, os.kill, (os.getpid(), getattr(signal, sys.argv[1]))).start()
            commit(0.5)
        events.append("block ended")
        time.sleep(0.5)
        events.append("ran on")
    except KeyboardInterrupt:
        events.append("interrupted")
    print(",".join(events))
    """
)


def _store_run(sig: str, give_up_s: float, script: str = STORE_SCRIPT) -> str:
    proc = _run_script(script, sig, str(give_up_s))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupt_waits_for_the_store_call_under_way(sig):
    assert _store_run(sig, give_up_s=10) == "store returned,interrupted"


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupt_waiting_for_the_blocks_last_store_call_ends_the_block(sig):
    assert _store_run(sig, give_up_s=10, script=LAST_STORE_SCRIPT) == "interrupted"


def test_a_store_call_that_never_returns_is_interrupted_anyway():
    assert _store_run("SIGINT", give_up_s=0.1) == "interrupted"


def test_store_code_is_found_anywhere_up_the_stack():
    namespace = {"__name__": "mlflow.store.tracking.fake", "sys": sys}
    exec("def query(callback):\n    return callback()", namespace)
    inside = namespace["query"](lambda: in_store(sys._getframe()))
    assert inside
    assert not in_store(sys._getframe())
    assert not in_store(None)


# Ctrl-C landing in a weakref callback (as in the one a thread pool drops when MLflow logs a
# model): Python ignores any exception raised there, so the interrupt must come again after it.
CALLBACK_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time, weakref
    from emoprune.pipeline import process

    class Pool:
        pass

    def dropped(_):
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        end = time.monotonic() + 0.5
        while time.monotonic() < end:  # the handler runs in here
            pass

    events = []
    with process.interrupts_outside_store():
        try:
            pool = Pool()
            ref = weakref.ref(pool, dropped)
            del pool
            end = time.monotonic() + 5
            while time.monotonic() < end:
                time.sleep(0.01)
            events.append("ran on")
        except KeyboardInterrupt:
            events.append("interrupted")
    print(",".join(events))
    """
)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupt_swallowed_by_a_weakref_callback_is_delivered_after_it(sig):
    proc = _run_script(CALLBACK_SCRIPT, sig)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "interrupted"
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr

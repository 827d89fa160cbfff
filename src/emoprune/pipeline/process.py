"""How a stage process ends: once its work is done, or on Ctrl-C / SIGTERM."""

from __future__ import annotations

import _thread
import atexit
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

# Code that holds a tracking-store transaction open. A KeyboardInterrupt raised inside it leaves
# the sqlite connection holding its write lock (the run then cannot be marked KILLED: "database
# is locked"), makes SQLAlchemy log a traceback for the cursor it could not close, and can cut a
# schema migration in half.
STORE_MODULES = ("sqlalchemy", "sqlite3", "alembic", "mlflow.store")
RECHECK_S = 0.02
GIVE_UP_S = 10.0  # a store stuck this long is not worth waiting for: interrupt it anyway


def exit_now(code: int) -> None:
    """End the stage process: exit handlers run and the streams are flushed, but the interpreter's
    teardown of torch, MLflow and sklearn (1-1.5 s per stage, for nothing) is skipped.

    Call it only once every output is written and closed and the MLflow run has ended.
    """
    # What a normal exit does before tearing down: wait for non-daemon threads (and stop
    # concurrent.futures pools), then run the atexit handlers (MLflow's, logging's, tempfile's).
    shutdown_threads = getattr(threading, "_shutdown", None)
    if shutdown_threads is not None:
        shutdown_threads()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to say
            pass
    os._exit(code)


def in_store(frame: FrameType | None) -> bool:
    """Whether ``frame`` or any frame that called it runs code of ``STORE_MODULES``."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(STORE_MODULES):
            return True
        frame = frame.f_back
    return False


def deliver_again(signum: int) -> None:
    """Signal ``signum`` to the main thread again in ``RECHECK_S``, as if it had just arrived."""
    timer = threading.Timer(RECHECK_S, _thread.interrupt_main, args=(signum,))
    timer.daemon = True
    timer.start()


@contextmanager
def interrupts_outside_store(
    signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[None]:
    """Within the block, ``signals`` raise KeyboardInterrupt as Ctrl-C does, but never inside
    tracking-store code: there the interrupt waits, re-checked every ``RECHECK_S``, until the
    store call returns (or ``GIVE_UP_S`` has passed).

    Nor is one lost: Python ignores an exception raised in a weakref callback or a ``__del__``
    (it prints "Exception ignored in ..." and goes on), and a signal can land there, for example
    in the callback of a thread pool that MLflow's model logging drops. The stage then ran to its
    end as if never interrupted. Such an interrupt is delivered again once the callback is over.
    """
    first_seen: list[float] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if not first_seen:
            first_seen.append(time.monotonic())
        if in_store(frame) and time.monotonic() - first_seen[0] < GIVE_UP_S:
            deliver_again(signum)  # once the store has had a moment
            return
        first_seen.clear()
        interrupt = KeyboardInterrupt(f"signal {signum}")
        interrupt.signum = signum  # type: ignore[attr-defined]
        raise interrupt

    unraisable = sys.unraisablehook

    def redeliver(info: Any) -> None:
        signum = getattr(info.exc_value, "signum", None)
        if isinstance(info.exc_value, KeyboardInterrupt) and signum is not None:
            deliver_again(signum)  # from a thread: here it would raise inside this hook
            return
        unraisable(info)

    previous = {s: signal.signal(s, handler) for s in signals}
    sys.unraisablehook = redeliver
    try:
        yield
    finally:
        sys.unraisablehook = unraisable
        for s, old in previous.items():
            signal.signal(s, old)

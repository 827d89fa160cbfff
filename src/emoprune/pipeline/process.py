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


def interrupt(signum: int) -> KeyboardInterrupt:
    """The KeyboardInterrupt for ``signum``, marked as raised by ``interrupts_outside_store``."""
    exc = KeyboardInterrupt(f"signal {signum}")
    exc.signum = signum  # type: ignore[attr-defined]
    return exc


class Redelivery:
    """Signals to deliver to the main thread again, each ``RECHECK_S`` after it was deferred,
    as if it had just arrived; none once closed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: list[int] = []
        self.closed = False

    def later(self, signum: int) -> None:
        with self.lock:
            self.waiting.append(signum)
        timer = threading.Timer(RECHECK_S, self._deliver, args=(signum,))
        timer.daemon = True
        timer.start()

    def _deliver(self, signum: int) -> None:
        with self.lock:
            if not self.closed:
                self.waiting.remove(signum)
                _thread.interrupt_main(signum)

    def close(self) -> int | None:
        """Deliver nothing more; the signal that was still waiting, if any."""
        with self.lock:
            self.closed = True
            return self.waiting[0] if self.waiting else None


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
    One still waiting when the block ends (the store call it waited for was the block's last)
    is raised there, rather than later by the handler the block restores.
    """
    first_seen: list[float] = []
    redelivery = Redelivery()

    def handler(signum: int, frame: FrameType | None) -> None:
        if not first_seen:
            first_seen.append(time.monotonic())
        if in_store(frame) and time.monotonic() - first_seen[0] < GIVE_UP_S:
            redelivery.later(signum)  # once the store has had a moment
            return
        first_seen.clear()
        raise interrupt(signum)

    unraisable = sys.unraisablehook

    def redeliver(info: Any) -> None:
        signum = getattr(info.exc_value, "signum", None)
        if isinstance(info.exc_value, KeyboardInterrupt) and signum is not None:
            redelivery.later(signum)  # from a thread: here it would raise inside this hook
            return
        unraisable(info)

    previous = {s: signal.signal(s, handler) for s in signals}
    sys.unraisablehook = redeliver
    try:
        yield
    finally:
        waiting = redelivery.close()
        sys.unraisablehook = unraisable
        for s, old in previous.items():
            signal.signal(s, old)
        if waiting is not None and sys.exc_info()[1] is None:
            raise interrupt(waiting)

"""How a long-running command hears "stop": SIGINT and SIGTERM, however they arrive.

A supervisor may signal the process alone (``kill``, ``timeout -s TERM``, ``docker stop`` of PID 1)
or its whole process group (Ctrl-C in a terminal, systemd's ``KillMode=control-group``). Either
way the first signal only *requests* a stop: the command finishes what is in flight and exits 0.
A second signal asks for a fast stop (``on_fast``), for an operator who does not want to wait.

The handlers only set flags, so a signal never lands as an exception in the middle of a Py4J
call, a DuckDB transaction or an HTTP response. The harness commands (``faults``, ``bench``) are
the exception (:func:`sigterm_unwinds`): what they start, they stop on the way out of a ``with``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from types import FrameType
from typing import Any, NoReturn

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """First SIGINT/SIGTERM sets :attr:`requested`; a second one calls ``on_fast`` (if given).

    ``install()`` must run on the main thread (Python delivers signals there); calling it again
    re-installs the handlers after a library replaced them (PySpark does, for SIGINT).
    """

    def __init__(self, what: str, on_fast: Callable[[], None] | None = None) -> None:
        self.what = what
        self.on_fast = on_fast
        self.requested = threading.Event()
        self.received: str | None = None
        self._at: float | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may install handlers; the caller stops us instead
        for sig in STOP_SIGNALS:
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def request(self, reason: str = "asked") -> None:
        """Request a stop from code (a timeout, a test) exactly as a signal would."""
        if not self.requested.is_set():
            self.received = reason
            self._at = time.monotonic()
            self.requested.set()

    def elapsed(self) -> float:
        """Seconds since the stop was requested (0 if it was not)."""
        return time.monotonic() - self._at if self._at is not None else 0.0

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self.requested.is_set():
            self.request(name)
            hint = "; send it again to stop at once" if self.on_fast else ""
            log.info("%s received: stopping %s%s", name, self.what, hint)
        elif self.on_fast is not None:
            log.warning("%s received again: stopping %s now", name, self.what)
            self.on_fast()

    def __enter__(self) -> StopSignals:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()


def sigterm_unwinds() -> None:
    """SIGTERM unwinds the main thread as Ctrl-C does (``KeyboardInterrupt``), unless a handler is set.

    For the harness commands: their brokers, stream jobs and JVMs run in sessions of their own (so
    a fault can kill one alone) and are stopped by the ``with`` blocks that started them. Python's
    default for SIGTERM ends the process without running those blocks, so ``timeout`` or a CI
    runner stopping ``sensorstream faults`` left a broker and a stream job running, holding their
    ports and a core.
    """
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    ):
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    log.warning("%s received: stopping what this command started", signal.Signals(signum).name)
    raise KeyboardInterrupt


def exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's teardown, once everything is stopped explicitly.

    Tearing down the modules of a Spark driver (pyarrow, pandas, DuckDB, Py4J objects) took about
    a second of a stop's budget on a busy 2-core machine, and frees nothing the OS does not free.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(code)

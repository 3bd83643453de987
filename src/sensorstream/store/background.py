"""A periodic job on a daemon thread that stops promptly (retention, snapshots)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Periodic:
    """Runs ``job()`` every ``interval`` seconds until :meth:`stop`; an error is logged, not fatal.

    The wait is an ``Event.wait`` so ``stop()`` returns within one job, not one interval.
    """

    def __init__(
        self, name: str, interval: float, job: Callable[[], Any], *, run_first: bool = False
    ) -> None:
        self.name = name
        self.interval = interval
        self.job = job
        self.run_first = run_first
        self.runs = 0
        self.errors = 0
        self.last_result: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s did not stop within %.0f s", self.name, timeout)
            self._thread = None

    def _loop(self) -> None:
        if not self.run_first and self._stop.wait(self.interval):
            return
        while not self._stop.is_set():
            try:
                self.last_result = self.job()
                self.runs += 1
            except Exception:
                # The pipeline must keep running when housekeeping fails; the log says why.
                self.errors += 1
                log.exception("%s failed; retrying in %.0f s", self.name, self.interval)
            if self._stop.wait(self.interval):
                return

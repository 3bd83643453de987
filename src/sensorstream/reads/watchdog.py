"""A read's memory and time watched while it runs, and the writer's own memory it is not charged for."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import duckdb

POLL_S = 0.05


def rss() -> int | None:
    """This process's resident memory in bytes (Linux), or None where /proc is not there."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class Watchdog:
    """Interrupts ``cur`` past ``timeout``, when the process grew by more than ``memory`` bytes
    above ``floor`` (or above its size when the read began, if that is more), or on :meth:`cancel`."""

    def __init__(
        self, cur: duckdb.DuckDBPyConnection, timeout: float, memory: int, floor: int | None = None
    ) -> None:
        self.cur, self.timeout, self.memory, self.floor = cur, timeout, memory, floor
        self.reason: Literal["timeout", "memory", "cancel"] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="read-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def cancel(self) -> None:
        """Interrupt the read now (a PostgreSQL CancelRequest), as its time limit would."""
        self.reason = "cancel"
        self.cur.interrupt()

    def _watch(self) -> None:
        deadline = time.monotonic() + self.timeout
        base = max((b for b in (rss(), self.floor) if b is not None), default=None)
        while not self._done.wait(
            POLL_S if self.reason else min(POLL_S, max(0.0, deadline - time.monotonic()))
        ):
            if self.reason is None and time.monotonic() >= deadline:
                self.reason = "timeout"
            elif (
                self.reason is None
                and base is not None
                and (now := rss()) is not None
                and now - base > self.memory
            ):
                self.reason = "memory"
            if self.reason:
                # Again at every poll until the read ends: an interrupt that came before DuckDB
                # started the query is forgotten when it starts.
                self.cur.interrupt()


class WriterMark:
    """The process's highest resident memory over the last ``window`` seconds, sampled only while
    no ad-hoc read runs: the size the writer itself reaches, which a read is not charged for.

    The read watchdog charges a read for the process's growth while it runs, and reads share the
    process with the writer. At 50 K events/s a batch grows the process by up to ~250 MB (the
    Arrow batch from Spark, the parse, the merge) and frees it after the commit; an ad-hoc read
    runs on idle CPU time, so on a busy machine even ``count(*)`` can last through a batch, and
    was interrupted for "more than 256 MB" it never used. With this mark as the floor, a read is
    charged only for growth past what the writer recently reached on its own. Samples are taken
    only between reads, so what a read grows while it runs never raises the floor of the next one
    (what it leaves resident counts, as it did before, from the next read's start).
    """

    def __init__(self, window: float = 60.0, every: float = POLL_S) -> None:
        self.window, self.every = window, every
        self._marks: deque[tuple[float, int]] = deque()  # (time, rss), rss falling: a sliding max
        self._reads = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="read-writer-mark", daemon=True)

    _shared: WriterMark | None = None
    _shared_pid = 0
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls) -> WriterMark:
        """The process's one mark (the memory it watches is the process's), started on first use;
        a forked child starts its own."""
        with cls._shared_lock:
            if cls._shared is None or cls._shared_pid != os.getpid():
                cls._shared, cls._shared_pid = cls().start(), os.getpid()
            return cls._shared

    def start(self) -> WriterMark:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @contextmanager
    def reading(self) -> Iterator[int | None]:
        """Count one read as running for the block; yields the floor to charge it from."""
        with self._lock:
            self._reads += 1
            floor = self._marks[0][1] if self._marks else None
        try:
            yield floor
        finally:
            with self._lock:
                self._reads -= 1

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            size, now = rss(), time.monotonic()
            with self._lock:
                while self._marks and self._marks[0][0] < now - self.window:
                    self._marks.popleft()
                if size is None or self._reads:
                    continue
                while self._marks and self._marks[-1][1] <= size:
                    self._marks.pop()
                self._marks.append((now, size))

"""A read's memory and time watched while it runs, and the writer's own memory it is not charged for."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, Self

import duckdb

from sensorstream.reads.priority import lower_priority

POLL_S = 0.05


def rss() -> int | None:
    """This process's resident memory in bytes (Linux), or None where /proc is not there."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _OnePerProcess:
    """A background thread the process has one of (the memory it watches and the reads it serves
    are the process's), started on first use; a forked child starts its own."""

    _thread: threading.Thread
    _shared: Self | None = None
    _shared_pid = 0
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls) -> Self:
        one = cls._shared
        if one is not None and cls._shared_pid == os.getpid():
            return one
        with cls._shared_lock:
            if cls._shared is None or cls._shared_pid != os.getpid():
                cls._shared, cls._shared_pid = cls().start(), os.getpid()
            return cls._shared

    def start(self) -> Self:
        self._thread.start()
        return self


class Watchdog:
    """Interrupts ``cur`` past ``timeout``, when the process grew by more than ``memory`` bytes
    above ``floor`` (or above its size when the read began, if that is more), or on :meth:`cancel`.
    ``memory=None`` watches the time alone.

    All watchdogs of the process share one thread (:class:`_Watcher`): a thread started and joined
    per read cost the writer's process about 0.3 ms of CPU and two GIL hand-offs for every read.
    """

    def __init__(
        self, cur: duckdb.DuckDBPyConnection, timeout: float, memory: int | None, floor: int | None = None
    ) -> None:
        self.cur, self.timeout, self.memory, self.floor = cur, timeout, memory, floor
        self.reason: Literal["timeout", "memory", "cancel"] | None = None
        self.deadline = 0.0
        self.base: int | None = None

    def __enter__(self) -> Watchdog:
        self.deadline = time.monotonic() + self.timeout
        if self.memory is not None:
            self.base = max((b for b in (rss(), self.floor) if b is not None), default=None)
        _Watcher.shared().watch(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _Watcher.shared().forget(self)

    def cancel(self) -> None:
        """Interrupt the read now (a PostgreSQL CancelRequest), as its time limit would; nothing
        once the read has ended (its cursor may be running the next read already)."""
        _Watcher.shared().cancel(self)

    def check(self, now: float, size: int | None) -> None:
        """One look at the read (``size``: the process's memory now, if measured)."""
        if self.reason is None and now >= self.deadline:
            self.reason = "timeout"
        elif (
            self.reason is None
            and self.memory is not None
            and self.base is not None
            and size is not None
            and size - self.base > self.memory
        ):
            self.reason = "memory"
        if self.reason:
            # Again at every look until the read ends: an interrupt that came before DuckDB
            # started the query is forgotten when it starts.
            self.cur.interrupt()


class _Watcher(_OnePerProcess):
    """The process's one watchdog thread: every ``POLL_S`` (sooner for an earlier deadline) it
    reads the process's memory once and looks at every running read.

    It keeps ticking for ``LINGER_S`` after the last read ended, so reads that come one after
    another (a client's queries, ~70 a second under load) join it without waking it; only the
    first read after a quiet spell, or one whose deadline comes before the next tick, wakes it.
    It runs at the readers' lowered priority (``READ_NICE``; :func:`start_watchers` starts it from
    a thread that is not idle, whose policy it inherits): low, as the readers are, but not idle, so
    the named queries' time limits (their threads are not idle either) hold on a busy machine too.
    A tick holds the GIL for some microseconds.
    """

    LINGER_S = 2.0

    def __init__(self) -> None:
        self._dogs: set[Watchdog] = set()
        self._cond = threading.Condition()
        self._wake_at: float | None = None  # None: asleep until a read comes
        self._thread = threading.Thread(target=self._run, name="read-watchdog", daemon=True)

    def watch(self, dog: Watchdog) -> None:
        with self._cond:
            self._dogs.add(dog)
            if self._wake_at is None or dog.deadline < self._wake_at:
                self._cond.notify()

    def forget(self, dog: Watchdog) -> None:
        with self._cond:
            self._dogs.discard(dog)

    def _run(self) -> None:
        lower_priority()
        quiet_since = time.monotonic()
        while True:
            with self._cond:
                now = time.monotonic()
                if self._dogs:
                    quiet_since = now
                elif now - quiet_since >= self.LINGER_S:
                    self._wake_at = None
                    self._cond.wait_for(lambda: bool(self._dogs))
                    quiet_since = now = time.monotonic()
                due = min((d.deadline for d in self._dogs if d.reason is None), default=now + POLL_S)
                self._wake_at = min(now + POLL_S, due)
                self._cond.wait(max(0.0, self._wake_at - now))
                # Under the lock: once forget() returned, the dog's cursor is never interrupted
                # again, so the next read on that cursor (a reader thread keeps its own) is safe.
                if self._dogs:
                    watched = any(d.memory is not None and d.reason is None for d in self._dogs)
                    size, now = rss() if watched else None, time.monotonic()
                    for dog in self._dogs:
                        dog.check(now, size)

    def cancel(self, dog: Watchdog) -> None:
        with self._cond:
            if dog in self._dogs:
                dog.reason = "cancel"
                dog.cur.interrupt()


class WriterMark(_OnePerProcess):
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
        lower_priority()
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


def start_watchers() -> None:
    """Start the process's watchdog and memory-mark threads now, on the calling thread's policy.

    A thread inherits its creator's scheduling policy, and ``lower_priority`` (nice) cannot lift a
    ``SCHED_IDLE`` thread out of it. Started by the first read, on a reader thread at
    ``SCHED_IDLE``, both were idle: each tick (20 a second) takes the GIL, and an idle thread that
    loses its core while it holds it keeps the writer's threads waiting until a core is free.
    The read gate calls this where it is created (the writer's own thread), so they run at nice 10.
    """
    _Watcher.shared()
    WriterMark.shared()

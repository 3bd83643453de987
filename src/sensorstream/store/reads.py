"""The one read path into the store: guard, limits and engine lock-down for every outside reader.

The HTTP read API (``store.api``), ``sensorstream sql``/``query`` without a running writer
(``store.client``) and any other endpoint (a PostgreSQL-wire server) call the same object, so
what is refused, how long a read may run and how much it may return are decided here once::

    gate = ReadGate(con, settings)            # locks con's DuckDB instance down (store.lockdown)
    result = gate.run("SELECT … WHERE x = ?", [1], max_rows=100)   # admits, checks, runs
    result.columns, result.types, result.rows, result.truncated    # rows: DuckDB's Python values
    result.to_json()                          # the API's JSON shape (ISO times, seconds, …)
    gate.run_named("latest_windows", {"limit": 10})                # the named queries' own lane

Create **one gate per store connection** and share it between endpoints: its concurrency limit
is for the whole process. The HTTP API's own process (``store.front``) guards the text there and
sends only checked statements here (:meth:`ReadGate.run_checked`, over ``store.backend``), so
both endpoints still share this gate's slots and limits. Every refusal or failure is a :class:`~sensorstream.store.errors.QueryError`
subclass with a one-sentence message, ``sqlstate`` and ``http_status``:

========================  ========  ====  ============================================
error                     sqlstate  HTTP  when
========================  ========  ====  ============================================
``SqlSyntaxError``        42601     400   the text does not parse
``SqlRefused``            42501     400   not one read-only SELECT over the store
``InvalidParameter``      22023     400   bad parameters
``QueryTimeout``          57014     400   ran past ``timeout`` and was interrupted
``TooLarge``              54000     413   text, columns, answer bytes or memory over a limit
``ReadBusy``              53300     429   all slots of the lane are taken (``retry_after``)
``QueryError``            42000…    400   DuckDB refused it (unknown column, bad cast…)
========================  ========  ====  ============================================

Costs are bounded before and while a read runs: the text's size and each SELECT's column count
before DuckDB binds it (its binder does not check for interrupts); a wall-clock limit enforced by
interrupting the cursor; the answer's bytes counted chunk by chunk as it is fetched (DuckDB
streams the result, so nothing beyond one chunk is built past the cap); the process's resident
memory watched while the read runs, the read interrupted when it grew by more than the read share
(DuckDB's own ``memory_limit`` covers only its buffer manager); and a small number of reads at a
time per lane, so ``/health`` and the dashboard's named queries keep answering.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import pyarrow as pa

from sensorstream.config import Settings
from sensorstream.store import execute, sqlguard
from sensorstream.store.errors import (
    InvalidParameter,
    QueryError,
    QueryTimeout,
    ReadBusy,
    SqlRefused,
    SqlSyntaxError,
    TooLarge,
    first_line,
)
from sensorstream.store.execute import Result, jsonable, read_cursor
from sensorstream.store.lockdown import lock_down

log = logging.getLogger(__name__)

Lane = Literal["sql", "named"]
Params = Sequence[Any] | Mapping[str, Any] | None
_FETCH_ROWS = 256  # at most this many rows per fetched chunk
_CHUNK_BYTES = 256 * 1024  # about this many bytes per fetched chunk
_POLL_S = 0.05
_ARROW_ROWS = 1024  # rows per Arrow batch: the byte cap is checked after each
# DuckDB types whose Arrow value reads back in Python as DuckDB's own value would (as JSON):
# scalars and lists of them. Others (INTERVAL, MAP, HUGEINT, ENUM, STRUCT...) take the Python path.
_ARROW_SAFE = re.compile(
    r"^(BOOLEAN|(U?(TINYINT|SMALLINT|INTEGER|BIGINT))|FLOAT|DOUBLE|DECIMAL\(\d+,\d+\)|VARCHAR|DATE|TIME"
    r'|TIMESTAMP|TIMESTAMP WITH TIME ZONE|UUID|JSON|BLOB|"NULL")(\[\d*\])*$'
)


@dataclass(frozen=True)
class ReadLimits:
    """What one read may cost. Defaults are the settings' defaults (``SENSORSTREAM_READ_*``)."""

    timeout: float = 10.0  # seconds of wall clock per read
    max_rows: int = 10_000  # rows in an answer; more are cut off with truncated=True
    max_bytes: int = 16 * 2**20  # bytes in an answer (about its JSON size); more is TooLarge
    max_sql_bytes: int = 16_384  # bytes of SQL text
    max_columns: int = 200  # output columns of any one SELECT
    max_concurrent: int = 2  # ad-hoc SQL reads at once; the named queries get their own lane
    max_concurrent_named: int = 8
    memory: int = 256 * 2**20  # how much the process may grow while one read runs
    retry_after: float = 1.0  # seconds a busy client is asked to wait

    def caps(
        self, max_rows: int | None = None, max_bytes: int | None = None, timeout: float | None = None
    ) -> tuple[int, int, float]:
        """Rows, bytes and seconds for one read: a caller's may only tighten these limits."""
        return (
            min(max_rows if max_rows is not None else self.max_rows, self.max_rows),
            min(max_bytes or self.max_bytes, self.max_bytes),
            min(timeout or self.timeout, self.timeout),
        )

    def check(self, cur: duckdb.DuckDBPyConnection, sql: str) -> str:
        """The guard with these limits (``sqlguard.check``): the statement's text to run."""
        return sqlguard.check(cur, sql, max_sql_bytes=self.max_sql_bytes, max_columns=self.max_columns)

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadLimits:
        return cls(
            timeout=settings.read_timeout,
            max_rows=settings.read_max_rows,
            max_bytes=int(settings.read_max_bytes),
            max_sql_bytes=int(settings.read_max_sql_bytes),
            max_columns=settings.read_max_columns,
            max_concurrent=settings.read_max_concurrent,
            max_concurrent_named=max(8, 4 * settings.read_max_concurrent),
            memory=int(settings.read_memory_limit),
        )


class ReadResult(Result):
    """A :class:`~sensorstream.store.catalog.Result` whose rows hold DuckDB's Python values."""

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "types": self.types,
            "rows": [[jsonable(v) for v in row] for row in self.rows],
            "truncated": self.truncated,
        }


READ_NICE = 10  # how much lower the readers' CPU priority is than the writer's (Linux nice steps)


def lower_priority() -> None:
    """Lower this thread's CPU priority (Linux: nice is per thread), so a busy core serves the writer.

    Only on Linux, where a thread id is a valid ``setpriority`` target; it cannot be raised again
    without privileges, which is why the readers have threads of their own.
    """
    if sys.platform == "linux":
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), READ_NICE)
        except OSError as exc:
            log.debug("could not lower the read thread's priority: %s", exc)


def idle_priority() -> None:
    """Run this thread only on CPU time nobody else wants (Linux ``SCHED_IDLE``; else nice 19).

    For ad-hoc SQL, which anyone on the machine can send as fast as they like: measured with the
    readers at nice 10, a hostile reader's requests still took a third of a core each in the API's
    process and in these threads, and on two cores the stream's batches took 1.7x as long. An idle
    thread gets a core only when no normal thread wants it, so the writer keeps its pace and the
    reader answers as fast as the machine's spare time allows. Named queries (the dashboard) stay
    on threads at ``READ_NICE``: they still answer while a backlog keeps the cores busy.
    """
    if sys.platform != "linux":
        return
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError) as exc:
        log.debug("no SCHED_IDLE for the read thread (%s); nice 19 instead", exc)
        with suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _rss() -> int | None:
    """This process's resident memory in bytes (Linux), or None where /proc is not there."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _size(value: Any) -> int:
    """About how many bytes ``value`` takes in the answer (its JSON text)."""
    if value is None or isinstance(value, bool | int | float):
        return 8
    if isinstance(value, str | bytes | bytearray):
        return len(value) + 2
    if isinstance(value, list | tuple):
        return 2 + sum(_size(v) + 1 for v in value)
    if isinstance(value, dict):
        return 2 + sum(_size(k) + _size(v) + 2 for k, v in value.items())
    return 32  # times, decimals, UUIDs: short fixed-size text


class _Watchdog:
    """Interrupts ``cur`` past ``timeout`` or when the process grew by more than ``memory`` bytes
    above ``floor`` (or above its size when the read began, if that is more)."""

    def __init__(
        self, cur: duckdb.DuckDBPyConnection, timeout: float, memory: int, floor: int | None = None
    ) -> None:
        self.cur, self.timeout, self.memory, self.floor = cur, timeout, memory, floor
        self.reason: Literal["timeout", "memory"] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="read-watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        deadline = time.monotonic() + self.timeout
        base = max((b for b in (_rss(), self.floor) if b is not None), default=None)
        while not self._done.wait(min(_POLL_S, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                self.reason = "timeout"
            elif base is not None and (now := _rss()) is not None and now - base > self.memory:
                self.reason = "memory"
            if self.reason:
                self.cur.interrupt()
                return


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

    def __init__(self, window: float = 60.0, every: float = _POLL_S) -> None:
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
            rss, now = _rss(), time.monotonic()
            with self._lock:
                while self._marks and self._marks[0][0] < now - self.window:
                    self._marks.popleft()
                if rss is None or self._reads:
                    continue
                while self._marks and self._marks[-1][1] <= rss:
                    self._marks.pop()
                self._marks.append((now, rss))


def _too_large(bytes_cap: int) -> TooLarge:
    return TooLarge(
        f"the answer is larger than {bytes_cap:,} bytes (the limit); select fewer rows or columns, "
        "or aggregate"
    )


@dataclass
class ArrowResult:
    """An answer as Arrow: what ``run_checked`` gives the read API's process."""

    columns: list[str]
    types: list[str]  # DuckDB's type names: Arrow's lose some (JSON, ENUM, UUID)
    table: pa.Table
    truncated: bool = False


# DuckDB's exception classes -> the SQLSTATE a PostgreSQL client expects for them.
_SQLSTATES: dict[type[duckdb.Error], str] = {
    duckdb.CatalogException: "42P01",
    duckdb.BinderException: "42703",
    duckdb.ConversionException: "22P02",
    duckdb.OutOfRangeException: "22003",
    duckdb.InvalidInputException: "22023",
    duckdb.PermissionException: "42501",
    duckdb.NotImplementedException: "0A000",
}


def _as_query_error(exc: duckdb.Error) -> QueryError:
    """DuckDB's error as one sentence (its first line: the rest is a caret diagram or hints)."""
    if isinstance(exc, duckdb.ParserException):
        return SqlSyntaxError(f"the SQL does not parse: {first_line(exc)}")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return TooLarge("the query needs more memory than the store gives a read; aggregate or filter more")
    if isinstance(exc, duckdb.PermissionException):
        return SqlRefused(f"the store refused to reach outside itself: {first_line(exc)}")
    error = QueryError(f"the store could not run this query: {first_line(exc)}")
    error.sqlstate = next((s for k, s in _SQLSTATES.items() if isinstance(exc, k)), QueryError.sqlstate)
    return error


def check_params(params: Any) -> Params:
    if params is None:
        return None
    if isinstance(params, str | bytes) or not isinstance(params, Sequence | Mapping):
        raise InvalidParameter("params must be a list (for ? or $1) or an object (for $name)")
    return params


class ReadGate:
    """Guarded, bounded reads over one store connection (see the module doc)."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        settings: Settings | None = None,
        *,
        limits: ReadLimits | None = None,
    ) -> None:
        self.con = con
        self.limits = limits or (ReadLimits.from_settings(settings) if settings else ReadLimits())
        limit = settings.db_memory_limit if settings else None
        lock_down(con, memory_limit=f"{int(limit)}B" if limit else None)
        # Ad-hoc reads run on these threads, on CPU time the writer does not want (see idle_priority).
        self._readers = ThreadPoolExecutor(
            self.limits.max_concurrent, thread_name_prefix="store-read", initializer=idle_priority
        )
        self._slots = {
            "sql": threading.BoundedSemaphore(self.limits.max_concurrent),
            "named": threading.BoundedSemaphore(self.limits.max_concurrent_named),
        }

    def close(self) -> None:
        """Let the reader threads go (reads in flight finish first). The connection stays open."""
        self._readers.shutdown(wait=True)

    def __enter__(self) -> ReadGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- admission -----------------------------------------------------------------------------
    @contextmanager
    def admit(self, lane: Lane = "sql") -> Iterator[None]:
        """Hold one of ``lane``'s slots, or raise :class:`ReadBusy` at once when all are taken."""
        slots = self._slots[lane]
        if not slots.acquire(blocking=False):
            raise ReadBusy(
                f"the store is busy with other reads; retry in {self.limits.retry_after:g} s",
                retry_after=self.limits.retry_after,
            )
        try:
            yield
        finally:
            slots.release()

    # --- ad-hoc SQL ----------------------------------------------------------------------------
    def check(self, sql: str) -> str:
        """The guard alone: the statement's text to run, or a :class:`SqlRefused`/:class:`TooLarge`."""
        cur = read_cursor(self.con)
        try:
            return self.limits.check(cur, sql)
        finally:
            cur.close()

    def run(
        self,
        sql: str,
        params: Params = None,
        *,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        timeout: float | None = None,
        admit: bool = True,
    ) -> ReadResult:
        """Admit (``sql`` lane), check and run one read-only SELECT with parameters bound by DuckDB.

        ``max_rows``/``max_bytes``/``timeout`` may only tighten the gate's limits, never widen them.
        ``admit=False`` is for a caller that already holds :meth:`admit`.
        """
        caps = self.limits.caps(max_rows, max_bytes, timeout)
        params = check_params(params)
        # The guard before admission: a refusal is cheap (the text is capped) and should say why,
        # not "busy".
        text = self.check(sql)
        if not admit:
            return self._readers.submit(self._run_sql, text, params, *caps).result()
        with self.admit("sql"):
            return self._readers.submit(self._run_sql, text, params, *caps).result()

    def run_checked(
        self, text: str, params: Params, *, max_rows: int, max_bytes: int, timeout: float
    ) -> ArrowResult | ReadResult:
        """Admit and run ``text`` that the guard in the read API's process already checked.

        For ``store.backend``: the guard's parsing, the JSON and the HTTP stay in that process,
        and this one only runs the query. The answer is Arrow, which DuckDB fills without the GIL,
        so the writer's threads barely notice the reads; only an answer with a column type whose
        Arrow form differs from DuckDB's own Python value (INTERVAL, MAP, HUGEINT...) is built
        as Python rows here, as :meth:`run` does.
        """
        caps = self.limits.caps(max_rows, max_bytes, timeout)
        params = check_params(params)
        with self.admit("sql"):
            return self._readers.submit(self._run_sql, text, params, *caps, self._fetch_arrow).result()

    def _run_sql(
        self,
        text: str,
        params: Params,
        rows_cap: int,
        bytes_cap: int,
        seconds: float,
        fetch: Callable[..., Any] | None = None,
    ) -> Any:
        """Run ``text`` (already checked) on a reader thread; ``fetch`` builds the answer."""
        limits = self.limits
        cur = read_cursor(self.con)
        try:
            # The read's sorts and hash tables spill past this instead of taking the writer's share.
            cur.execute(f"SET operator_memory_limit = '{limits.memory}B'")
            with WriterMark.shared().reading() as floor, _Watchdog(cur, seconds, limits.memory, floor) as dog:
                try:
                    return (fetch or self._fetch)(cur, text, params, rows_cap, bytes_cap)
                except duckdb.Error as exc:
                    if dog.reason == "timeout":
                        raise QueryTimeout(
                            f"the query was interrupted after {seconds:g} s (the limit for one read)"
                        ) from None
                    if dog.reason == "memory":
                        raise TooLarge(
                            f"the query was interrupted: it needed more than {limits.memory // 2**20} MB "
                            "of memory (the limit for one read)"
                        ) from None
                    raise _as_query_error(exc) from None
        finally:
            cur.close()

    @staticmethod
    def _fetch(
        cur: duckdb.DuckDBPyConnection, text: str, params: Params, rows_cap: int, bytes_cap: int
    ) -> ReadResult:
        # No wrapping "SELECT * FROM (…) LIMIT n": that made binding quadratic in the column count.
        # The result streams, so stopping the fetch stops the work.
        cur.execute(text, params)
        description = cur.description or []
        rows: list[tuple[Any, ...]] = []
        size, step = 0, 16
        while len(rows) <= rows_cap:
            chunk = cur.fetchmany(min(step, rows_cap + 1 - len(rows)))
            if not chunk:
                break
            chunk_size = sum(_size(list(row)) for row in chunk)
            size += chunk_size
            # Building Python rows holds the GIL (the writer's thread waits for it): aim at chunks
            # of about _CHUNK_BYTES, and never convert much past the byte cap.
            step = max(1, min(_FETCH_ROWS, _CHUNK_BYTES * len(chunk) // max(chunk_size, 1)))
            if size > bytes_cap:
                raise _too_large(bytes_cap)
            rows.extend(chunk)
        return ReadResult(
            columns=[d[0] for d in description],
            types=[str(d[1]) for d in description],
            rows=[list(row) for row in rows[:rows_cap]],
            truncated=len(rows) > rows_cap,
        )

    @staticmethod
    def _fetch_arrow(
        cur: duckdb.DuckDBPyConnection, text: str, params: Params, rows_cap: int, bytes_cap: int
    ) -> ArrowResult | ReadResult:
        batches: list[pa.RecordBatch] = []
        rows = size = 0
        # A relation, not cursor.execute: DuckDB streams its record batches without a copy.
        relation = cur.sql(text, params=params)
        description = relation.description
        if not all(_ARROW_SAFE.match(str(d[1])) for d in description):
            return ReadGate._fetch(cur, text, params, rows_cap, bytes_cap)
        reader = relation.to_arrow_reader(_ARROW_ROWS)
        for batch in reader:
            size += batch.nbytes
            if size > bytes_cap:
                raise _too_large(bytes_cap)
            batches.append(batch)
            rows += batch.num_rows
            if rows > rows_cap:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
        return ArrowResult(
            columns=[d[0] for d in description],
            types=[str(d[1]) for d in description],
            table=table.slice(0, rows_cap),
            truncated=rows > rows_cap,
        )

    # --- the named queries ---------------------------------------------------------------------
    def run_named(
        self, name: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Result:
        """A named query (``store.catalog``) in its own lane; its rows are already JSON values."""
        # The caller's thread at its normal priority: these are the dashboard's short, static reads.
        with self.admit("named"):
            return execute.run_query(
                self.con, name, params, timeout=min(timeout or self.limits.timeout, self.limits.timeout)
            )

    def health(self) -> dict[str, Any]:
        """Schema version and last batch; nothing about the machine (no paths, no PIDs)."""
        return execute.health(self.con)


def run_sql(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: Params = None,
    *,
    settings: Settings | None = None,
) -> ReadResult:
    """One guarded read on a connection without a shared gate (a read-only file, a script)."""
    return ReadGate(con, settings).run(sql, params)

"""The one read path into the store: guard, limits and engine lock-down for every outside reader.

The HTTP read API (``serve.api``), ``sensorstream sql``/``query`` without a running writer
(``serve.client``) and any other endpoint (a PostgreSQL-wire server) call the same object, so
what is refused, how long a read may run and how much it may return are decided here once::

    gate = ReadGate(con, settings)            # locks con's DuckDB instance down (reads.lockdown)
    result = gate.run("SELECT … WHERE x = ?", [1], max_rows=100)   # admits, checks, runs
    result.columns, result.types, result.rows, result.truncated    # rows: DuckDB's Python values
    result.to_json()                          # the API's JSON shape (ISO times, seconds, …)
    gate.run_named("latest_windows", {"limit": 10})                # the named queries' own lane

Create **one gate per store connection** and share it between endpoints: its concurrency limit
is for the whole process. The HTTP API's own process (``serve.front``) guards the text there and
sends only checked statements here (:meth:`ReadGate.run_checked`, over ``serve.backend``), so
both endpoints still share this gate's slots and limits. Every refusal or failure is a :class:`~sensorstream.reads.errors.QueryError`
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

import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol

import duckdb

from sensorstream.config import Settings
from sensorstream.reads import execute
from sensorstream.reads.answer import ArrowResult, ReadResult, fetch_arrow, fetch_rows
from sensorstream.reads.errors import QueryCanceled, QueryTimeout, ReadBusy, TooLarge, from_duckdb
from sensorstream.reads.execute import Result, read_cursor
from sensorstream.reads.limits import Lane, Params, ReadLimits, check_params
from sensorstream.reads.lockdown import lock_down
from sensorstream.reads.priority import idle_priority
from sensorstream.reads.watchdog import Watchdog, WriterMark, start_watchers


class Gate(Protocol):
    """What an endpoint needs of a gate: the writer's own :class:`ReadGate` (in-process) or an
    endpoint process's :class:`~sensorstream.serve.front.RemoteGate`, which checks the text where it
    runs and has the writer run it. Both share the writer's one set of slots and limits."""

    limits: ReadLimits

    def run(
        self,
        sql: str,
        params: Params = None,
        *,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        timeout: float | None = None,
        tag: str | None = None,
    ) -> ReadResult: ...

    def cancel(self, tag: str) -> bool: ...

    def run_named(
        self, name: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Result: ...

    def health(self) -> dict[str, Any]: ...


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
        start_watchers()  # from this thread, not from the first (idle) reader: see start_watchers
        # Ad-hoc reads run on these threads, on CPU time the writer does not want (see idle_priority).
        self._readers = ThreadPoolExecutor(
            self.limits.max_concurrent, thread_name_prefix="store-read", initializer=idle_priority
        )
        self._slots = {
            "sql": threading.BoundedSemaphore(self.limits.max_concurrent),
            "named": threading.BoundedSemaphore(self.limits.max_concurrent_named),
        }
        # Each reader thread's own cursor, kept between reads (see _cursor).
        self._local = threading.local()
        # Reads running under a caller's tag, and tags canceled before their read began.
        self._tagged: dict[str, Watchdog] = {}
        self._canceled: deque[str] = deque(maxlen=256)
        self._tag_lock = threading.Lock()

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
        # A bare cursor: the guard only parses and serializes the text, which no session setting
        # changes, and read_cursor's SET costs more than everything else here on a known text.
        cur = self.con.cursor()
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
        tag: str | None = None,
    ) -> ReadResult:
        """Admit (``sql`` lane), check and run one read-only SELECT with parameters bound by DuckDB.

        ``max_rows``/``max_bytes``/``timeout`` may only tighten the gate's limits, never widen them.
        ``admit=False`` is for a caller that already holds :meth:`admit`. ``tag`` names the read
        for :meth:`cancel`.
        """
        caps = self.limits.caps(max_rows, max_bytes, timeout)
        params = check_params(params)
        # The guard before admission: a refusal is cheap (the text is capped) and should say why,
        # not "busy".
        text = self.check(sql)
        if not admit:
            return self._readers.submit(self._run_sql, text, params, *caps, None, tag).result()
        with self.admit("sql"):
            return self._readers.submit(self._run_sql, text, params, *caps, None, tag).result()

    def run_checked(
        self,
        text: str,
        params: Params,
        *,
        max_rows: int,
        max_bytes: int,
        timeout: float,
        tag: str | None = None,
    ) -> ArrowResult | ReadResult:
        """Admit and run ``text`` that the guard in the read API's process already checked.

        For ``serve.backend``: the guard's parsing, the JSON and the HTTP stay in that process,
        and this one only runs the query. The answer is Arrow, which DuckDB fills without the GIL,
        so the writer's threads barely notice the reads; only an answer with a column type whose
        Arrow form differs from DuckDB's own Python value (INTERVAL, MAP, HUGEINT...) is built
        as Python rows here, as :meth:`run` does.
        """
        caps = self.limits.caps(max_rows, max_bytes, timeout)
        params = check_params(params)
        with self.admit("sql"):
            return self._readers.submit(self._run_sql, text, params, *caps, fetch_arrow, tag).result()

    def cancel(self, tag: str) -> bool:
        """Interrupt the read running under ``tag`` (a PostgreSQL CancelRequest), as its time limit
        would; a read under that tag that has not begun yet is refused when it begins."""
        with self._tag_lock:
            dog = self._tagged.get(tag)
            if dog is None:
                self._canceled.append(tag)
                return False
        dog.cancel()
        return True

    @contextmanager
    def _tagged_as(self, tag: str | None, dog: Watchdog) -> Iterator[None]:
        if tag is None:
            yield
            return
        with self._tag_lock:
            if tag in self._canceled:
                raise QueryCanceled("canceling statement due to user request")
            self._tagged[tag] = dog
        try:
            yield
        finally:
            with self._tag_lock:
                self._tagged.pop(tag, None)

    def _run_sql(
        self,
        text: str,
        params: Params,
        rows_cap: int,
        bytes_cap: int,
        seconds: float,
        fetch: Callable[..., Any] | None = None,
        tag: str | None = None,
    ) -> Any:
        """Run ``text`` (already checked) on a reader thread; ``fetch`` builds the answer."""
        limits = self.limits
        cur = self._cursor()
        try:
            with (
                WriterMark.shared().reading() as floor,
                Watchdog(cur, seconds, limits.memory, floor) as dog,
                self._tagged_as(tag, dog),
            ):
                try:
                    answer = (fetch or fetch_rows)(cur, text, params, rows_cap, bytes_cap)
                except duckdb.Error as exc:
                    if dog.reason == "cancel":
                        raise QueryCanceled("canceling statement due to user request") from None
                    if dog.reason == "timeout":
                        raise QueryTimeout(
                            f"the query was interrupted after {seconds:g} s (the limit for one read)"
                        ) from None
                    if dog.reason == "memory":
                        raise TooLarge(
                            f"the query was interrupted: it needed more than {limits.memory // 2**20} MB "
                            "of memory (the limit for one read)"
                        ) from None
                    raise from_duckdb(exc) from None
            # A cut-off answer leaves the rest of its result open, and with it the read's
            # transaction: end it, so the cursor's next read starts a new one at the last commit.
            cur.abort()
            return answer
        except BaseException:
            # Whatever state a failed read left the cursor in, the next read gets a new one.
            self._local.cur = None
            cur.close()
            raise

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """This reader thread's cursor, made (and its settings applied) once, not per read.

        Making a cursor, setting its time zone and its operator memory limit cost about 0.5 ms of
        CPU per read in the writer's process, much of it holding the GIL the sink's thread waits
        for. A cursor of the writer's connection runs each read in a transaction of its own
        (autocommit), so it sees the last committed batch as a new cursor does; no read can change
        its settings (the guard lets only SELECT through, and the instance's configuration is
        locked).
        """
        local = self._local
        cur: duckdb.DuckDBPyConnection | None = getattr(local, "cur", None)
        if cur is None:
            cur = local.cur = read_cursor(self.con)
            local.memory = None
        if local.memory != self.limits.memory:
            # The read's sorts and hash tables spill past this instead of taking the writer's share.
            cur.execute(f"SET operator_memory_limit = '{self.limits.memory}B'")
            local.memory = self.limits.memory
        return cur

    # --- the named queries ---------------------------------------------------------------------
    def run_named(
        self, name: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Result:
        """A named query (``reads.catalog``) in its own lane; its rows are already JSON values."""
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

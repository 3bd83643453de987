"""Opening the DuckDB file: one read-write connection per process, always in UTC."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from sensorstream.store.migrations import migrate

# Every write transaction in this process (a sink batch, a retention delete) holds this lock:
# DuckDB's optimistic concurrency would abort a batch that touches rows a concurrent delete touched.
writer_lock = threading.RLock()


class StoreOpenError(RuntimeError):
    """The DuckDB file cannot be opened: not a DuckDB file, a directory, not readable or writable."""


class StoreLockedError(StoreOpenError):
    """Another process holds the DuckDB file (DuckDB allows one writer process)."""


def connect(
    path: Path | str, *, read_only: bool = False, run_migrations: bool = True, threads: int | None = None
) -> duckdb.DuckDBPyConnection:
    """Open the store. The writer migrates it; readers only open it.

    ``threads``: DuckDB's worker threads for this instance (``SENSORSTREAM_DB_THREADS`` for the
    writer's process); ``None`` keeps DuckDB's default (every core).
    """
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.ConnectionException:
        raise  # this process has the file open already, in another mode: the caller's mistake
    except duckdb.Error as exc:
        if "Could not set lock" in str(exc):
            holder = re.search(r"\(PID (\d+)\)", str(exc))
            raise StoreLockedError(
                f"{path} is open in another process{f' (PID {holder[1]})' if holder else ''} and DuckDB "
                "allows one writer: stop that process first, or read the store through its read API "
                "(sensorstream.serve.client)"
            ) from exc
        raise StoreOpenError(_cannot_open(path, exc)) from exc
    # Set after connecting: as a connect-time config the setting fails before icu is loaded.
    con.execute("SET TimeZone = 'UTC'")
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    if not read_only and run_migrations:
        migrate(con)
    return con


def _cannot_open(path: Path, exc: duckdb.Error) -> str:
    said = str(exc).strip().splitlines()[0].removeprefix("IO Error: ") if str(exc).strip() else ""
    if "not a valid DuckDB database file" in said:
        return (
            f"{path} exists but is not a DuckDB database file: set SENSORSTREAM_DB to the store's file, "
            "or move that file away"
        )
    return f"DuckDB cannot open {path} ({said}): check SENSORSTREAM_DB and the file's permissions"


# --- write transactions --------------------------------------------------------------------------
class BatchWriteError(RuntimeError):
    """A write transaction failed and was rolled back whole; nothing of it is in the store."""


@dataclass
class WriteTx:
    """One open write transaction: run statements on ``cur``; timings are filled in as it goes."""

    cur: duckdb.DuckDBPyConnection
    lock_wait_s: float = 0.0  # how long other writers (retention, snapshot) made us wait
    held_s: float = 0.0  # how long we held the lock, BEGIN to COMMIT
    started: float = field(default_factory=time.perf_counter)


@contextmanager
def write_transaction(con: duckdb.DuckDBPyConnection, what: str = "batch") -> Iterator[WriteTx]:
    """``BEGIN`` … ``COMMIT`` on a fresh cursor under :data:`writer_lock`; any error rolls it all back.

    A DuckDB error comes out as :class:`BatchWriteError` naming ``what``, with DuckDB's own message
    (duplicate key, NULL in a NOT NULL column, wrong number of values...) kept in it.
    """
    t0 = time.perf_counter()
    with writer_lock:
        cur = con.cursor()
        tx = WriteTx(cur, lock_wait_s=time.perf_counter() - t0)
        try:
            # Cursors do not inherit the parent's session settings.
            cur.execute("SET TimeZone = 'UTC'")
            cur.execute("BEGIN TRANSACTION")
            try:
                yield tx
                cur.execute("COMMIT")
            except duckdb.Error as exc:
                _rollback(cur)
                raise BatchWriteError(f"{what} rolled back, nothing written: {exc}") from exc
            except BaseException:
                _rollback(cur)
                raise
        finally:
            tx.held_s = time.perf_counter() - t0 - tx.lock_wait_s
            cur.close()


@contextmanager
def writes_held() -> Iterator[None]:
    """Wait for the write transaction in flight, and keep new ones out while the block runs."""
    with writer_lock:
        yield


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    # A failed COMMIT (e.g. a constraint checked at commit) has already ended the transaction.
    with suppress(duckdb.Error):
        cur.execute("ROLLBACK")


def read_cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor for one read: its own connection to the same database, so it sees the last commit."""
    cur = con.cursor()
    # Cursors do not inherit session settings; time_bucket and ISO output depend on the zone.
    cur.execute("SET TimeZone = 'UTC'")
    return cur


def is_locked(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the instance's configuration is locked (the read lock-down, ``reads.lockdown``, ran)."""
    row = con.execute("SELECT current_setting('lock_configuration')").fetchone()
    return bool(row and row[0])

"""Opening the DuckDB file: one read-write connection per process, always in UTC."""

from __future__ import annotations

from pathlib import Path

import threading

import duckdb

from sensorstream.store.migrations import migrate


# Every write transaction in this process (a sink batch, a retention delete) holds this lock:
# DuckDB's optimistic concurrency would abort a batch that touches rows a concurrent delete touched.
writer_lock = threading.RLock()


class StoreLockedError(RuntimeError):
    """Another process holds the DuckDB file (DuckDB allows one writer process)."""


def connect(
    path: Path | str, *, read_only: bool = False, run_migrations: bool = True
) -> duckdb.DuckDBPyConnection:
    """Open the store. The writer migrates it; readers only open it."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise StoreLockedError(
                f"{path} is open in another process (DuckDB allows one writer). Read it through the "
                "running pipeline's read API (sensorstream.store.client), or stop that process first."
            ) from exc
        raise
    # Set after connecting: as a connect-time config the setting fails before icu is loaded.
    con.execute("SET TimeZone = 'UTC'")
    if not read_only and run_migrations:
        migrate(con)
    return con

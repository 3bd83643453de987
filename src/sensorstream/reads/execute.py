"""Running reads: a cursor per read, a time limit that holds, at most MAX_ROWS rows, JSON values.

The read API (``serve.api``) and the client's file fallback (``serve.client``) both call
:func:`run_query`, so a named query (from :mod:`sensorstream.reads.catalog`) answers the same
columns and values whichever path served it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import duckdb

from sensorstream.reads.catalog import MAX_ROWS, bind, get
from sensorstream.reads.errors import QueryError, QueryTimeout, first_line
from sensorstream.reads.watchdog import Watchdog
from sensorstream.store.db import read_cursor

DEFAULT_TIMEOUT_S = 10.0


@dataclass
class Result:
    """Column names, DuckDB type names and JSON-ready rows (timestamps as ISO-8601 strings)."""

    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "types": self.types, "rows": self.rows, "truncated": self.truncated}


# --- running ---------------------------------------------------------------------------------------
@contextmanager
def interrupt_after(cur: duckdb.DuckDBPyConnection, seconds: float) -> Iterator[None]:
    """Interrupt whatever ``cur`` runs once ``seconds`` have passed; raise :class:`QueryTimeout`."""
    # The process's one watchdog thread, not a timer thread per query.
    with Watchdog(cur, seconds, None) as dog:
        try:
            yield
        except duckdb.Error as exc:
            if dog.reason == "timeout":
                raise QueryTimeout(
                    f"query interrupted after {seconds:g} s (the limit for one query)"
                ) from exc
            raise


def execute(
    cur: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None,
    *,
    max_rows: int = MAX_ROWS,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Result:
    """Run one statement on ``cur`` with a time limit and fetch at most ``max_rows`` rows."""
    with interrupt_after(cur, timeout):
        try:
            cur.execute(sql, params)
            rows = cur.fetchmany(max_rows + 1)
        except QueryError:
            raise
        except duckdb.InterruptException:
            raise
        except duckdb.Error as exc:
            # The first line only: the rest is DuckDB's caret diagram or hints, not a sentence.
            raise QueryError(f"the store could not run this query: {first_line(exc)}") from exc
    description = cur.description or []
    truncated = len(rows) > max_rows
    return Result(
        columns=[d[0] for d in description],
        types=[str(d[1]) for d in description],
        rows=[[jsonable(v) for v in row] for row in rows[:max_rows]],
        truncated=truncated,
    )


def run_query(
    con: duckdb.DuckDBPyConnection,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Result:
    """Run a named query on a fresh cursor of ``con`` (the writer's connection or a read-only one)."""
    query = get(name)
    bound = bind(query, params or {})
    cur = read_cursor(con)
    try:
        return execute(cur, query.sql, bound, timeout=timeout)
    finally:
        cur.close()


def _iso(value: datetime | date | time) -> str:
    return value.isoformat()


_CONVERT: dict[type, Callable[[Any], Any]] = {
    datetime: _iso,
    date: _iso,
    time: _iso,
    timedelta: lambda v: v.total_seconds(),
    Decimal: float,
    UUID: str,
    bytes: lambda v: v.decode("utf-8", "backslashreplace"),
    bytearray: lambda v: bytes(v).decode("utf-8", "backslashreplace"),
}


def jsonable(value: Any) -> Any:
    """A DuckDB value as JSON: ISO-8601 times, seconds for intervals, null for NaN/inf."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    convert = _CONVERT.get(type(value))
    if convert is not None:
        return convert(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def health(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Schema version and the newest batch's id and age, from one cursor (``GET /health``)."""
    cur = read_cursor(con)
    try:
        version = cur.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        last = cur.execute(
            "SELECT batch_id, committed_at, epoch(now()) - epoch(committed_at) FROM pipeline_metrics "
            "ORDER BY committed_at DESC, batch_id DESC LIMIT 1"
        ).fetchone()
    finally:
        cur.close()
    return {
        "schema_version": version[0] if version else 0,
        "last_batch_id": last[0] if last else None,
        "last_batch_at": jsonable(last[1]) if last else None,
        "last_batch_age_seconds": last[2] if last else None,
    }

"""Retention: delete what is older than its horizon, by time range, in chunks that never stall a batch.

What goes and what stays:

- ``readings``, ``late_events`` and ``anomalies`` older than ``RETENTION`` (event time) are
  deleted. They are per-event detail and the bulk of the file.
- ``dead_letters`` are deleted by arrival time (``received_at``; a dead letter may have no
  usable event time). They carry raw blobs, the largest rows of all.
- ``window_stats`` (the aggregates) are kept for ``WINDOW_RETENTION`` (event time; final windows
  only), ``pipeline_metrics`` for ``METRICS_RETENTION`` (commit time). 0 keeps them for ever.
  A sensor's ``sensor_state`` row goes when it has been silent for ``WINDOW_RETENTION``.
- ``sink_commits`` (the exactly-once ledger) follows ``METRICS_RETENTION`` too, but each query's
  newest row always stays: it holds the watermark, and Spark only ever replays the batch after it.

The event cutoff is ``least(newest event time, now) - horizon``. Event time, not the wall clock, so
a replayed 2015 data set is not wiped on arrival; capped by ``now`` so one reading from a clock far
in the future cannot move the cutoff forward. A window can still change while ``window_end >
watermark = newest event time - allowed_lateness``; config enforces ``retention >= window +
allowed_lateness``, so the readings of an open window are kept (the sink no longer re-reads them,
but a late copy of an event must still find its original there to be recognised as a copy).

Why this keeps up with any ingest rate: the event tables carry no index (see migration 3), so a
DELETE costs a scan of the row groups that hold old rows plus a mark per row: about 60 ms for
6 M rows here, against 45 µs a row when ``readings.event_id`` had its primary-key index. Rows are
deleted oldest first in time slices of about ``chunk_rows`` rows, each its own short transaction
under ``writer_lock``, so a sink batch waits at most one slice. Tables that keep a key index
(dead letters, windows, metrics) are deleted ``chunk_rows`` rows at a time with a pause between:
``threading`` locks are not fair, and a loop that re-acquires at once would starve the sink.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb

from sensorstream.store.db import read_cursor, write_transaction

log = logging.getLogger(__name__)

# (table, time column, whether the cutoff is in event time (True) or wall-clock time (False))
RETAINED: tuple[tuple[str, str, bool], ...] = (
    ("readings", "event_time", True),
    ("late_events", "event_time", True),
    ("anomalies", "event_time", True),
    ("dead_letters", "received_at", False),
)
# Tables without an index: deleted by time slices (see the module doc).
UNINDEXED = frozenset({"readings", "late_events", "anomalies"})
KEPT = ("window_stats", "pipeline_metrics", "sink_commits", "schema_version", "sensor_state")


@dataclass
class RetentionResult:
    event_cutoff: datetime | None
    arrival_cutoff: datetime
    deleted: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    max_chunk_ms: float = 0.0  # the longest the writer lock was held at once
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        total = sum(self.deleted.values())
        return total / self.seconds if self.seconds > 0 else 0.0


def event_cutoff(con: duckdb.DuckDBPyConnection, retention: float) -> datetime | None:
    """``least(newest reading's event time, now) - retention``; ``None`` when there are no readings."""
    newest = _newest_event_time(con)
    return None if newest is None else newest - timedelta(seconds=retention)


def _newest_event_time(con: duckdb.DuckDBPyConnection) -> datetime | None:
    cur = read_cursor(con)
    try:
        # Not least(max(event_time), now()): least skips NULLs, so with no readings yet it gave now,
        # and a pass that started before the first batch deleted by now - RETENTION the batches
        # committed while it ran (a replay of older data lost them, and then counted their copies).
        row = cur.execute(
            "SELECT CASE WHEN max(event_time) IS NOT NULL THEN least(max(event_time), now()) END FROM readings"
        ).fetchone()
    finally:
        cur.close()
    return row[0] if row else None


def apply_retention(
    con: duckdb.DuckDBPyConnection,
    retention: float,
    *,
    window_retention: float = 0.0,
    metrics_retention: float = 0.0,
    chunk_rows: int = 250_000,
    pause: float = 0.05,
) -> RetentionResult:
    """Delete what is older than its horizon (seconds; see the module doc), chunk by chunk."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    newest = _newest_event_time(con)
    result = RetentionResult(
        event_cutoff=None if newest is None else newest - timedelta(seconds=retention),
        arrival_cutoff=now - timedelta(seconds=retention),
    )
    for table, column, by_event_time in RETAINED:
        cutoff = result.event_cutoff if by_event_time else result.arrival_cutoff
        result.deleted[table] = 0
        if cutoff is None:
            continue
        if table in UNINDEXED:
            _delete_by_time_slices(con, table, column, cutoff, chunk_rows, result)
        else:
            _delete_by_rowid(con, table, f"{column} < $cutoff", {"cutoff": cutoff}, chunk_rows, pause, result)
    if window_retention > 0 and newest is not None:
        result.deleted["window_stats"] = 0
        _delete_by_rowid(
            con, "window_stats", "is_final AND window_end < $cutoff",
            {"cutoff": newest - timedelta(seconds=window_retention)}, chunk_rows, pause, result,
        )  # fmt: skip
        # A sensor silent for as long as its windows are kept is gone: forget its baseline too.
        result.deleted["sensor_state"] = 0
        _delete_by_rowid(
            con, "sensor_state", "last_event_time < $cutoff",
            {"cutoff": newest - timedelta(seconds=window_retention)}, chunk_rows, pause, result,
        )  # fmt: skip
    if metrics_retention > 0:
        cutoff = now - timedelta(seconds=metrics_retention)
        result.deleted["pipeline_metrics"] = result.deleted["sink_commits"] = 0
        _delete_by_rowid(
            con, "pipeline_metrics", "committed_at < $cutoff", {"cutoff": cutoff}, chunk_rows, pause, result
        )
        _delete_by_rowid(
            con, "sink_commits",
            "committed_at < $cutoff AND (query_name, batch_id) NOT IN "
            "(SELECT (query_name, max(batch_id)) FROM sink_commits GROUP BY query_name)",
            {"cutoff": cutoff}, chunk_rows, pause, result,
        )  # fmt: skip
    result.seconds = time.perf_counter() - started
    if any(result.deleted.values()):
        log.info(
            "retention deleted %s (event cutoff %s)",
            result.deleted,
            result.event_cutoff,
            extra={"max_chunk_ms": round(result.max_chunk_ms, 1)},
        )
    return result


def _delete_by_time_slices(
    con: duckdb.DuckDBPyConnection,
    table: str,
    column: str,
    cutoff: datetime,
    chunk_rows: int,
    result: RetentionResult,
) -> None:
    """Delete ``column < cutoff``, oldest first, in slices of event time holding about ``chunk_rows`` rows.

    The slice width follows the rows per second of event time seen in the previous slice, so a
    quiet night and a busy afternoon both take a few short transactions.
    """
    # Table and column names come from RETAINED; only the values are parameters.
    cur = read_cursor(con)
    try:
        oldest = cur.execute(f"SELECT min({column}) FROM {table}").fetchone()[0]
    finally:
        cur.close()
    step = timedelta(minutes=1)
    while oldest is not None and oldest < cutoff:
        upto = min(cutoff, oldest + step)
        with write_transaction(con, f"retention of {table}") as tx:
            deleted = int(
                tx.cur.execute(f"DELETE FROM {table} WHERE {column} < $upto", {"upto": upto}).fetchone()[0]
            )
        result.chunks += 1
        result.max_chunk_ms = max(result.max_chunk_ms, tx.held_s * 1000)
        result.deleted[table] += deleted
        span = (upto - oldest).total_seconds()
        if deleted:
            step = timedelta(seconds=max(1.0, span * chunk_rows / deleted))
        else:
            step *= 8  # a gap in the data: cross it quickly
        oldest = upto


def _delete_by_rowid(
    con: duckdb.DuckDBPyConnection,
    table: str,
    condition: str,
    params: dict,
    chunk_rows: int,
    pause: float,
    result: RetentionResult,
) -> None:
    """Delete rows matching ``condition`` from a table with a key index, a few at a time.

    DuckDB pays ~45 µs a row to keep a VARCHAR key's index on delete, so chunks stay small
    (1,000 rows ≈ 45 ms of lock) whatever ``chunk_rows`` the event tables use.
    """
    chunk = min(chunk_rows, 1_000)
    sql = f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {condition} LIMIT $chunk)"
    result.deleted.setdefault(table, 0)
    while True:
        with write_transaction(con, f"retention of {table}") as tx:
            count = tx.cur.execute(sql, {**params, "chunk": chunk}).fetchone()
        deleted = int(count[0]) if count else 0
        result.chunks += 1
        result.max_chunk_ms = max(result.max_chunk_ms, tx.held_s * 1000)
        result.deleted[table] += deleted
        if deleted < chunk:
            break
        time.sleep(pause)

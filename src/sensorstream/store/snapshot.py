"""A read-only copy of the aggregates for tools outside the pipeline (Grafana, the duckdb CLI).

Those tools cannot open the live file while the pipeline writes it, so every
``SENSORSTREAM_SNAPSHOT_INTERVAL`` seconds (0 = off) the writer's process copies the tables
into a new DuckDB file and renames it over ``SENSORSTREAM_SNAPSHOT_PATH``:

1. open a temporary file next to the target (same file system, so the rename is atomic) as a
   separate DuckDB instance: the store's own instance has file access locked off while it serves
   reads (``reads.lockdown``), so it cannot ``ATTACH`` it;
2. one transaction on a cursor of the store: each table's ``SELECT`` streams as Arrow record
   batches into ``CREATE TABLE … AS`` in the new file. The cursor reads one MVCC snapshot (one
   committed batch) and never takes ``writer_lock``: batches keep committing while it copies;
3. ``CHECKPOINT`` and close the new file (it is complete), then ``os.replace``.

A reader therefore sees the old snapshot or the new one, never half a file. Tables keep the
store's names and columns, so the named queries run on a snapshot too; ``dead_letters`` loses its
raw blobs (``raw_value``/``kafka_key`` are NULL), ``readings`` keeps only the newest
``readings_minutes``, and ``snapshot_info`` says when it was taken.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from sensorstream.store.db import read_cursor

log = logging.getLogger(__name__)

# table -> SELECT list and filter; the source is the live table of the same name.
_COPIES: dict[str, str] = {
    "window_stats": "SELECT * FROM window_stats",
    "anomalies": "SELECT * FROM anomalies",
    "late_events": "SELECT * FROM late_events",
    "dead_letters": "SELECT * REPLACE (NULL::BLOB AS raw_value, NULL::BLOB AS kafka_key) FROM dead_letters",
    "pipeline_metrics": "SELECT * FROM pipeline_metrics",
    "sink_commits": "SELECT * FROM sink_commits",
    "schema_version": "SELECT * FROM schema_version",
    "readings": (
        "SELECT * FROM readings WHERE event_time >= (SELECT max(event_time) FROM readings) "
        "- to_microseconds(CAST($readings_minutes * 60000000 AS BIGINT))"
    ),
}


_BATCH_ROWS = 100_000


@dataclass
class SnapshotResult:
    path: Path
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    bytes: int = 0


def write_snapshot(
    con: duckdb.DuckDBPyConnection, target: Path | str, *, readings_minutes: float = 60.0
) -> SnapshotResult:
    """Copy the tables into ``target`` atomically (see the module doc); returns rows and timing."""
    started = time.perf_counter()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)  # from a crash mid-snapshot
    result = SnapshotResult(target)
    cur = read_cursor(con)
    try:
        source = cur.execute(
            "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
        ).fetchone()
        out = duckdb.connect(str(tmp))
        try:
            _copy(cur, out, readings_minutes, source[0] if source else None, result)
            out.execute("CHECKPOINT")  # everything in the file itself: no .wal is left beside it
        finally:
            out.close()
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        cur.close()
    result.seconds = time.perf_counter() - started
    result.bytes = target.stat().st_size
    log.debug("snapshot %s: %s in %.2f s", target, result.rows, result.seconds)
    return result


def _copy(
    cur: duckdb.DuckDBPyConnection,
    out: duckdb.DuckDBPyConnection,
    readings_minutes: float,
    source: str | None,
    result: SnapshotResult,
) -> None:
    cur.execute("BEGIN TRANSACTION")  # one transaction: every table from the same committed batch
    try:
        for table, select in _COPIES.items():
            params = {"readings_minutes": readings_minutes} if "$readings_minutes" in select else None
            # Record batches, not one Arrow table: a large `readings` never sits in memory whole.
            out.register("source", cur.sql(select, params=params).to_arrow_reader(_BATCH_ROWS))
            try:
                out.execute(f"CREATE TABLE {table} AS SELECT * FROM source")
            finally:
                out.unregister("source")
            result.rows[table] = out.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        # The newest batch by commit time: batch ids restart when a checkpoint is reset.
        last = cur.execute(
            "SELECT batch_id FROM pipeline_metrics ORDER BY committed_at DESC, batch_id DESC LIMIT 1"
        ).fetchone()
        out.execute(
            "CREATE TABLE snapshot_info AS SELECT now() AS taken_at, CAST($db AS VARCHAR) AS source_db, "
            "CAST($last AS BIGINT) AS last_batch_id",
            {"db": source, "last": last[0] if last else None},
        )
        cur.execute("COMMIT")
    except BaseException:
        with suppress(duckdb.Error):
            cur.execute("ROLLBACK")
        raise

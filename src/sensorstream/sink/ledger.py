"""The sink's two rows per batch: ``sink_commits`` (the ledger) and ``pipeline_metrics``.

Both are written in the batch's own transaction (:func:`record`), so a batch is in the ledger
exactly when its data is in the store. Monitoring learns more about a batch after it committed
(the consumer lag, Spark's own rates and trigger time) and adds it with :func:`annotate`: the
only other writer of ``pipeline_metrics`` (retention aside, which deletes old rows).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import duckdb

from sensorstream.sink.base import BatchResult
from sensorstream.store.db import write_transaction, writes_held

# The columns monitoring fills in after the commit.
ANNOTATIONS = ("consumer_lag", "input_rows_per_second", "processed_rows_per_second", "trigger_ms")


def record(cur: duckdb.DuckDBPyConnection, query_name: str, r: BatchResult) -> None:
    duration_ms = r.spark_ms + r.sink_ms
    cur.execute(
        """
        INSERT OR REPLACE INTO pipeline_metrics (batch_id, query_name, committed_at, input_rows, valid_rows, new_readings,
            duplicate_rows, late_rows, dead_letters, anomalies, windows_updated, windows_finalized,
            batch_duration_ms, spark_ms, sink_ms, rows_per_second, latency_p50_ms, latency_p95_ms,
            latency_max_ms, kafka_latency_p50_ms, kafka_latency_p95_ms, kafka_latency_max_ms, watermark,
            max_event_time)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
        [
            # Wall-clock time at the end of the batch (now() would be the transaction's start).
            r.batch_id, query_name, datetime.now(UTC), r.input_rows, r.valid_rows, r.new_readings, r.duplicate_rows,
            r.late_rows, r.dead_letters, r.anomalies, r.windows_updated, r.windows_finalized, duration_ms,
            r.spark_ms, r.sink_ms, r.input_rows / (duration_ms / 1000) if duration_ms > 0 else None,
            r.latency_p50_ms, r.latency_p95_ms, r.latency_max_ms, r.kafka_latency_p50_ms,
            r.kafka_latency_p95_ms, r.kafka_latency_max_ms, r.watermark, r.max_event_time,
        ],
    )  # fmt: skip
    cur.execute(
        "INSERT INTO sink_commits VALUES (?, ?, now(), ?, ?, ?)",
        [query_name, r.batch_id, r.next_watermark, r.max_event_time, json.dumps(r.end_offsets)],
    )


def annotate(
    con: duckdb.DuckDBPyConnection, batch_id: int, *, unless: Callable[[], bool] | None = None, **values: Any
) -> None:
    """Fill in monitoring columns (:data:`ANNOTATIONS`) of a committed batch's metrics row.

    ``unless``: checked under the writer lock before the transaction opens a cursor (no write when
    it says so), for a caller that is closing and must not write once it said it closed.
    """
    unknown = set(values) - set(ANNOTATIONS)
    if unknown:
        raise ValueError(f"not a monitoring column of pipeline_metrics: {sorted(unknown)}")
    assignments = ", ".join(f"{name} = ?" for name in values)
    with writes_held():  # re-entrant: the transaction below takes the same lock
        if unless is not None and unless():
            return  # before a cursor: the connection may be closed already
        with write_transaction(con, f"metrics of batch {batch_id}") as tx:
            tx.cur.execute(
                f"UPDATE pipeline_metrics SET {assignments} WHERE batch_id = ?", [*values.values(), batch_id]
            )

"""The sink's two rows per batch: ``sink_commits`` (the ledger) and ``pipeline_metrics``.

Both are keyed by ``(query_name, batch_id)``: batch ids restart at 0 when a checkpoint is reset,
under a new query name (:func:`sensorstream.sink.base.ledger_name`), and the old query's rows
stay. Both are written in the batch's own transaction (:func:`record`), so a batch is in the
ledger exactly when its data is in the store. Monitoring learns more about a batch after it
committed (the consumer lag, Spark's own rates and trigger time) and adds it with
:func:`annotate`: the only other writer of ``pipeline_metrics`` (retention aside, which deletes
old rows). This module is the one place these rows are written; the synthetic store
(``tools.synthetic``) calls it too.
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


def record(cur: duckdb.DuckDBPyConnection, r: BatchResult) -> None:
    """The batch's ``pipeline_metrics`` row and its ledger row, on the batch's transaction's cursor."""
    duration_ms = r.spark_ms + r.sink_ms
    # A plain INSERT: the batch is skipped when its ledger row exists, so a metrics row already
    # under this key means the ledger was bypassed, and the batch fails rather than overwrite it.
    cur.execute(
        """
        INSERT INTO pipeline_metrics (batch_id, query_name, committed_at, input_rows, valid_rows, new_readings,
            duplicate_rows, late_rows, dead_letters, anomalies, windows_updated, windows_finalized,
            batch_duration_ms, spark_ms, sink_ms, rows_per_second, latency_p50_ms, latency_p95_ms,
            latency_max_ms, kafka_latency_p50_ms, kafka_latency_p95_ms, kafka_latency_max_ms, watermark,
            max_event_time)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
        [
            # Wall-clock time at the end of the batch (now() would be the transaction's start).
            r.batch_id, r.query_name, datetime.now(UTC), r.input_rows, r.valid_rows, r.new_readings,
            r.duplicate_rows, r.late_rows, r.dead_letters, r.anomalies, r.windows_updated, r.windows_finalized,
            duration_ms, r.spark_ms, r.sink_ms, r.input_rows / (duration_ms / 1000) if duration_ms > 0 else None,
            r.latency_p50_ms, r.latency_p95_ms, r.latency_max_ms, r.kafka_latency_p50_ms,
            r.kafka_latency_p95_ms, r.kafka_latency_max_ms, r.watermark, r.max_event_time,
        ],
    )  # fmt: skip
    commit(cur, r)


def commit(cur: duckdb.DuckDBPyConnection, r: BatchResult) -> None:
    """The batch's ledger row alone: where the next batch's watermark and offsets start.

    :func:`record` writes it with the metrics; history written in bulk (the synthetic pre-fill)
    writes it alone, as the state the sink would have left.
    """
    cur.execute(
        "INSERT INTO sink_commits VALUES (?, ?, now(), ?, ?, ?)",
        [r.query_name, r.batch_id, r.next_watermark, r.max_event_time, json.dumps(r.end_offsets)],
    )


def annotate(
    con: duckdb.DuckDBPyConnection,
    query_name: str,
    batch_id: int,
    *,
    unless: Callable[[], bool] | None = None,
    **values: Any,
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
        with write_transaction(con, f"metrics of batch {batch_id} of {query_name}") as tx:
            tx.cur.execute(
                f"UPDATE pipeline_metrics SET {assignments} WHERE query_name = ? AND batch_id = ?",
                [*values.values(), query_name, batch_id],
            )

"""The per-batch merge into DuckDB: SQL over a staging table, in one transaction.

Why the windows are merged here and not in a Spark stateful operator: Spark drops rows behind
the watermark inside its operators and only counts them, so it cannot tell *which* events were
late. Here the watermark is ours, derived from the ledger, so every batch knows exactly which
of its events are late, and a replayed batch (same ``batch_id``, same offsets) classifies them
the same way:

* ``watermark(batch N) = max(watermark(N-1), max event_time through batch N-1 - ALLOWED_LATENESS)``
  (the rule Spark uses: the watermark moves between batches, never inside one).
* An event whose window has ended at or before the watermark is **late**: the window is final,
  so the event goes to ``late_events`` (and ``readings`` with ``is_late``), never into the window.
  (With sliding windows: when the latest window holding it has ended.)
* ``event_id`` is deduplicated within the batch and against ``readings`` (its primary key), so
  an event counts once however many copies Kafka carries and across restarts.
* Touched windows are recomputed from ``readings`` and upserted with absolute values: replaying
  never adds on top of what is there.
* Everything, including the ``sink_commits`` ledger row, commits in one transaction; a batch id
  already in the ledger is skipped.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa

from sensorstream.config import Settings
from sensorstream.store.db import writer_lock

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class BatchResult:
    batch_id: int
    skipped: bool = False
    input_rows: int = 0
    valid_rows: int = 0
    new_readings: int = 0
    duplicate_rows: int = 0
    late_rows: int = 0
    dead_letters: int = 0
    anomalies: int = 0
    windows_updated: int = 0
    windows_finalized: int = 0
    watermark: datetime | None = None
    next_watermark: datetime | None = None
    max_event_time: datetime | None = None
    sink_ms: float = 0.0
    spark_ms: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_max_ms: float | None = None
    kafka_latency_p50_ms: float | None = None
    kafka_latency_p95_ms: float | None = None
    kafka_latency_max_ms: float | None = None
    end_offsets: dict[str, int] | None = None

    def as_log(self) -> dict:
        doc = asdict(self)
        for key in ("watermark", "next_watermark", "max_event_time"):
            if doc[key] is not None:
                doc[key] = doc[key].isoformat()
        return {k: v for k, v in doc.items() if v is not None and k != "end_offsets"}


class StoreWriteError(RuntimeError):
    """The store's file cannot be written (disk full, read-only, permissions)."""


def _is_disk_error(exc: BaseException) -> bool:
    # DuckDB reports a failed WAL write at COMMIT as a TransactionException, so the type alone
    # does not tell; the message does.
    if isinstance(exc, duckdb.IOException | duckdb.PermissionException):
        return True
    text = str(exc)
    return isinstance(exc, duckdb.Error) and any(
        marker in text
        for marker in ("Could not write", "No space left", "Permission denied", "Read-only file")
    )


class BatchMerger:
    """Writes Spark micro-batches into the store, exactly once, on the writer's connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, settings: Settings, query_name: str = "sensorstream"):
        """``query_name`` keys the ledger; the job passes ``<name>/<checkpoint's query id>`` so
        that batch ids of a reset checkpoint (which restart at 0) are never mistaken for batches
        already committed. Data stays exact across such a reset: readings dedup by event_id and
        windows are recomputed, never added to."""
        self.con = con
        self.settings = settings
        self.query_name = query_name
        self.window = timedelta(seconds=settings.window)
        self.slide = timedelta(seconds=settings.slide or settings.window)
        self.lateness = timedelta(seconds=settings.allowed_lateness)
        thresholds = [(k, lo, hi) for k, (lo, hi) in settings.anomaly_thresholds.items()]
        self._thresholds = pa.table(
            {
                "sensor_type": [t[0] for t in thresholds],
                "low": pa.array([t[1] for t in thresholds], pa.float64()),
                "high": pa.array([t[2] for t in thresholds], pa.float64()),
            }
        )

    # --- ledger ----------------------------------------------------------------------------------
    def is_committed(self, batch_id: int) -> bool:
        row = (
            self.con.cursor()
            .execute(
                "SELECT 1 FROM sink_commits WHERE query_name = ? AND batch_id = ?",
                [self.query_name, batch_id],
            )
            .fetchall()
        )
        return bool(row)

    def _state(
        self, cur: duckdb.DuckDBPyConnection
    ) -> tuple[datetime | None, datetime | None, dict[str, int]]:
        """(watermark for the next batch, max event time so far, offsets done), from the last batch."""
        # This query's last batch; for a new checkpoint, the last batch of any earlier one, so the
        # watermark does not fall back to the epoch and re-open final windows.
        row = cur.execute(
            """
            SELECT watermark, max_event_time, end_offsets FROM sink_commits
            ORDER BY query_name = $q DESC, CASE WHEN query_name = $q THEN batch_id END DESC NULLS LAST,
                     committed_at DESC
            LIMIT 1
            """,
            {"q": self.query_name},
        ).fetchall()
        if not row:
            return None, None, {}
        watermark, max_event_time, offsets = row[0]
        candidates = [t for t in (watermark, max_event_time - self.lateness if max_event_time else None) if t]
        return (max(candidates) if candidates else None), max_event_time, json.loads(offsets or "{}")

    # --- the merge -------------------------------------------------------------------------------
    def merge(self, batch_id: int, batch: pa.Table, spark_ms: float = 0.0) -> BatchResult:
        """Merge one parsed micro-batch (columns from ``stream.parse``) in one transaction."""
        started = time.perf_counter()
        with writer_lock:
            cur = self.con.cursor()
            cur.execute("SET TimeZone = 'UTC'")
            cur.execute("BEGIN TRANSACTION")
            try:
                result = self._merge(cur, batch_id, batch)
                if not result.skipped:
                    result.spark_ms = spark_ms
                    result.sink_ms = (time.perf_counter() - started) * 1000
                    self._record(cur, result)
                cur.execute("COMMIT")
            except BaseException as exc:
                # After a failed COMMIT DuckDB has already ended the transaction; a second error
                # from ROLLBACK must not hide the first.
                with suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                if _is_disk_error(exc):
                    raise StoreWriteError(
                        f"cannot write the store {self.settings.db}: {exc}. Nothing of batch {batch_id} "
                        "was written; fix the disk or permissions and restart, the batch is replayed."
                    ) from exc
                raise
            finally:
                cur.close()
        return result

    def _merge(self, cur: duckdb.DuckDBPyConnection, batch_id: int, batch: pa.Table) -> BatchResult:
        result = BatchResult(batch_id=batch_id, input_rows=batch.num_rows)
        if cur.execute(
            "SELECT 1 FROM sink_commits WHERE query_name = ? AND batch_id = ?", [self.query_name, batch_id]
        ).fetchall():
            result.skipped = True
            return result
        watermark, max_before, offsets_before = self._state(cur)
        wm = watermark or EPOCH
        result.watermark = watermark
        cur.register("batch", batch)
        window_us = int(self.window.total_seconds() * 1_000_000)

        result.dead_letters = cur.execute(
            """
            INSERT INTO dead_letters
            SELECT kafka_topic, kafka_partition, kafka_offset, kafka_key, raw_value, error, $batch_id, now()
            FROM batch WHERE error IS NOT NULL
            ON CONFLICT DO NOTHING
            """,
            {"batch_id": batch_id},
        ).fetchall()[0][0]

        # Staging: the batch's valid events, one copy per event_id (the first in Kafka order), minus
        # those already stored; late when their window ended at or before the watermark.
        cur.execute(
            """
            CREATE OR REPLACE TEMP TABLE stage AS
            SELECT b.* EXCLUDE (error, raw_value, kafka_topic),
                   b.window_start + to_microseconds($window_us) <= $wm AS is_late
            FROM batch b
            WHERE b.error IS NULL
              AND NOT EXISTS (SELECT 1 FROM readings r WHERE r.event_id = b.event_id)
            QUALIFY row_number() OVER (PARTITION BY b.event_id ORDER BY b.kafka_partition, b.kafka_offset) = 1
            """,
            {"window_us": window_us, "wm": wm},
        )
        result.valid_rows = batch.num_rows - result.dead_letters
        counts = cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE is_late), max(event_time) FILTER (WHERE NOT is_late) FROM stage"
        ).fetchall()[0]
        result.new_readings, result.late_rows, batch_max = counts
        result.duplicate_rows = result.valid_rows - result.new_readings

        cur.execute(
            """
            INSERT INTO readings BY NAME
            SELECT event_id, sensor_id, event_time, value, sensor_type, unit, site, window_start, is_late,
                   kafka_partition, kafka_offset, kafka_timestamp, $batch_id AS batch_id, now() AS ingested_at
            FROM stage
            """,
            {"batch_id": batch_id},
        )
        cur.execute(
            """
            INSERT INTO late_events
            SELECT event_id, sensor_id, event_time, value, window_start, $wm, kafka_partition, kafka_offset,
                   $batch_id, now()
            FROM stage WHERE is_late
            """,
            {"wm": wm, "batch_id": batch_id},
        )
        # Recompute each touched window from the stored readings: absolute values, so a replay or a
        # second copy of an event can never add on top of what is there. `readings.window_start` is
        # the latest window holding the event (the same as its only window when tumbling); with
        # SLIDE an event sits in ceil(WINDOW / SLIDE) windows, the earlier ones SLIDE apart.
        # Windows the watermark already passed are final and never touched again.
        slide_us = int(self.slide.total_seconds() * 1_000_000)
        params = {"w": window_us, "s": slide_us, "n": -(-window_us // slide_us), "wm": wm}
        cur.execute(
            """
            CREATE OR REPLACE TEMP TABLE touched AS
            SELECT DISTINCT s.sensor_id, s.window_start - to_microseconds(k * $s) AS ws
            FROM stage s, range(0, $n) AS t(k)
            WHERE NOT s.is_late
              AND s.window_start - to_microseconds(k * $s) > s.event_time - to_microseconds($w)
              AND s.window_start - to_microseconds(k * $s) + to_microseconds($w) > $wm
            """,
            params,
        )
        result.windows_updated = cur.execute(
            """
            INSERT INTO window_stats
            SELECT t.sensor_id, t.ws, t.ws + to_microseconds($w),
                   max(r.sensor_type), max(r.site), count(*), avg(r.value), min(r.value), max(r.value),
                   stddev_samp(r.value), false, now()
            FROM touched t
            CROSS JOIN range(0, $n) AS j(j)
            JOIN readings r
              ON r.sensor_id = t.sensor_id AND r.window_start = t.ws + to_microseconds(j.j * $s)
            WHERE NOT r.is_late AND r.event_time < t.ws + to_microseconds($w)
            GROUP BY t.sensor_id, t.ws
            ON CONFLICT (sensor_id, window_start) DO UPDATE SET
                window_end = excluded.window_end, sensor_type = excluded.sensor_type, site = excluded.site,
                reading_count = excluded.reading_count, avg_value = excluded.avg_value,
                min_value = excluded.min_value, max_value = excluded.max_value,
                stddev_value = excluded.stddev_value, updated_at = excluded.updated_at
            """,
            {k: params[k] for k in ("w", "s", "n")},
        ).fetchall()[0][0]

        result.anomalies = self._anomalies(cur, batch_id, window_us)

        candidates = [t for t in (max_before, batch_max) if t is not None]
        result.max_event_time = max(candidates) if candidates else None
        moved = result.max_event_time - self.lateness if result.max_event_time else None
        next_wm = max(t for t in (wm, moved) if t is not None)
        result.next_watermark = next_wm if next_wm > EPOCH else None
        # Windows the next watermark has passed can no longer change: mark them final.
        if result.next_watermark is not None:
            result.windows_finalized = cur.execute(
                "UPDATE window_stats SET is_final = true, updated_at = now() WHERE NOT is_final AND window_end <= ?",
                [result.next_watermark],
            ).fetchall()[0][0]
        self._latency(cur, result)
        # Cumulative: the highest offset done per partition, including partitions idle in this batch.
        result.end_offsets = dict(offsets_before)
        for p, o in cur.execute(
            "SELECT kafka_partition, max(kafka_offset) FROM batch GROUP BY ALL"
        ).fetchall():
            result.end_offsets[str(p)] = max(o, result.end_offsets.get(str(p), -1))
        cur.unregister("batch")
        return result

    def _anomalies(self, cur: duckdb.DuckDBPyConnection, batch_id: int, window_us: int) -> int:
        """Threshold per sensor type, then a z-score against the sensor's recent windows."""
        cur.register("thresholds", self._thresholds)
        history_us = window_us * self.settings.anomaly_history_windows
        inserted = cur.execute(
            """
            INSERT INTO anomalies
            WITH hist AS (
                SELECT s.event_id, avg(w.avg_value) AS mu,
                       sqrt(avg(w.stddev_value * w.stddev_value)) AS sigma, count(*) AS n
                FROM stage s
                JOIN window_stats w
                  ON w.sensor_id = s.sensor_id
                 AND w.window_start < s.window_start
                 AND w.window_start >= s.window_start - to_microseconds($history_us)
                WHERE w.stddev_value IS NOT NULL
                GROUP BY s.event_id
            ), scored AS (
                SELECT s.event_id, s.sensor_id, s.sensor_type, s.event_time, s.value,
                       CASE WHEN s.value > t.high THEN (s.value - t.high) / nullif(t.high - t.low, 0)
                            WHEN s.value < t.low THEN (t.low - s.value) / nullif(t.high - t.low, 0) END AS over,
                       CASE WHEN h.n >= 3 AND h.sigma > 0 THEN abs(s.value - h.mu) / h.sigma END AS z
                FROM stage s
                LEFT JOIN thresholds t ON t.sensor_type = s.sensor_type
                LEFT JOIN hist h ON h.event_id = s.event_id
            )
            SELECT event_id, sensor_id, sensor_type, event_time, value,
                   CASE WHEN over IS NOT NULL THEN 'threshold' ELSE 'zscore' END,
                   CASE WHEN over IS NOT NULL THEN over ELSE z END,
                   $batch_id, now()
            FROM scored
            WHERE over IS NOT NULL OR z > $z
            ON CONFLICT DO NOTHING
            """,
            {"history_us": history_us, "batch_id": batch_id, "z": self.settings.anomaly_zscore},
        ).fetchall()[0][0]
        cur.unregister("thresholds")
        return inserted

    def _latency(self, cur: duckdb.DuckDBPyConnection, result: BatchResult) -> None:
        """Commit time minus event time (and minus Kafka's append time) for this batch's new events."""
        row = cur.execute(
            """
            SELECT quantile_cont(epoch_ms(event_time), [0.5, 0.05]), min(epoch_ms(event_time)),
                   quantile_cont(epoch_ms(kafka_timestamp), [0.5, 0.05]), min(epoch_ms(kafka_timestamp))
            FROM stage WHERE NOT is_late
            """
        ).fetchall()[0]
        now_ms = time.time() * 1000
        if row[0] is not None:
            result.latency_p50_ms, result.latency_p95_ms = (now_ms - q for q in row[0])
            result.latency_max_ms = now_ms - row[1]
        if row[2] is not None:
            result.kafka_latency_p50_ms, result.kafka_latency_p95_ms = (now_ms - q for q in row[2])
            result.kafka_latency_max_ms = now_ms - row[3]

    def _record(self, cur: duckdb.DuckDBPyConnection, r: BatchResult) -> None:
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
                r.batch_id, self.query_name, datetime.now(UTC), r.input_rows, r.valid_rows, r.new_readings, r.duplicate_rows,
                r.late_rows, r.dead_letters, r.anomalies, r.windows_updated, r.windows_finalized, duration_ms,
                r.spark_ms, r.sink_ms, r.input_rows / (duration_ms / 1000) if duration_ms > 0 else None,
                r.latency_p50_ms, r.latency_p95_ms, r.latency_max_ms, r.kafka_latency_p50_ms,
                r.kafka_latency_p95_ms, r.kafka_latency_max_ms, r.watermark, r.max_event_time,
            ],
        )  # fmt: skip
        cur.execute(
            "INSERT INTO sink_commits VALUES (?, ?, now(), ?, ?, ?)",
            [self.query_name, r.batch_id, r.next_watermark, r.max_event_time, json.dumps(r.end_offsets)],
        )

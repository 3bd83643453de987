"""Synthetic store data without Kafka or Spark: one home for what benchmarks and tests write directly.

* :class:`FakeBatchWriter` stands in for the Spark sink: each small batch writes readings,
  upserts the touched windows with absolute values, and records late events, dead letters,
  anomalies, ``pipeline_metrics`` and its ``sink_commits`` ledger row in one transaction
  (``store.db.write_transaction``), as the real sink does; those two rows through the sink's own
  ``sink.ledger``, so they cannot drift from what the sink writes. The store tests and the store
  benchmark use it.
* :func:`prefill` writes a day of history in bulk (readings, final windows, a ledger row by
  ``sink.ledger``), and
  :func:`make_batch` / :func:`old_copies` build Arrow batches shaped like the parser's output, and
  :func:`as_records` turns them into the raw records Spark hands the real sink (``BatchMerger``):
  the steady-state benchmark and its tests use them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa

from sensorstream.sink import ledger
from sensorstream.sink.base import BatchResult
from sensorstream.sink.batch import RAW_SCHEMA
from sensorstream.store.db import write_transaction

SENSOR_TYPES = ("temperature", "humidity", "pressure", "vibration")
SITES = ("plant-a", "plant-b")
QUERY_NAME = "fake-sink"

_READINGS_SQL = """
INSERT INTO readings
SELECT 'b' || $batch || '-' || i AS event_id,
       'sensor-' || lpad(CAST(i % $sensors AS VARCHAR), 4, '0') AS sensor_id,
       $t0 + to_microseconds(CAST(i * $step_us AS BIGINT)) AS event_time,
       20 + 5 * sin(i / 7.0) + (i % 13) / 10.0 AS value,
       ($types)[1 + i % $sensors % len($types)] AS sensor_type,
       'u' AS unit,
       ($sites)[1 + i % $sensors % len($sites)] AS site,
       time_bucket(to_seconds($window), $t0 + to_microseconds(CAST(i * $step_us AS BIGINT))) AS window_start,
       false, i % 3, $offset + i, NULL, $batch, now()
FROM range($n) r(i)
"""
# Absolute values per touched window (never added on top): what a replayed batch must reproduce.
_WINDOWS_SQL = """
INSERT OR REPLACE INTO window_stats (sensor_id, window_start, window_end, sensor_type, site, reading_count,
    avg_value, min_value, max_value, stddev_value, is_final, updated_at)
SELECT sensor_id, window_start, window_start + to_seconds($window), any_value(sensor_type), any_value(site),
       count(*), avg(value), min(value), max(value), stddev_samp(value),
       window_start + to_seconds($window) <= $watermark, now()
FROM readings
WHERE window_start >= $from_window
GROUP BY sensor_id, window_start
"""


@dataclass
class FakeBatchWriter:
    """Writes synthetic micro-batches on the writer's connection; one transaction each."""

    con: duckdb.DuckDBPyConnection
    sensors: int = 20
    rows_per_batch: int = 100
    window: float = 60.0
    lateness: float = 30.0
    event_seconds_per_batch: float = 1.0  # event time each batch covers
    start: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    query_name: str = QUERY_NAME  # another name with batch_id 0 plays a reset checkpoint
    batch_id: int = 0
    offset: int = 0
    stats: list[dict[str, float]] = field(default_factory=list)

    event_time: datetime = field(init=False)  # where the next batch's events start

    def __post_init__(self) -> None:
        self.event_time = self.start

    def _readings(self, cur: duckdb.DuckDBPyConnection, n: int, seconds: float) -> None:
        cur.execute(
            _READINGS_SQL,
            {
                "batch": self.batch_id, "sensors": self.sensors, "t0": self.event_time,
                "step_us": seconds * 1e6 / max(n, 1), "types": list(SENSOR_TYPES), "sites": list(SITES),
                "window": int(self.window), "offset": self.offset, "n": n,
            },
        )  # fmt: skip
        self.offset += n

    def prefill(self, rows: int, chunk: int = 250_000) -> None:
        """Bulk history (e.g. 1 M readings) in big batches, so a benchmark starts on a large table."""
        per_row = self.event_seconds_per_batch / self.rows_per_batch
        while rows > 0:
            n = min(rows, chunk)
            self.write_batch(rows=n, seconds=n * per_row)
            rows -= n

    def write_batch(self, rows: int | None = None, seconds: float | None = None) -> dict[str, float]:
        """One micro-batch in one transaction; returns its timings (lock wait, held, total)."""
        n = self.rows_per_batch if rows is None else rows
        span = self.event_seconds_per_batch if seconds is None else seconds
        t0 = time.perf_counter()
        first_window = _floor(self.event_time, self.window)
        max_event = self.event_time + timedelta(seconds=span)
        watermark = max_event - timedelta(seconds=self.lateness)
        with write_transaction(self.con, f"fake batch {self.batch_id}") as tx:
            cur = tx.cur
            self._readings(cur, n, span)
            cur.execute(
                _WINDOWS_SQL,
                {"window": int(self.window), "watermark": watermark, "from_window": first_window},
            )
            cur.execute(
                "UPDATE window_stats SET is_final = true WHERE NOT is_final AND window_end <= $w",
                {"w": watermark},
            )
            b = self.batch_id
            cur.execute(
                "INSERT INTO late_events VALUES (?, 'sensor-0000', ?, 1.0, ?, ?, 0, ?, ?, now())",
                [f"late-{b}", watermark - timedelta(minutes=5), _floor(watermark - timedelta(minutes=5), self.window),
                 watermark, self.offset, b],
            )  # fmt: skip
            raw = b"\xff\xfe not utf-8" if b % 2 else b'{"event_id": "x"}'
            error = "not_utf8" if b % 2 else "missing_field:sensor_id"
            cur.execute(
                "INSERT INTO dead_letters VALUES ('sensor-data', 0, ?, NULL, ?, ?, ?, now())",
                [self.offset + 1, raw, error, b],
            )
            anomalies = 1 if b % 5 == 0 else 0
            if anomalies:
                cur.execute(
                    "INSERT INTO anomalies VALUES (?, 'sensor-0001', 'humidity', ?, 99.0, ?, 4.5, ?, now())",
                    [f"anom-{b}", max_event, "threshold" if b % 10 else "zscore", b],
                )
            elapsed_ms = (time.perf_counter() - t0) * 1000
            ledger.record(
                cur,
                BatchResult(
                    batch_id=b, query_name=self.query_name, input_rows=n + 2, valid_rows=n, new_readings=n,
                    late_rows=1, dead_letters=1, anomalies=anomalies, windows_updated=self.sensors,
                    watermark=watermark, next_watermark=watermark, max_event_time=max_event,
                    sink_ms=elapsed_ms, end_offsets={"0": self.offset},
                ),
            )  # fmt: skip
        self.batch_id += 1
        self.offset += 2
        self.event_time = max_event
        stat = {
            "batch_id": b,
            "lock_wait_ms": tx.lock_wait_s * 1000,
            "held_ms": tx.held_s * 1000,
            "total_ms": (time.perf_counter() - t0) * 1000,
            "committed_at": time.time(),
        }
        self.stats.append(stat)
        return stat


def _floor(ts: datetime, window: float) -> datetime:
    epoch = ts.timestamp()
    return datetime.fromtimestamp(epoch - epoch % window, UTC)


# A plausible level and swing per type: inside the anomaly thresholds, as a healthy plant is.
LEVELS, SWINGS = [20.0, 50.0, 1013.0, 4.0], [5.0, 10.0, 8.0, 2.0]


# --- pre-fill ------------------------------------------------------------------------------------
def prefill(
    con: duckdb.DuckDBPyConnection,
    rows: int,
    end: datetime,
    *,
    sensors: int = 1000,
    span: timedelta = timedelta(hours=24),
    window_s: int = 60,
    lateness_s: int = 30,
) -> float:
    """``rows`` readings evenly over ``span`` before ``end``, their (final) windows and a ledger row.

    In event-time order and in one statement per table, as the sink would have left them after a
    day; returns the seconds it took.
    """  # fmt: skip
    started = time.perf_counter()
    if rows <= 0:
        return 0.0
    step_us = span.total_seconds() * 1e6 / rows
    t0 = end - span
    con.execute(
        """
        INSERT INTO readings
        SELECT md5('prefill-' || i) AS event_id,
               'sensor-' || lpad(CAST(i % $sensors AS VARCHAR), 5, '0') AS sensor_id,
               $t0 + to_microseconds(CAST(i * $step_us AS BIGINT)) AS event_time,
               ($levels)[1 + i % $sensors % 4] + ($swings)[1 + i % $sensors % 4] * sin(i / 7.0) AS value,
               ($types)[1 + i % $sensors % 4] AS sensor_type, 'u' AS unit, 'plant-a' AS site,
               time_bucket(to_seconds($window), $t0 + to_microseconds(CAST(i * $step_us AS BIGINT))) AS window_start,
               false AS is_late, CAST(i % 3 AS INTEGER) AS kafka_partition, i // 3 AS kafka_offset,
               $t0 + to_microseconds(CAST(i * $step_us AS BIGINT)) AS kafka_timestamp,
               -1 AS batch_id, now() AS ingested_at
        FROM range($rows) r(i)
        """,
        {"rows": rows, "sensors": sensors, "t0": t0, "step_us": step_us, "types": list(SENSOR_TYPES),
         "window": window_s, "levels": LEVELS, "swings": SWINGS},
    )  # fmt: skip
    con.execute(
        """
        INSERT INTO window_stats
        SELECT sensor_id, window_start, window_start + to_seconds($window), any_value(sensor_type),
               any_value(site), count(*), avg(value), min(value), max(value), stddev_samp(value), true, now(),
               var_pop(value) * count(*)
        FROM readings GROUP BY sensor_id, window_start ORDER BY window_start
        """,
        {"window": window_s},
    )
    newest = con.execute("SELECT max(event_time) FROM readings").fetchone()[0]
    ledger.commit(
        con,
        BatchResult(batch_id=0, query_name="prefill", next_watermark=newest - timedelta(seconds=lateness_s),
                    max_event_time=newest, end_offsets={}),
    )  # fmt: skip
    con.execute("CHECKPOINT")
    return time.perf_counter() - started


# --- sink batches --------------------------------------------------------------------------------
def make_batch(
    con: duckdb.DuckDBPyConnection,
    index: int,
    start: datetime,
    *,
    events: int = 20_000,
    sensors: int = 1000,
    window_s: int = 60,
    offset: int = 0,
) -> pa.Table:
    """A batch shaped like the sink parser's output: one second of event time from ``start``.

    1 % exact copies of the previous batch's events, 0.5 % out of order (10 s behind) and 0.1 %
    late (an hour behind).
    """  # fmt: skip
    return con.sql(
        """
        WITH ev AS (
            SELECT i,
                   CASE WHEN i % 100 = 1 AND $index > 0 THEN 'b' || ($index - 1) || '-' || (i + 1)
                        ELSE 'b' || $index || '-' || i END AS event_id,
                   CASE WHEN i % 100 = 1 AND $index > 0  -- the previous batch's event i + 1, resent
                        THEN $start - INTERVAL 1 SECOND + to_microseconds(CAST((i + 1) * 1e6 / $events AS BIGINT))
                        ELSE $start + to_microseconds(CAST(i * 1e6 / $events AS BIGINT)) END
                     - CASE WHEN i % 200 = 3 THEN INTERVAL 10 SECOND WHEN i % 1000 = 7 THEN INTERVAL 1 HOUR
                            ELSE INTERVAL 0 SECOND END AS event_time
            FROM range($events) r(i)
        )
        SELECT 'sensor-data' AS kafka_topic, CAST(i % 3 AS INTEGER) AS kafka_partition,
               CAST($offset + i AS BIGINT) AS kafka_offset, now() AS kafka_timestamp, NULL::BLOB AS kafka_key,
               NULL::BLOB AS raw_value, event_id,
               'sensor-' || lpad(CAST(i % $sensors AS VARCHAR), 5, '0') AS sensor_id,
               ($levels)[1 + i % $sensors % 4] + ($swings)[1 + i % $sensors % 4] * sin(i / 7.0) AS value,
               ($types)[1 + i % $sensors % 4] AS sensor_type, 'u' AS unit, 'plant-a' AS site,
               event_time, NULL::VARCHAR AS error,
               time_bucket(to_seconds($window), event_time) AS window_start
        FROM ev
        """,
        params={"index": index, "start": start, "events": events, "sensors": sensors, "offset": offset,
                "types": list(SENSOR_TYPES), "window": window_s, "levels": LEVELS, "swings": SWINGS},
    ).to_arrow_table()  # fmt: skip


def old_copies(con: duckdb.DuckDBPyConnection, at: datetime, n: int, offset: int) -> pa.Table:
    """``n`` stored readings from around ``at``, resent as new Kafka records: exact copies."""
    cur = con.cursor()  # its own cursor: the caller's may still hold a result
    return cur.sql(
        """
        SELECT 'sensor-data' AS kafka_topic, kafka_partition, CAST($offset + row_number() OVER () AS BIGINT)
                   AS kafka_offset, now() AS kafka_timestamp, NULL::BLOB AS kafka_key, NULL::BLOB AS raw_value,
               event_id, sensor_id, value, sensor_type, unit, site, event_time, NULL::VARCHAR AS error, window_start
        FROM readings WHERE event_time BETWEEN $at AND $at + INTERVAL 10 SECOND LIMIT $n
        """,
        params={"at": at, "n": n, "offset": offset},
    ).to_arrow_table()


def as_records(con: duckdb.DuckDBPyConnection, batch: pa.Table) -> pa.Table:
    """A parsed batch written back as the Kafka records Spark hands the sink (``RAW_SCHEMA``):
    each event as the producer encodes it (compact JSON, the time in UTC with microseconds)."""
    with con.cursor() as cur:  # closed with its registration, one per batch
        cur.register("parsed", batch)
        return (
            cur.sql(
                """
                SELECT kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key,
                       encode(json_object('event_id', event_id, 'sensor_id', sensor_id,
                                          'event_time', strftime(event_time, '%Y-%m-%dT%H:%M:%S.%fZ'),
                                          'value', value, 'sensor_type', sensor_type, 'unit', unit,
                                          'site', site)::VARCHAR) AS raw_value
                FROM parsed
                """
            )
            .to_arrow_table()
            .cast(RAW_SCHEMA)
        )

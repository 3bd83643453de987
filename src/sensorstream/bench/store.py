"""Store benchmark: the writer commits a batch every 100 ms into >= 1 M readings while another
process hammers the read API. Reports query latency, staleness and the writer's batch stall.

:class:`FakeBatchWriter` stands in for the Spark sink (no Kafka, no Spark): each batch writes
readings, upserts the touched windows with absolute values, and records late events, dead
letters, anomalies, pipeline_metrics and its sink_commits ledger row in one transaction under
``writer_lock``, as the real sink does. The store tests use it too.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb

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
INSERT OR REPLACE INTO window_stats
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
            cur.execute(
                "INSERT INTO pipeline_metrics (batch_id, query_name, committed_at, input_rows, valid_rows, "
                "new_readings, duplicate_rows, late_rows, dead_letters, anomalies, windows_updated, "
                "windows_finalized, batch_duration_ms, sink_ms, rows_per_second, watermark, max_event_time) "
                "VALUES (?, ?, now(), ?, ?, ?, 0, 1, 1, ?, ?, 0, ?, ?, ?, ?, ?)",
                [b, QUERY_NAME, n + 2, n, n, anomalies, self.sensors, elapsed_ms, elapsed_ms,
                 n / max(elapsed_ms / 1000, 1e-6), watermark, max_event],
            )  # fmt: skip
            cur.execute(
                "INSERT INTO sink_commits VALUES (?, ?, now(), ?, ?, ?)",
                [QUERY_NAME, b, watermark, max_event, json.dumps({"0": self.offset})],
            )
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


def free_port(low: int = 43000, high: int = 43099, host: str = "127.0.0.1") -> int:
    """A port in our range that nothing listens on right now."""
    for port in range(low, high + 1):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}..{high}")

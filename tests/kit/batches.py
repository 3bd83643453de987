"""Build micro-batches shaped like the sink parser's output (``BATCH_SCHEMA``), for merge tests without Spark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from sensorstream.sink.batch import build_batch, window_start

T0 = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)


class BatchBuilder:
    """Appends events with increasing Kafka offsets; ``take()`` returns them as one batch."""

    def __init__(self, window_seconds: float = 60) -> None:
        """``window_seconds``: the window length (tumbling) or the slide (sliding windows)."""
        self.offset = 0
        self.rows: list[dict] = []
        self.window = window_seconds

    def event(
        self, event_id: str, sensor: str, seconds: float, value: float, sensor_type: str = "temperature"
    ):
        ts = T0 + timedelta(seconds=seconds)
        start = window_start(ts, self.window)
        self._add(event_id=event_id, sensor_id=sensor, value=value, sensor_type=sensor_type, unit="C",
                  site="plant-a", event_time=ts, window_start=start)  # fmt: skip
        return self

    def bad(self, raw: bytes, error: str):
        self._add(raw_value=raw, error=error)
        return self

    def _add(self, **cols) -> None:
        row: dict = {}
        row.update(kafka_topic="sensor-data", kafka_partition=0, kafka_offset=self.offset, kafka_timestamp=T0)
        row.update(cols)
        self.rows.append(row)
        self.offset += 1

    def take(self) -> pa.Table:
        table = build_batch(self.rows)
        self.rows = []
        return table

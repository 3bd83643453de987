"""Helpers shared by the sink parser's tests (no tests here): a raw micro-batch as Spark hands it to
the sink, and the row the plain-Python reference says the parser must make of each record."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pyarrow as pa

from sensorstream.schema import EVENT_FIELDS, Reason, parse_time, validate
from sensorstream.sink.batch import RAW_SCHEMA, window_start

# The parsed row's columns the reference decides: the verdict and every field of the event.
JUDGED = ("error", "raw_value", *(f.name for f in EVENT_FIELDS), "window_start")


def records(values: list[bytes | None], topic: str = "sensor-data", first_offset: int = 0) -> pa.Table:
    """A micro-batch as Spark hands it to the sink: Kafka's coordinates and the message bytes."""
    n = len(values)
    columns = {
        "kafka_topic": [topic] * n,
        "kafka_partition": [0] * n,
        "kafka_offset": list(range(first_offset, first_offset + n)),
        "kafka_timestamp": [None] * n,
        "kafka_key": [None] * n,
        "raw_value": values,
    }
    return pa.table(columns, schema=RAW_SCHEMA)


def reference_row(raw: bytes | None, ranges: dict[str, tuple[float, float]], window: float) -> dict[str, Any]:
    """The ``JUDGED`` columns of the parser's row for ``raw``, as ``schema.validate`` has them.

    A bad record keeps its bytes and reason and no field; a valid one drops its bytes and carries
    its fields, the time in UTC and the value as a double."""
    event, error = validate(raw, ranges) if raw is not None else (None, Reason.NOT_JSON)
    row: dict[str, Any] = dict.fromkeys(JUDGED)
    if event is None:
        return {**row, "error": error, "raw_value": raw}
    row.update({f.name: event.get(f.name) for f in EVENT_FIELDS})
    when = parse_time(event["event_time"])
    assert when is not None
    row["event_time"] = when.astimezone(UTC)
    row["value"] = float(event["value"])
    row["window_start"] = window_start(row["event_time"], window)
    return row

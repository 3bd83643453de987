"""The micro-batch on its way into the store: its columns, declared once.

Spark hands over :data:`RAW_SCHEMA` (each Kafka record's coordinates and bytes, untouched); the
sink's parser (``sink.parse``) turns it into :data:`BATCH_SCHEMA`, exactly these columns in this
order, which the merge's SQL reads by name. Anything that feeds the merge without Spark (the
tests, the alert benchmark) builds its batches here, so it cannot drift from what the job delivers.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from sensorstream.schema import EVENT_FIELDS

_TIME = pa.timestamp("us", tz="UTC")
_ARROW = {"string": pa.string(), "number": pa.float64(), "timestamp": _TIME}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

RAW_SCHEMA = pa.schema(
    [
        ("kafka_topic", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("kafka_timestamp", _TIME),
        ("kafka_key", pa.binary()),
        ("raw_value", pa.binary()),  # the message value as Kafka holds it
    ]
)

# The raw columns first (``raw_value`` then kept for dead letters only), then the parse's.
BATCH_SCHEMA = pa.schema(
    [
        *RAW_SCHEMA,
        *((f.name, _ARROW[f.json_type]) for f in EVENT_FIELDS if f.name != "event_time"),
        ("event_time", _TIME),
        ("error", pa.string()),  # the dead-letter reason; NULL for a valid event
        ("window_start", _TIME),  # the latest window (or slide) holding the event
    ]
)


def window_start(ts: datetime, window_seconds: float) -> datetime:
    """The start of the latest epoch-aligned window of ``window_seconds`` holding ``ts``."""
    return EPOCH + timedelta(microseconds=window_start_us(ts, window_seconds))


def window_start_us(ts: datetime, window_seconds: float) -> int:
    """:func:`window_start` in microseconds since the epoch: also where no ``datetime`` goes (a
    window longer than a day that holds a time early in year 1 starts in year 0)."""
    micros = (ts - EPOCH) // timedelta(microseconds=1)
    return micros - micros % round(window_seconds * 1_000_000)  # integer arithmetic: exact at any date


def build_batch(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """A batch from row dicts; missing columns are NULL."""
    return pa.Table.from_pylist([{name: row.get(name) for name in BATCH_SCHEMA.names} for row in rows],
                                schema=BATCH_SCHEMA)  # fmt: skip

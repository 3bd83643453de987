"""Helpers for the dashboard and Grafana tests (no tests here): a store filled through the real sink."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from kit.batches import BatchBuilder
from sensorstream.config import Settings
from sensorstream.sink.merge import BatchMerger
from sensorstream.store.db import connect

SENSORS = ("sensor-a1", "sensor-a2", "sensor-b1")


def fill_store(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Three batches through ``BatchMerger``: 3 sensors over 3 windows, one threshold anomaly,
    one late event and two dead letters, so every panel has something to draw."""
    merger = BatchMerger(con, settings)
    builder = BatchBuilder(window_seconds=settings.window)
    n = 0
    for second in range(0, 150, 5):
        for i, sensor in enumerate(SENSORS):
            n += 1
            value = 20.0 + i + (second % 30) / 10
            builder.event(
                f"e{n}", sensor, second, value, "humidity" if sensor == "sensor-b1" else "temperature"
            )
    builder.bad(b"{not json", "not_json: Expecting property name")
    merger.merge(0, builder.take())
    # Watermark is now 20:02:25 - 30 s: an event of the 20:00 window is late.
    builder.event("late-1", "sensor-a1", 10, 21.0)
    builder.event("hot-1", "sensor-a2", 151, 95.0)  # above temperature's 60 C threshold
    builder.bad(b"\xff\xfe", "not_utf8: invalid start byte")
    merger.merge(1, builder.take())
    builder.event("e-last", "sensor-a1", 170, 22.5)
    merger.merge(2, builder.take())


@contextmanager
def filled_store(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(settings.db)
    try:
        fill_store(con, settings)
        yield con
    finally:
        con.close()

"""Status classification and formatting: plain functions, no Streamlit, so they are unit-tested."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pandas as pd

from sensorstream.dashboard.data import Health

SENSOR_STATUSES = ("ok", "anomaly", "stale")
STATUS_COLOURS = {"ok": "#2e7d32", "anomaly": "#c62828", "stale": "#757575"}


class Level(StrEnum):
    OK = "ok"  # batches arrive and the API answers
    EMPTY = "empty"  # the store answers but no batch has been committed yet
    STALE = "stale"  # the last batch is older than STALE_AFTER
    NO_STREAM = "no_stream"  # the API is down; the DuckDB file was read directly
    DOWN = "down"  # nothing answers: last known data only


@dataclass(frozen=True)
class PipelineState:
    level: Level
    message: str
    age: float | None = None

    @property
    def banner(self) -> str | None:
        """``"error"``, ``"warning"``, ``"info"`` or ``None``: which Streamlit box shows the message."""
        return {
            Level.DOWN: "error",
            Level.NO_STREAM: "error",
            Level.STALE: "warning",
            Level.EMPTY: "info",
        }.get(self.level)

    @property
    def is_live(self) -> bool:
        return self.level is Level.OK


def pipeline_state(
    health: Health, stale_after: float, api_url: str, now: float | None = None
) -> PipelineState:
    """Classify the pipeline from the store's health; the message says what to do about it."""
    now = time.time() if now is None else now
    age = health.age_now(now)
    if not health.reachable:
        since = time.strftime("%H:%M:%S", time.localtime(health.checked_at))
        known = f"showing the last known data (read at {since})" if age is not None else "no data yet"
        return PipelineState(
            Level.DOWN,
            f"Store unreachable: the read API at {api_url} does not answer and the DuckDB file cannot be "
            f"read; {known}. Is `sensorstream stream` (or `run`) running? ({health.error})",
            age,
        )
    if health.mode == "file":
        last = f"last batch {fmt_age(age)} ago" if age is not None else "no batch committed"
        return PipelineState(
            Level.NO_STREAM,
            f"The stream is not running: its read API at {api_url} does not answer, so this page shows "
            f"the DuckDB file as the stream left it ({last}). Start `sensorstream stream` to go live.",
            age,
        )
    if age is None:
        return PipelineState(
            Level.EMPTY,
            "Waiting for the first micro-batch: the stream is up, no data has been committed yet.",
        )
    if age > stale_after:
        return PipelineState(
            Level.STALE,
            f"Stale: the last batch was committed {fmt_age(age)} ago (SENSORSTREAM_STALE_AFTER = "
            f"{fmt_age(stale_after)}). The stream job may be stuck, or Kafka unreachable.",
            age,
        )
    return PipelineState(Level.OK, f"Live: last batch {fmt_age(age)} ago.", age)


def sensor_status(query_status: Any, state: PipelineState) -> str:
    """A sensor's tile status: the store's ok/anomaly/stale, or stale when the data is not live.

    When no batch arrives (stale pipeline, stream down) a sensor's latest value is not its current
    value, so every tile turns stale; an anomaly is kept, it is still worth seeing.
    """
    status = str(query_status) if query_status in SENSOR_STATUSES else "stale"
    if state.level in (Level.STALE, Level.NO_STREAM, Level.DOWN) and status == "ok":
        return "stale"
    return status


def is_missing(value: Any) -> bool:
    """NULL as it arrives from a frame: None, NaN or NaT."""
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def fmt_number(value: Any, digits: int = 1, unit: str = "") -> str:
    """``"n/a"`` for NULL/NaN (a column monitoring has not filled yet), else a rounded number."""
    if is_missing(value):
        return "n/a"
    number = float(value)
    text = f"{number:,.0f}" if abs(number) >= 1000 or digits == 0 else f"{number:,.{digits}f}"
    return f"{text} {unit}".strip()


def fmt_age(seconds: float | None) -> str:
    if seconds is None or is_missing(seconds):
        return "n/a"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"

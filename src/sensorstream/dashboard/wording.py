"""The page's status and formatting: plain functions, no Streamlit, so they are unit-tested.

The level itself (live, empty, stale, no stream, down) comes from
:func:`sensorstream.monitor.health.classify`, the same classifier ``sensorstream status`` uses;
this module only words it for the banner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sensorstream.dashboard.data import Health
from sensorstream.monitor.health import Level, classify

SENSOR_STATUSES = ("ok", "anomaly", "stale")
STATUS_COLOURS = {"ok": "#2e7d32", "anomaly": "#c62828", "stale": "#757575"}


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
    store = (health.mode or "api") if health.reachable else None
    level = classify(store=store, age=age, stale_after=stale_after)
    if level is Level.DOWN:
        since = time.strftime("%H:%M:%S", time.localtime(health.checked_at))
        known = f"showing the last known data (read at {since})" if age is not None else "no data yet"
        return PipelineState(
            Level.DOWN,
            f"Store unreachable: the read API at {api_url} does not answer and the DuckDB file cannot be "
            f"read; {known}. Is `sensorstream stream` (or `run`) running? ({health.error})",
            age,
        )
    if level is Level.NO_STREAM:
        last = f"last batch {fmt_age(age)} ago" if age is not None else "no batch committed"
        return PipelineState(
            Level.NO_STREAM,
            f"The stream is not running: its read API at {api_url} does not answer, so this page shows "
            f"the DuckDB file as the stream left it ({last}). Start `sensorstream stream` to go live.",
            age,
        )
    if level is Level.EMPTY:
        return PipelineState(
            Level.EMPTY,
            "Waiting for the first micro-batch: the stream is up, no data has been committed yet.",
        )
    if level is Level.STALE:
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


def _hms(value: Any) -> str:
    return "?" if is_missing(value) else pd.Timestamp(value).tz_convert("UTC").strftime("%H:%M:%S")


def sensor_why(row: Any, warmup: int) -> str:
    """One line a person reads under a sensor's tile: why it is red, or what it is judged on.

    ``row`` is a row of the ``sensors`` query (attributes by column name).
    """
    rule, value, since = row.rule, row.rule_value, row.since
    if row.status == "anomaly" and not is_missing(rule):
        expected = f"expected {fmt_number(row.expected_low, 2)}..{fmt_number(row.expected_high, 2)}"
        what = {
            "threshold": f"{fmt_number(value, 2)} outside {fmt_number(row.expected_low, 2)}..{fmt_number(row.expected_high, 2)}",
            "zscore": f"spike {fmt_number(value, 2)}, {expected}",
            "stuck": f"stuck on {fmt_number(value, 2)} for {fmt_number(row.rule_score, 0)} readings",
            "drift": f"drifting ({fmt_number(row.rule_score, 1)} sigma of evidence), {expected}",
        }.get(str(rule), f"{rule} {fmt_number(value, 2)}")
        return f"{what} since {_hms(since)} UTC"
    if not is_missing(row.baseline_readings) and int(row.baseline_readings) < warmup:
        return f"warming up: {int(row.baseline_readings)}/{warmup} readings"
    if not is_missing(row.last_anomaly_time):
        return f"last anomaly {_hms(row.last_anomaly_time)} UTC ({rule})"
    return f"normal {fmt_number(row.baseline_mean, 2)} +- {fmt_number(row.baseline_sigma, 2)}"

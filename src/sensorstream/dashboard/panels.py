"""The dashboard's panels: each draws one section from query answers. No data access here.

Every panel has an empty state (before the first batch, or a filter that matches nothing) and
says when it shows last known data rather than a fresh answer.
"""

from __future__ import annotations

import html
import time

import pandas as pd
import streamlit as st

from sensorstream.dashboard import charts
from sensorstream.dashboard.data import Answer, Filters
from sensorstream.dashboard.wording import (
    STATUS_COLOURS,
    PipelineState,
    fmt_age,
    fmt_number,
    is_missing,
    sensor_status,
    sensor_why,
)


def freshness(*answers: Answer) -> None:
    """A caption under a panel whose data is not fresh (store unreachable or a refused query)."""
    stale = [a for a in answers if not a.fresh]
    if not stale:
        return
    read = [a.read_at for a in stale if a.read_at is not None]
    if read:
        when = time.strftime("%H:%M:%S", time.localtime(min(read)))
        st.caption(f":orange[last known data, read at {when}]")
    else:
        errors = {a.error for a in stale if a.error}
        st.caption(":orange[no data could be read]" + (f": {next(iter(errors))}" if errors else ""))


def chart(figure: object, empty: str) -> None:
    if figure is None:
        st.info(empty)
    else:
        st.altair_chart(figure, width="stretch")


# --- banner and headline numbers -------------------------------------------------------------------
def banner(state: PipelineState) -> None:
    box = {"error": st.error, "warning": st.warning, "info": st.info}.get(state.banner or "")
    if box is not None:
        box(state.message)
    else:
        st.caption(f":green[●] {state.message}")


def headline(totals: Answer, sensors: Answer, state: PipelineState) -> None:
    row = totals.frame.iloc[0] if len(totals.frame) else pd.Series(dtype=object)
    cols = st.columns(6)
    cols[0].metric("Sensors", len(sensors.frame))
    cols[1].metric("Readings", fmt_number(row.get("new_readings"), 0))
    cols[2].metric("Anomalies", fmt_number(row.get("anomalies"), 0))
    cols[3].metric("Late events", fmt_number(row.get("late"), 0))
    cols[4].metric("Dead letters", fmt_number(row.get("dead"), 0))
    cols[5].metric("Last batch age", fmt_age(state.age))
    freshness(totals, sensors)


# --- current state ---------------------------------------------------------------------------------
_TILE_CSS = """
<style>
.ss-grid {display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px;}
.ss-tile {border-radius: 6px; padding: 8px 10px; color: white; line-height: 1.25;}
.ss-tile .id {font-weight: 600; font-size: 0.9rem;}
.ss-tile .v {font-size: 1.35rem; font-weight: 700;}
.ss-tile .meta {font-size: 0.75rem; opacity: 0.9;}
.ss-tile .why {font-size: 0.72rem; margin-top: 3px; opacity: 0.95;}
</style>
"""


def state_grid(sensors: Answer, filters: Filters, state: PipelineState, warmup: int) -> None:
    """Latest value per sensor, one coloured tile each (ok / anomaly / stale), and why."""
    frame = sensors.frame
    if filters.sensor_id:
        frame = frame[frame["sensor_id"] == filters.sensor_id]
    if frame.empty:
        st.info("No sensor has reported yet." if sensors.frame.empty else "No sensor matches the filters.")
        freshness(sensors)
        return
    tiles = []
    counts = {"ok": 0, "anomaly": 0, "stale": 0}
    for row in frame.itertuples(index=False):
        status = sensor_status(row.status, state)
        counts[status] += 1
        value = row.last_value if not is_missing(row.last_value) else row.last_window_avg
        meta = " · ".join(str(v) for v in (row.sensor_type, row.site) if not is_missing(v))
        why = sensor_why(row, warmup)
        # Sensor ids, types and sites come from Kafka messages: escape them before they become HTML.
        tiles.append(
            f'<div class="ss-tile" data-status="{status}" title="{html.escape(why)}" '
            f'style="background:{STATUS_COLOURS[status]}">'
            f'<div class="id">{html.escape(str(row.sensor_id))}</div>'
            f'<div class="v">{html.escape(fmt_number(value, 2))}</div>'
            f'<div class="meta">{html.escape(meta)} · {status}</div>'
            f'<div class="why">{html.escape(why)}</div></div>'
        )
    st.caption(" · ".join(f"{n} {status}" for status, n in counts.items()))
    st.markdown(_TILE_CSS + '<div class="ss-grid">' + "".join(tiles) + "</div>", unsafe_allow_html=True)
    freshness(sensors)


# --- time series -----------------------------------------------------------------------------------
def series(windows: Answer, anomalies: Answer) -> None:
    """Small multiples: one chart per sensor, its own y range, the anomalies marked on it."""
    frame = windows.frame
    figures = charts.window_series(frame, anomalies.frame)
    if not figures:
        st.info("No windows in this range yet.")
    for figure in figures:
        st.altair_chart(figure, width="stretch")
    if not frame.empty and frame["sensor_id"].nunique() > charts.MAX_SERIES:
        st.caption(
            f"Showing {charts.MAX_SERIES} of {frame['sensor_id'].nunique()} sensors; "
            "pick a sensor, type or site in the sidebar to narrow it down."
        )
    freshness(windows, anomalies)


def raw(
    readings: Answer | None,
    sensor: Answer | None,
    anomalies: Answer | None,
    sensor_id: str | None,
    minutes: float,
    z: float,
) -> None:
    """One sensor's readings as they arrive, over the band its next reading is judged against."""
    if sensor_id is None or readings is None or sensor is None or anomalies is None:
        st.info("No sensor has reported yet.")
        return
    figure = charts.raw_readings(readings.frame, sensor.frame, anomalies.frame, z)
    chart(figure, f"No readings from {sensor_id} in the last {minutes:g} minutes.")
    st.caption(
        f"{sensor_id}, last {minutes:g} minutes of event time. The band is the sensor's baseline "
        "(mean +- ANOMALY_ZSCORE sigma of its recent normal readings); red points are anomalies."
    )
    freshness(readings, sensor, anomalies)


# --- anomalies -------------------------------------------------------------------------------------
def anomalies(feed: Answer, counts: Answer) -> None:
    if counts.frame.empty:
        st.info("No anomalies in this range.")
    else:
        top = int(counts.frame["anomalies"].max())
        st.dataframe(
            counts.frame[["rule", "anomalies", "sensors", "max_score"]],
            hide_index=True,
            height=_table_height(len(counts.frame)),
            column_config={
                "anomalies": st.column_config.ProgressColumn(
                    "anomalies", format="%d", min_value=0, max_value=top
                ),
                "max_score": st.column_config.NumberColumn("max score", format="%.2f"),
            },
        )
    if not feed.frame.empty:
        st.dataframe(
            feed.frame[["event_time", "sensor_id", "sensor_type", "rule", "value", "score"]],
            hide_index=True,
            height=_table_height(len(feed.frame)),
            column_config={
                "event_time": st.column_config.DatetimeColumn(
                    "event time (UTC)", format="YYYY-MM-DD HH:mm:ss"
                ),
                "value": st.column_config.NumberColumn(format="%.3f"),
                "score": st.column_config.NumberColumn(format="%.2f"),
            },
        )
    freshness(feed, counts)


# --- data quality ----------------------------------------------------------------------------------
def quality(late: Answer, dead: Answer, reasons: Answer) -> None:
    chart(charts.quality_over_time(late.frame, dead.frame), "No late events or dead letters in this range.")
    if not reasons.frame.empty:
        st.markdown("**Top dead-letter reasons**")
        st.dataframe(
            reasons.frame[["reason", "dead_letters", "sample_error", "sample_raw"]],
            hide_index=True,
            height=_table_height(len(reasons.frame)),
        )
    freshness(late, dead, reasons)


# --- pipeline health -------------------------------------------------------------------------------
def health(rates: Answer, state: PipelineState) -> None:
    frame = rates.frame
    last = frame.iloc[-1] if len(frame) else pd.Series(dtype=object)
    cols = st.columns(7)
    # Units in the labels: a value with its unit does not fit a seventh of the page.
    cols[0].metric("Input rows/s", fmt_number(last.get("input_rate"), 1))
    cols[1].metric("Processed rows/s", fmt_number(last.get("processing_rate"), 1))
    cols[2].metric("Batch duration (ms)", fmt_number(last.get("batch_duration_ms"), 0))
    cols[3].metric("Latency p50 (s)", fmt_number(_seconds(last.get("latency_p50_ms")), 2))
    cols[4].metric("Latency p95 (s)", fmt_number(_seconds(last.get("latency_p95_ms")), 2))
    cols[5].metric("Consumer lag", fmt_number(last.get("consumer_lag"), 0))
    cols[6].metric("Last batch age", fmt_age(state.age))
    left, right = st.columns(2)
    with left:
        chart(charts.rates(frame), "No batches yet.")
    with right:
        chart(charts.latency(frame), "No batches yet.")
    freshness(rates)


def _seconds(ms: object) -> float | None:
    return None if is_missing(ms) else float(ms) / 1000  # type: ignore[arg-type]


def _table_height(rows: int, most: int = 8) -> int:
    # Fit the rows (no blank grid under a short table), scroll beyond ``most``.
    return 38 + 35 * max(1, min(rows, most))

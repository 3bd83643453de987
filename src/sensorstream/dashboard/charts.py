"""Altair charts for the dashboard. Each takes a query's frame and returns a chart (or None if empty)."""

from __future__ import annotations

import altair as alt
import pandas as pd

# More lines than this in one chart is unreadable; the caption says so and the filter narrows it.
MAX_SERIES = 12


# Times read as UTC on a 24-hour clock whatever the browser's zone: Vega's own multi-format would
# show 17:12 UTC as "05:12" (a 12-hour clock without AM/PM) in the viewer's local time.
TIME_AXIS = alt.Axis(format="%H:%M", labelOverlap=True)


def _utc_scale(domain: list[str] | None = None) -> alt.Scale:
    return alt.Scale(type="utc", domain=domain) if domain else alt.Scale(type="utc")


def _time(field: str, title: str = "time (UTC)") -> alt.X:
    return alt.X(f"{field}:T", title=title, scale=_utc_scale(), axis=TIME_AXIS)


def _time_tip(field: str, title: str, fmt: str = "%H:%M:%S") -> alt.Tooltip:
    return alt.Tooltip(f"{field}:T", title=title, format=fmt, formatType="utc")


def window_series(frame: pd.DataFrame) -> list[alt.LayerChart]:
    """Per-sensor window averages as lines over a min..max band (rows of ``latest_windows``).

    One chart per sensor type, each with its own y scale (pressure near 1000 hPa and vibration
    near 2 mm/s on one axis would flatten every line) and all with the same time axis.
    """
    if frame.empty:
        return []
    keep = sorted(frame["sensor_id"].unique())[:MAX_SERIES]
    columns = [
        "sensor_id",
        "sensor_type",
        "window_start",
        "avg_value",
        "min_value",
        "max_value",
        "reading_count",
        "is_final",
    ]
    data = frame[frame["sensor_id"].isin(keep)][columns].assign(
        sensor_type=lambda d: d["sensor_type"].fillna("(no type)")
    )
    domain = [data["window_start"].min().isoformat(), data["window_start"].max().isoformat()]
    return [
        _type_series(data[data["sensor_type"] == kind], kind, domain)
        for kind in sorted(data["sensor_type"].unique())
    ]


def _type_series(data: pd.DataFrame, kind: str, domain: list[str]) -> alt.LayerChart:
    base = alt.Chart(data, title=alt.Title(kind, anchor="start", fontSize=13)).encode(
        x=alt.X("window_start:T", title="window start (UTC)", scale=_utc_scale(domain), axis=TIME_AXIS),
        color=alt.Color("sensor_id:N", title=None, legend=alt.Legend(orient="bottom")),
    )
    band = base.mark_area(opacity=0.15).encode(
        y=alt.Y("min_value:Q", title="avg (min..max)", scale=alt.Scale(zero=False)),
        y2="max_value:Q",
    )
    line = base.mark_line(point=len(data) <= 300).encode(
        y="avg_value:Q",
        tooltip=[
            "sensor_id:N",
            _time_tip("window_start", "window start (UTC)", "%Y-%m-%d %H:%M:%S"),
            alt.Tooltip("avg_value:Q", format=".3f"),
            alt.Tooltip("min_value:Q", format=".3f"),
            alt.Tooltip("max_value:Q", format=".3f"),
            "reading_count:Q",
            "is_final:N",
        ],
    )
    return (band + line).properties(height=200)


def quality_over_time(late: pd.DataFrame, dead: pd.DataFrame) -> alt.Chart | None:
    """Late events and dead letters per arrival bucket, side by side (``*_over_time`` queries)."""
    parts = []
    if not late.empty:
        parts.append(
            late[["bucket_start", "late_events"]].rename(columns={"late_events": "count"}).assign(kind="late")
        )
    if not dead.empty:
        parts.append(
            dead[["bucket_start", "dead_letters"]]
            .rename(columns={"dead_letters": "count"})
            .assign(kind="dead letter")
        )
    if not parts:
        return None
    data = pd.concat(parts, ignore_index=True)
    return (
        alt.Chart(data)
        .mark_bar(opacity=0.85)
        .encode(
            x=_time("bucket_start", "arrival (UTC)"),
            y=alt.Y("count:Q", title="events", stack=True),
            color=alt.Color(
                "kind:N",
                title=None,
                scale=alt.Scale(domain=["late", "dead letter"], range=["#ef6c00", "#6a1b9a"]),
            ),
            tooltip=[_time_tip("bucket_start", "arrival (UTC)"), "kind:N", "count:Q"],
        )
        .properties(height=220)
    )


def _long(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    return frame.melt(
        id_vars=["committed_at"], value_vars=list(columns), var_name="series", value_name="value"
    ).assign(series=lambda d: d["series"].map(columns))


def rates(frame: pd.DataFrame) -> alt.Chart | None:
    """Input and processing rate per batch (``pipeline_rates``)."""
    if frame.empty:
        return None
    data = _long(frame, {"input_rate": "input rows/s", "processing_rate": "processed rows/s"}).dropna()
    return _lines(data, "rows/s")


def latency(frame: pd.DataFrame) -> alt.Chart | None:
    """Event->commit latency p50/p95 and batch duration, in seconds."""
    if frame.empty:
        return None
    seconds = frame.assign(
        latency_p50_ms=frame["latency_p50_ms"] / 1000,
        latency_p95_ms=frame["latency_p95_ms"] / 1000,
        batch_duration_ms=frame["batch_duration_ms"] / 1000,
    )
    data = _long(
        seconds,
        {
            "latency_p50_ms": "latency p50",
            "latency_p95_ms": "latency p95",
            "batch_duration_ms": "batch duration",
        },
    ).dropna()
    return _lines(data, "seconds")


def _lines(data: pd.DataFrame, title: str) -> alt.Chart | None:
    if data.empty:
        return None
    return (
        alt.Chart(data)
        .mark_line()
        .encode(
            x=_time("committed_at", "commit (UTC)"),
            y=alt.Y("value:Q", title=title),
            color=alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom")),
            tooltip=[
                _time_tip("committed_at", "commit (UTC)"),
                "series:N",
                alt.Tooltip("value:Q", format=",.2f"),
            ],
        )
        .properties(height=200)
    )

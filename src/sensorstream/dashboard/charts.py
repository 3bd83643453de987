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


def window_series(frame: pd.DataFrame, anomalies: pd.DataFrame | None = None) -> list[alt.FacetChart]:
    """Small multiples of window averages over a min..max band, with the anomalies marked.

    One chart per sensor type, one small panel per sensor with its own y range: sensors of a type
    sit at different levels (one plant at 18 C, another at 24 C), and on a shared axis each line is
    flat. Anomalies (``anomalies_recent`` rows) are red points at their reading's time and value.
    """
    if frame.empty:
        return []
    keep = sorted(frame["sensor_id"].unique())[:MAX_SERIES]
    windows = frame[frame["sensor_id"].isin(keep)]
    parts = [
        windows[["sensor_id", "sensor_type", "window_start", "avg_value", "min_value", "max_value",
                 "reading_count", "is_final"]].rename(columns={"window_start": "t"}).assign(kind="window")
    ]  # fmt: skip
    if anomalies is not None and not anomalies.empty:
        marks = anomalies[anomalies["sensor_id"].isin(keep)]
        start = windows["window_start"].min()
        marks = marks[marks["event_time"] >= start]
        parts.append(
            marks[["sensor_id", "sensor_type", "event_time", "value", "rule"]]
            .rename(columns={"event_time": "t"})
            .assign(kind="anomaly")
        )
    data = pd.concat(parts, ignore_index=True).assign(
        sensor_type=lambda d: d["sensor_type"].fillna("(no type)")
    )
    domain = [data["t"].min().isoformat(), data["t"].max().isoformat()]
    return [
        _small_multiples(data[data["sensor_type"] == kind], kind, domain)
        for kind in sorted(data["sensor_type"].unique())
    ]


def _small_multiples(data: pd.DataFrame, kind: str, domain: list[str]) -> alt.FacetChart:
    x = alt.X("t:T", title=None, scale=_utc_scale(domain), axis=TIME_AXIS)
    windows = alt.Chart().transform_filter(alt.datum.kind == "window").encode(x=x)
    band = windows.mark_area(opacity=0.2, color="#1e88e5").encode(
        y=alt.Y("min_value:Q", title=None, scale=alt.Scale(zero=False)), y2="max_value:Q"
    )
    line = windows.mark_line(color="#1e88e5", point=alt.OverlayMarkDef(size=12)).encode(
        y="avg_value:Q",
        tooltip=[
            "sensor_id:N",
            _time_tip("t", "window start (UTC)", "%Y-%m-%d %H:%M:%S"),
            alt.Tooltip("avg_value:Q", title="avg", format=".3f"),
            alt.Tooltip("min_value:Q", title="min", format=".3f"),
            alt.Tooltip("max_value:Q", title="max", format=".3f"),
            alt.Tooltip("reading_count:Q", title="readings"),
            alt.Tooltip("is_final:N", title="final"),
        ],
    )
    marks = (
        alt.Chart()
        .transform_filter(alt.datum.kind == "anomaly")
        .mark_point(color="#c62828", filled=True, size=45, shape="diamond")
        .encode(
            x=x,
            y="value:Q",
            tooltip=[
                "sensor_id:N",
                _time_tip("t", "reading (UTC)"),
                "rule:N",
                alt.Tooltip("value:Q", format=".3f"),
            ],
        )
    )
    panels = min(4, max(1, data["sensor_id"].nunique()))
    return (
        alt.layer(band, line, marks, data=data)
        .properties(width=900 // panels - 40, height=130)
        .facet(
            facet=alt.Facet("sensor_id:N", title=None), columns=panels, title=alt.Title(kind, anchor="start")
        )
        .resolve_scale(y="independent")
    )


def raw_readings(
    readings: pd.DataFrame, sensor: pd.DataFrame, anomalies: pd.DataFrame, z: float = 5.0
) -> alt.LayerChart | None:
    """One sensor's raw readings over its baseline band (mean +- z sigma), anomalies in red."""
    if readings.empty:
        return None
    x = alt.X("event_time:T", title="event time (UTC)", scale=_utc_scale(), axis=TIME_AXIS)
    layers: list[alt.Chart] = []
    row = sensor.iloc[0] if len(sensor) else None
    if row is not None and pd.notna(row.get("baseline_mean")) and pd.notna(row.get("baseline_sigma")):
        mean, sigma = float(row["baseline_mean"]), float(row["baseline_sigma"])
        bounds = pd.DataFrame({"low": [mean - z * sigma], "high": [mean + z * sigma]})
        layers.append(
            alt.Chart(bounds).mark_rect(opacity=0.12, color="#2e7d32").encode(y="low:Q", y2="high:Q")
        )
    layers.append(
        alt.Chart(readings[["event_time", "value"]])
        .mark_line(color="#1e88e5", strokeWidth=1)
        .encode(
            x=x,
            y=alt.Y("value:Q", title="value", scale=alt.Scale(zero=False)),
            tooltip=[
                _time_tip("event_time", "event time (UTC)", "%H:%M:%S.%L"),
                alt.Tooltip("value:Q", format=".3f"),
            ],
        )
    )
    if not anomalies.empty:
        start = readings["event_time"].min()
        marks = anomalies[anomalies["event_time"] >= start][["event_time", "value", "rule", "score"]]
        layers.append(
            alt.Chart(marks)
            .mark_point(color="#c62828", filled=True, size=70, shape="diamond")
            .encode(
                x=x,
                y="value:Q",
                tooltip=[
                    _time_tip("event_time", "event time (UTC)", "%H:%M:%S.%L"),
                    "rule:N",
                    alt.Tooltip("value:Q", format=".3f"),
                    alt.Tooltip("score:Q", format=".2f"),
                ],
            )
        )
    return alt.layer(*layers).properties(height=260)


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

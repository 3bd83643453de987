"""What the charts promise a person: every time axis in UTC on a 24-hour clock, whatever the browser's zone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd

from sensorstream.dashboard import charts

T = pd.to_datetime(["2026-11-27T17:12:00Z", "2026-11-27T17:13:00Z"])


def _temporal(spec: Any) -> Iterator[dict]:
    """Every temporal encoding (axes and tooltips) anywhere in a Vega-Lite spec."""
    if isinstance(spec, dict):
        if spec.get("type") == "temporal":
            yield spec
        for value in spec.values():
            yield from _temporal(value)
    elif isinstance(spec, list):
        for value in spec:
            yield from _temporal(value)


def _all_charts() -> list:
    windows = pd.DataFrame({"sensor_id": ["s1", "s1"], "sensor_type": ["temperature"] * 2, "window_start": T,
                            "avg_value": [1.0, 2.0], "min_value": [0.5, 1.5], "max_value": [1.5, 2.5],
                            "reading_count": [3, 3], "is_final": [True, False]})  # fmt: skip
    metrics = pd.DataFrame({"committed_at": T, "input_rate": [1.0, 2.0], "processing_rate": [1.0, 2.0],
                            "latency_p50_ms": [900.0, 950.0], "latency_p95_ms": [1200.0, 1300.0],
                            "batch_duration_ms": [400.0, 420.0]})  # fmt: skip
    buckets = pd.DataFrame({"bucket_start": T, "late_events": [1, 2], "dead_letters": [0, 1]})
    anomalies = pd.DataFrame({"sensor_id": ["s1"], "sensor_type": ["temperature"], "event_time": T[1:],
                              "value": [9.0], "rule": ["zscore"], "score": [7.5]})  # fmt: skip
    readings = pd.DataFrame({"event_time": T, "value": [1.0, 9.0]})
    sensor = pd.DataFrame({"sensor_id": ["s1"], "baseline_mean": [1.0], "baseline_sigma": [0.2]})
    return [
        *charts.window_series(windows, anomalies),
        charts.raw_readings(readings, sensor, anomalies, z=5.0),
        charts.rates(metrics),
        charts.latency(metrics),
        charts.quality_over_time(buckets, buckets),
    ]


def test_every_time_axis_and_tooltip_is_utc_on_a_24_hour_clock():
    found = 0
    for chart in _all_charts():
        for enc in _temporal(chart.to_dict()):
            found += 1
            if "axis" in enc:  # an x axis
                assert enc["scale"]["type"] == "utc" and enc["axis"]["format"].startswith("%H"), enc
            else:  # a tooltip
                assert enc["formatType"] == "utc" and "%H" in enc["format"] and "%I" not in enc["format"], enc
    assert found >= 12


def test_each_sensor_gets_its_own_panel_and_y_range_with_its_anomalies_marked():
    windows = pd.DataFrame({"sensor_id": ["s1", "s2"], "sensor_type": ["temperature"] * 2, "window_start": T,
                            "avg_value": [18.0, 24.0], "min_value": [17.5, 23.5], "max_value": [18.5, 24.5],
                            "reading_count": [3, 3], "is_final": [True, False]})  # fmt: skip
    anomalies = pd.DataFrame({"sensor_id": ["s2"], "sensor_type": ["temperature"], "event_time": T[1:],
                              "value": [40.0], "rule": ["zscore"], "score": [9.0]})  # fmt: skip
    (chart,) = charts.window_series(windows, anomalies)
    spec = chart.to_dict()
    assert spec["facet"]["field"] == "sensor_id" and spec["resolve"]["scale"]["y"] == "independent"
    marked = [r for r in spec["datasets"][next(iter(spec["datasets"]))] if r["kind"] == "anomaly"]
    assert [(r["sensor_id"], r["value"], r["rule"]) for r in marked] == [("s2", 40.0, "zscore")]


def test_the_live_view_draws_the_band_a_reading_is_judged_against():
    readings = pd.DataFrame({"event_time": T, "value": [20.0, 20.1]})
    sensor = pd.DataFrame({"sensor_id": ["s1"], "baseline_mean": [20.0], "baseline_sigma": [0.3]})
    spec = charts.raw_readings(
        readings, sensor, readings.iloc[0:0].assign(rule=[], score=[]), z=5.0
    ).to_dict()
    bands = [d for d in spec["datasets"].values() if d and "low" in d[0]]
    assert bands == [[{"low": 18.5, "high": 21.5}]]

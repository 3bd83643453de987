"""The dashboard's logic: query parameters, status classification, and the page under AppTest.

AppTest runs ``app.py`` in this process against a store served by ``ReadApi`` over a DuckDB file
filled by the real sink (``BatchMerger``), as the stream's process would serve it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from kit.dashboard import SENSORS, filled_store
from sensorstream.config import Settings, settings_env
from sensorstream.dashboard import launch
from sensorstream.dashboard.data import Filters, Health, LastKnown, query_params
from sensorstream.dashboard.wording import (
    Level,
    fmt_age,
    fmt_number,
    pipeline_state,
    sensor_status,
    sensor_why,
)
from sensorstream.procs import port_in_use
from sensorstream.serve.api import ReadApi
from sensorstream.serve.client import StoreClient
from sensorstream.store.db import connect
from sensorstream.tools.ports import free_port, free_ports

APP = str(launch.APP)
API = "http://127.0.0.1:1"


# --- query parameters --------------------------------------------------------------------------------
def test_filters_reach_only_the_queries_that_take_them():
    f = Filters(sensor_id="s1", sensor_type="temperature", site="plant-a", minutes=15)
    assert query_params("latest_windows", f, limit=10_000) == {
        "sensor_id": "s1", "sensor_type": "temperature", "site": "plant-a", "since": 15, "limit": 10_000,
    }  # fmt: skip
    assert query_params("sensors", f) == {"sensor_type": "temperature", "site": "plant-a"}
    assert query_params("anomaly_counts", f) == {"since": 15}
    assert query_params("late_over_time", f) == {"since": 15, "bucket_seconds": 15}
    assert query_params("totals", f) == {}


def test_all_and_everything_mean_no_parameter_at_all():
    f = Filters(minutes=None)
    assert query_params("latest_windows", f) == {}
    assert query_params("dead_letters_over_time", f) == {"bucket_seconds": 300}
    assert Filters(minutes=60).bucket_seconds == 60  # about 60 buckets over the range


# --- status classification ---------------------------------------------------------------------------
def _state(**health) -> Level:
    return pipeline_state(Health(**health), stale_after=30, api_url=API, now=health.get("checked_at")).level


def test_pipeline_state_classification():
    now = time.time()
    assert _state(reachable=True, mode="api", last_batch_age=2.0, checked_at=now) is Level.OK
    assert _state(reachable=True, mode="api", last_batch_age=None, checked_at=now) is Level.EMPTY
    assert _state(reachable=True, mode="api", last_batch_age=31.0, checked_at=now) is Level.STALE
    assert _state(reachable=True, mode="file", last_batch_age=2.0, checked_at=now) is Level.NO_STREAM
    assert _state(reachable=False, last_batch_age=2.0, checked_at=now, error="refused") is Level.DOWN


def test_an_unreachable_store_ages_the_last_known_batch():
    health = Health(reachable=False, last_batch_age=10.0, checked_at=1000.0, error="refused")
    state = pipeline_state(health, stale_after=30, api_url=API, now=1025.0)
    assert state.age == pytest.approx(35.0)
    assert state.banner == "error" and "Store unreachable" in state.message and API in state.message


def test_sensor_tiles_go_stale_when_the_data_is_not_live():
    live = pipeline_state(Health(reachable=True, mode="api", last_batch_age=1.0), 30, API)
    stale = pipeline_state(Health(reachable=True, mode="api", last_batch_age=99.0), 30, API)
    assert [sensor_status(s, live) for s in ("ok", "anomaly", "stale", None)] == [
        "ok",
        "anomaly",
        "stale",
        "stale",
    ]
    assert [sensor_status(s, stale) for s in ("ok", "anomaly")] == ["stale", "anomaly"]


def test_a_tile_says_why_a_sensor_is_red_or_what_it_is_judged_on():
    row = pd.Series({"status": "anomaly", "rule": "zscore", "rule_value": 35.0, "rule_score": 50.0,
                     "expected_low": 18.5, "expected_high": 21.5, "since": pd.Timestamp("2026-11-27T17:12:03Z"),
                     "last_anomaly_time": pd.Timestamp("2026-11-27T17:12:03Z"), "baseline_readings": 400,
                     "baseline_mean": 20.0, "baseline_sigma": 0.3})  # fmt: skip
    assert sensor_why(row, 30) == "spike 35.00, expected 18.50..21.50 since 17:12:03 UTC"
    stuck = row.copy()
    stuck.update({"rule": "stuck", "rule_value": 20.12, "rule_score": 25})
    assert sensor_why(stuck, 30) == "stuck on 20.12 for 25 readings since 17:12:03 UTC"
    cleared = row.copy()
    cleared["status"] = "ok"
    assert sensor_why(cleared, 30) == "last anomaly 17:12:03 UTC (zscore)"
    new = pd.Series({"status": "ok", "rule": None, "rule_value": None, "since": None,
                     "last_anomaly_time": None, "baseline_readings": 12, "baseline_mean": 20.0,
                     "baseline_sigma": 0.3})  # fmt: skip
    assert sensor_why(new, 30) == "warming up: 12/30 readings"
    new["baseline_readings"] = 40
    assert sensor_why(new, 30) == "normal 20.00 +- 0.30"


def test_null_numbers_show_as_n_a():
    assert fmt_number(None) == fmt_number(float("nan")) == fmt_number(pd.NA) == "n/a"
    assert (
        fmt_number(1234.5, 0, "rows/s") == "1,234 rows/s" or fmt_number(1234.5, 0, "rows/s") == "1,235 rows/s"
    )
    assert fmt_number(2.345, 2, "s") == "2.35 s" or fmt_number(2.345, 2, "s") == "2.34 s"
    assert (fmt_age(None), fmt_age(5), fmt_age(120)) == ("n/a", "5.0 s", "2.0 min")


# --- data access ---------------------------------------------------------------------------------------
def test_last_known_answers_when_the_store_goes_away(make_settings):
    settings = make_settings(api_port=free_port())
    cache = LastKnown()
    with filled_store(settings) as con, ReadApi(con, settings), StoreClient(settings) as client:
        first = cache.fetch(client, "totals", {})
    # API stopped and the file is gone: the client can read nothing.
    settings.db.unlink()
    with StoreClient(settings) as client:
        again = cache.fetch(client, "totals", {})
        never = cache.fetch(client, "sensors", {})
    assert first.fresh and int(first.frame["new_readings"][0]) == 93
    assert not again.fresh and again.read_at == first.read_at and again.frame.equals(first.frame)
    assert again.error and "does not answer" in again.error
    assert never.frame.empty and "sensor_id" in never.frame.columns and never.read_at is None


# --- the page under AppTest -----------------------------------------------------------------------------
@pytest.fixture
def app_env(monkeypatch, make_settings):
    """Settings for the page, also put in the environment the way `sensorstream dashboard` passes them."""

    def _env(**overrides) -> Settings:
        settings = make_settings(api_port=free_port(), dashboard_refresh=1, **overrides)
        for key, value in settings_env(settings, base={}).items():
            monkeypatch.setenv(key, value)
        return settings

    return _env


def run_page(at: AppTest | None = None) -> AppTest:
    at = at or AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def tiles(at: AppTest) -> str:
    return "".join(m.value for m in at.markdown if "ss-grid" in m.value)


@contextmanager
def serving(settings: Settings) -> Iterator:
    with filled_store(settings) as con, ReadApi(con, settings):
        yield con


def test_the_page_shows_the_store(app_env):
    settings = app_env()
    with serving(settings):
        at = run_page()
    assert not at.error and not at.warning
    assert metric(at, "Readings") == "93" and metric(at, "Dead letters") == "2"
    assert metric(at, "Late events") == "1" and metric(at, "Anomalies") == "1"
    assert metric(at, "Consumer lag") == "n/a"  # monitoring did not run: the column is NULL
    grid = tiles(at)
    assert all(s in grid for s in SENSORS)
    assert 'data-status="anomaly"' in grid and 'data-status="ok"' in grid
    assert len(at.get("vega_lite_chart")) >= 4  # series, quality, rates, latency
    assert set(at.sidebar.selectbox[0].options) == {"All", *SENSORS}


def test_a_filter_changes_what_is_shown(app_env):
    settings = app_env()
    with serving(settings):
        at = run_page()
        at.sidebar.selectbox(key="f_sensor").set_value("sensor-a2")
        run_page(at)
        one = tiles(at)
        at.sidebar.selectbox(key="f_type").set_value("humidity").run()
        at.sidebar.selectbox(key="f_sensor").set_value("All")
        run_page(at)
        humid = tiles(at)
    assert "sensor-a2" in one and "sensor-a1" not in one and "sensor-b1" not in one
    assert "sensor-b1" in humid and "sensor-a1" not in humid


def test_empty_state_before_the_first_batch(app_env):
    settings = app_env()
    con = connect(settings.db)  # migrated, no batch yet
    try:
        with ReadApi(con, settings):
            at = run_page()
    finally:
        con.close()
    assert any("Waiting for the first micro-batch" in i.value for i in at.info)
    assert any("No sensor has reported yet" in i.value for i in at.info)
    assert metric(at, "Sensors") == "0" and metric(at, "Readings") == "0"
    assert metric(at, "Input rows/s") == "n/a" and metric(at, "Last batch age") == "n/a"


def test_stale_banner_when_the_last_batch_is_old(app_env):
    settings = app_env(stale_after=0)  # any committed batch is older than 0 s
    with serving(settings):
        at = run_page()
    assert any(
        "Stale: the last batch" in w.value and "SENSORSTREAM_STALE_AFTER" in w.value for w in at.warning
    )
    assert 'data-status="ok"' not in tiles(at)  # nothing live: ok tiles turn stale


def test_no_store_at_all_shows_an_error_banner_not_an_exception(app_env):
    app_env()  # nothing serves the API and there is no DuckDB file
    at = run_page()
    assert any("Store unreachable" in e.value for e in at.error)
    assert metric(at, "Readings") == "n/a"


def test_stream_down_reads_the_file_and_says_so(app_env):
    settings = app_env()
    with filled_store(settings):
        pass  # the "stream" wrote its batches and stopped: no API, file closed
    at = run_page()
    assert any("The stream is not running" in e.value for e in at.error)
    assert metric(at, "Readings") == "93"


def test_last_known_data_stays_on_the_page_when_everything_stops(app_env):
    settings = app_env()
    with serving(settings):
        at = run_page()
    settings.db.unlink()  # API stopped and no file to fall back to
    run_page(at)
    assert any("Store unreachable" in e.value and "last known data" in e.value for e in at.error)
    assert metric(at, "Readings") == "93"
    assert "sensor-a1" in tiles(at)
    assert any("last known data" in c.value for c in at.caption)


# --- the server and the CLI command -----------------------------------------------------------------------
def test_a_busy_port_is_a_clear_error_naming_the_setting(make_settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        settings = make_settings(dashboard_port=sock.getsockname()[1])
        with pytest.raises(launch.DashboardStartError, match="SENSORSTREAM_DASHBOARD_PORT"):
            launch.start_dashboard(settings, timeout=5)


@pytest.mark.slow
@pytest.mark.process  # Streamlit's server
def test_start_dashboard_returns_once_the_page_answers(make_settings, tmp_path):
    dashboard_port, api_port = free_ports(2)
    settings = make_settings(dashboard_port=dashboard_port, api_port=api_port)
    with open(tmp_path / "streamlit.log", "w") as log:
        proc = launch.start_dashboard(settings, log=log)
    try:
        url = launch.dashboard_url(settings)
        assert httpx.get(f"{url}/_stcore/health", trust_env=False).status_code == 200
        assert "<title>" in httpx.get(url, trust_env=False).text
    finally:
        assert launch.stop_dashboard(proc) is not None
    assert proc.poll() is not None


@pytest.mark.slow
@pytest.mark.process  # Streamlit's server
def test_cli_dashboard_prints_the_url_and_stops_on_sigterm(make_settings, tmp_path):
    dashboard_port, api_port = free_ports(2)
    settings = make_settings(dashboard_port=dashboard_port, api_port=api_port)
    env = settings_env(settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sensorstream", "dashboard"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    url = launch.dashboard_url(settings)
    try:
        # The URL is printed once the page answers; stop it only then (reads block at most until
        # the pytest timeout, and the command exits on its own if it cannot start).
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "dashboard at" in line:
                break
        assert httpx.get(f"{url}/_stcore/health", trust_env=False).status_code == 200
        proc.send_signal(signal.SIGTERM)
        out = "".join(seen) + proc.communicate(timeout=20)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"dashboard at {url}" in " ".join(out.split())
    assert not port_in_use(settings.dashboard_port, "127.0.0.1")  # streamlit went with it


def test_settings_reach_the_app_through_the_environment(make_settings):
    settings = make_settings(stale_after=7, dashboard_refresh=3, api_port=45123)
    env = settings_env(settings, base={"SENSORSTREAM_SLIDE": "5"})
    assert env["SENSORSTREAM_STALE_AFTER"] == "7.0" and env["SENSORSTREAM_API_PORT"] == "45123"
    assert "SENSORSTREAM_SLIDE" not in env  # None: not set, not inherited from the caller
    assert os.path.basename(launch.dashboard_command(settings)[4]) == "page.py"

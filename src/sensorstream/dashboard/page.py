"""The live dashboard (``streamlit run``; started by ``sensorstream dashboard`` or ``run``).

Settings come from the SENSORSTREAM_* environment. The page reads only through ``StoreClient``.
Each panel is an ``st.fragment(run_every=DASHBOARD_REFRESH)``: panels refresh in place, the page
is never reloaded, and the sidebar filters keep their values. The header fragment runs first and
leaves the pipeline's state in the session for the panels below it.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from sensorstream.config import Settings, SettingsError, load_settings
from sensorstream.dashboard import panels
from sensorstream.dashboard.data import (
    DEFAULT_RANGE,
    TIME_RANGES,
    Answer,
    Filters,
    Health,
    LastKnown,
    query_params,
    read_health,
    sensor_choices,
)
from sensorstream.dashboard.wording import PipelineState, pipeline_state
from sensorstream.serve.client import StoreClient

ALL = "All"

st.set_page_config(page_title="sensorstream", page_icon=":material/sensors:", layout="wide")

try:
    settings: Settings = load_settings()
except SettingsError as exc:
    st.error(str(exc))
    st.stop()


@st.cache_resource
def _client(api_url: str, db: str) -> StoreClient:
    # One client (one HTTP connection pool) per server process; keyed by where it reads from.
    return StoreClient(settings, timeout=3.0)


client = _client(settings.api_url, str(settings.db))
session: Any = st.session_state
session.setdefault("last_known", LastKnown())


def fetch(name: str, filters: Filters, **extra: Any) -> Answer:
    return session["last_known"].fetch(client, name, query_params(name, filters, **extra))


def current_state() -> PipelineState:
    previous: Health | None = session.get("health")
    health = read_health(client, previous)
    session["health"] = health
    state = pipeline_state(health, settings.stale_after, settings.api_url)
    session["state"] = state
    return state


# --- sidebar: filters (a change reruns the whole page once, as it should) ----------------------------
def sidebar() -> Filters:
    ids, types, sites = sensor_choices(fetch("sensors", Filters()).frame)
    session["choices"] = ids
    st.sidebar.header("Filters")
    sensor = st.sidebar.selectbox("Sensor", [ALL, *ids], key="f_sensor")
    sensor_type = st.sidebar.selectbox("Sensor type", [ALL, *types], key="f_type")
    site = st.sidebar.selectbox("Site", [ALL, *sites], key="f_site")
    span = st.sidebar.selectbox(
        "Time range", list(TIME_RANGES), index=list(TIME_RANGES).index(DEFAULT_RANGE), key="f_range"
    )
    st.sidebar.caption(
        "Time ranges count back from the newest data, so a replayed data set shows its last minutes too."
    )
    st.sidebar.divider()
    st.sidebar.caption(f"Store: {settings.api_url} (file fallback {settings.db})")
    st.sidebar.caption(f"Refresh every {settings.dashboard_refresh:g} s")
    return Filters(
        sensor_id=None if sensor == ALL else sensor,
        sensor_type=None if sensor_type == ALL else sensor_type,
        site=None if site == ALL else site,
        minutes=TIME_RANGES[span],
    )


st.title("sensorstream")
filters = sidebar()
every = settings.dashboard_refresh


@st.fragment(run_every=every)
def header() -> None:
    state = current_state()
    panels.banner(state)
    panels.headline(fetch("totals", filters), fetch("sensors", filters), state)


@st.fragment(run_every=every)
def state_grid() -> None:
    sensors = fetch("sensors", filters)
    unfiltered = sensors if not (filters.sensor_type or filters.site) else fetch("sensors", Filters())
    all_ids, _, _ = sensor_choices(unfiltered.frame)
    if all_ids and all_ids != session.get("choices"):
        # New sensors appeared: the sidebar (outside this fragment) must list them.
        st.rerun(scope="app")
    panels.state_grid(sensors, filters, session.get("state") or current_state(), settings.anomaly_warmup)


@st.fragment(run_every=every)
def series() -> None:
    panels.series(
        fetch("latest_windows", filters, limit=10_000), fetch("anomalies_recent", filters, limit=1000)
    )


RAW_MINUTES = 5.0


@st.fragment(run_every=every)
def raw() -> None:
    """The live view: one sensor's last minutes, reading by reading (the sidebar's, or chosen here)."""
    ids = session.get("choices") or []
    chosen = filters.sensor_id
    if chosen is None and ids:
        chosen = st.selectbox("Sensor", ids, key="raw_sensor")
    if chosen is None:
        panels.raw(None, None, None, None, RAW_MINUTES, settings.anomaly_zscore)
        return
    one = Filters(sensor_id=chosen, minutes=RAW_MINUTES)
    sensors = fetch("sensors", Filters())
    this = Answer(
        sensors.frame[sensors.frame["sensor_id"] == chosen], sensors.fresh, sensors.read_at, sensors.error
    )
    panels.raw(
        fetch("readings_recent", one, limit=5000),
        this,
        fetch("anomalies_recent", one, limit=500),
        chosen,
        RAW_MINUTES,
        settings.anomaly_zscore,
    )


@st.fragment(run_every=every)
def anomalies() -> None:
    panels.anomalies(fetch("anomalies_recent", filters, limit=200), fetch("anomaly_counts", filters))


@st.fragment(run_every=every)
def quality() -> None:
    panels.quality(
        fetch("late_over_time", filters),
        fetch("dead_letters_over_time", filters),
        fetch("dead_letter_reasons", filters),
    )


@st.fragment(run_every=every)
def health() -> None:
    panels.health(fetch("pipeline_rates", filters), session.get("state") or current_state())


header()
st.subheader("Current state")
state_grid()
st.subheader("Live readings")
raw()
st.subheader("Window averages per sensor, min/max band, anomalies in red (UTC)")
series()
left, right = st.columns(2)
with left:
    st.subheader("Anomalies")
    anomalies()
with right:
    st.subheader("Data quality")
    quality()
st.subheader("Pipeline health")
health()

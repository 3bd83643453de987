"""Grafana provisioning: the dashboard has its panels, and every SQL in it runs on a real snapshot.

The snapshot is made the way the pipeline makes it: batches through ``BatchMerger`` into a DuckDB
store, then ``write_snapshot``. Grafana's macros are replaced by concrete SQL first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest

from sensorstream.store.snapshot import write_snapshot
from test_dashboard_support import SENSORS, filled_store

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "sensorstream.json"
DATASOURCE_UID = "sensorstream-duckdb"
PLUGIN = "motherduck-duckdb-datasource"

# Panel title -> the columns its SQL must answer, in order (what the panel's fields refer to).
EXPECTED: dict[str, tuple[str, ...]] = {
    "Last batch age": ("age_seconds",),
    "Snapshot age": ("snapshot_age_seconds",),
    "Readings": ("readings",),
    "Anomalies": ("anomalies",),
    "Late events": ("late_events",),
    "Dead letters": ("dead_letters",),
    "Current state": (
        *("sensor_id", "sensor_type", "site", "last_window_start"),
        *("last_window_avg", "last_window_count", "status"),
    ),
    "Window averages (min/max in tooltip)": ("time", "sensor_id", "avg_value", "min_value", "max_value"),
    "Anomalies feed": ("event_time", "sensor_id", "sensor_type", "rule", "value", "score"),
    "Anomalies per rule": ("rule", "anomalies", "sensors"),
    "Late events and dead letters": ("time", "late_events", "dead_letters"),
    "Top dead-letter reasons": ("reason", "dead_letters", "sample_error"),
    "Input and processing rate": ("time", "input_rate", "processing_rate"),
    "Latency and batch duration": ("time", "latency_p50_s", "latency_p95_s", "batch_duration_s"),
    "Consumer lag": ("time", "consumer_lag"),
}
# Panels that must have rows on the test snapshot (the rest may legitimately be empty or NULL).
NON_EMPTY = set(EXPECTED) - {"Consumer lag"}


def grafana_sql(sql: str, sensors: tuple[str, ...] = SENSORS) -> str:
    """Grafana's substitutions, made concrete: a time filter wide enough for any test data, and
    the ``sensor`` variable as "All" (every sensor, quoted the way ``:sqlstring`` quotes)."""
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        r"(\1 >= TIMESTAMPTZ '2000-01-01 00:00:00+00' AND \1 <= TIMESTAMPTZ '2100-01-01 00:00:00+00')",
        sql,
    )
    sql = sql.replace("${sensor:sqlstring}", ", ".join("'" + s.replace("'", "''") + "'" for s in sensors))
    assert "$" not in sql, f"a Grafana macro or variable is left in: {sql}"
    return sql


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    from sensorstream.config import load_settings

    data = tmp_path_factory.mktemp("grafana")
    settings = load_settings(data_dir=data, metrics_port=0)
    target = data / "snapshot.duckdb"
    with filled_store(settings) as con:
        write_snapshot(con, target)
    return target


def _targets(dashboard: dict) -> list[tuple[str, dict]]:
    return [(panel["title"], t) for panel in dashboard["panels"] for t in panel["targets"]]


def test_the_dashboard_has_the_expected_panels(dashboard):
    titles = [p["title"] for p in dashboard["panels"]]
    assert sorted(titles) == sorted(EXPECTED)
    assert len(set(p["id"] for p in dashboard["panels"])) == len(titles)
    for title, target in _targets(dashboard):
        assert target["datasource"] == {"type": PLUGIN, "uid": DATASOURCE_UID}, title
        assert target["rawQuery"] and target["rawSql"].lstrip().upper().startswith(("SELECT", "WITH")), title
    kinds = {p["title"]: p["type"] for p in dashboard["panels"]}
    assert kinds["Window averages (min/max in tooltip)"] == "timeseries"
    assert kinds["Current state"] == "table" and kinds["Last batch age"] == "stat"


@pytest.mark.parametrize("title", sorted(EXPECTED))
def test_every_panel_query_runs_on_a_real_snapshot(dashboard, snapshot, title):
    con = duckdb.connect(str(snapshot), read_only=True)  # as the plugin opens it (readOnly: true)
    try:
        con.execute("SET TimeZone = 'UTC'")
        for panel_title, target in _targets(dashboard):
            if panel_title != title:
                continue
            cur = con.execute(grafana_sql(target["rawSql"]))
            columns = tuple(d[0] for d in cur.description)
            rows = cur.fetchall()
            assert columns == EXPECTED[title]
            if title in NON_EMPTY:
                assert rows, f"{title}: no rows on a snapshot with data"
    finally:
        con.close()


def test_panel_answers_match_the_store(dashboard, snapshot):
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        by_title = dict(_targets(dashboard))
        readings = con.execute(grafana_sql(by_title["Readings"]["rawSql"])).fetchone()[0]
        status = dict(
            (r[0], r[-1]) for r in con.execute(grafana_sql(by_title["Current state"]["rawSql"])).fetchall()
        )
        one = con.execute(
            grafana_sql(by_title["Anomalies feed"]["rawSql"], sensors=("sensor-a1",))
        ).fetchall()
    finally:
        con.close()
    assert readings == 93  # 92 on time + 1 late, as the sink counted them
    assert status == {"sensor-a1": "ok", "sensor-a2": "anomaly", "sensor-b1": "ok"}
    assert one == []  # the sensor filter reaches the SQL: sensor-a1 had no anomaly


def test_the_sensor_variable_query_runs(dashboard, snapshot):
    (variable,) = dashboard["templating"]["list"]
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        values = [r[0] for r in con.execute(variable["query"]).fetchall()]
    finally:
        con.close()
    assert values == sorted(SENSORS)


def test_provisioning_points_at_the_snapshot_read_only():
    datasource = (GRAFANA / "provisioning" / "datasources" / "duckdb.yaml").read_text()
    assert re.search(rf"^\s+type: {PLUGIN}$", datasource, re.M)
    assert re.search(rf"^\s+uid: {DATASOURCE_UID}$", datasource, re.M)
    assert re.search(r"^\s+path: \$\{SENSORSTREAM_SNAPSHOT_PATH\}$", datasource, re.M)
    assert re.search(r"^\s+readOnly: true$", datasource, re.M)
    provider = (GRAFANA / "provisioning" / "dashboards" / "sensorstream.yaml").read_text()
    compose = (ROOT / "docker-compose.yml").read_text()
    mount = re.search(r"^\s+path: (\S+)$", provider, re.M).group(1)
    assert f"./grafana/dashboards:{mount}:ro" in compose
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in compose
    assert "SENSORSTREAM_SNAPSHOT_PATH: /var/lib/sensorstream/snapshot.duckdb" in compose
    assert "./data:/var/lib/sensorstream:ro" in compose

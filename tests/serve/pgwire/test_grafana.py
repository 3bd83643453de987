"""Grafana provisioning: the dashboard has its panels, and every SQL in it runs on the live store
through the PostgreSQL endpoint with Go's pgx (the driver of Grafana's PostgreSQL data source), in
the simple and the extended protocol, after Grafana's macros and variables are expanded the way
Grafana expands them (``tests/serve/pgwire/clients/pgx``).

The store is filled the way the pipeline fills it: batches through ``BatchMerger``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kit.dashboard import SENSORS
from kit.pg import build_pgx, psql, run_pgx, url

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "sensorstream.json"
DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "sensorstream-pg"}
SNAPSHOT_PLUGIN = "motherduck-duckdb-datasource"

# Panel title -> the columns its SQL must answer, in order (what the panel's fields refer to).
EXPECTED: dict[str, tuple[str, ...]] = {
    "Last batch age": ("age_seconds",),
    "Sensors reporting": ("sensors",),
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
# Panels that must have rows on the test store (the rest may legitimately be empty or NULL).
NON_EMPTY = set(EXPECTED) - {"Consumer lag"}
# A dashboard range wide enough for the test data (2026-11-26 20:00 UTC) and the commits (now).
TIME_RANGE = {"from": "2026-11-26T19:00:00Z", "to": "2100-01-01T00:00:00Z", "interval": "1m"}
SITES = ("plant-a",)
# OIDs: float8 for $__timeGroupAlias (epoch seconds, as on PostgreSQL), timestamptz for a timestamp.
TIME_OIDS = {701, 1184}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _targets(dashboard: dict) -> list[tuple[str, dict]]:
    return [(panel["title"], t) for panel in dashboard["panels"] for t in panel["targets"]]


def test_the_dashboard_has_the_expected_panels(dashboard):
    titles = [p["title"] for p in dashboard["panels"]]
    assert sorted(titles) == sorted(EXPECTED)
    assert len(set(p["id"] for p in dashboard["panels"])) == len(titles)
    for title, target in _targets(dashboard):
        assert target["datasource"] == DATASOURCE, title
        assert target["rawQuery"] and target["rawSql"].lstrip().upper().startswith(("SELECT", "WITH")), title
        assert "${sensor:sqlstring}" not in target["rawSql"]  # the PostgreSQL data source quotes itself
    kinds = {p["title"]: p["type"] for p in dashboard["panels"]}
    assert kinds["Window averages (min/max in tooltip)"] == "timeseries"
    assert kinds["Current state"] == "table" and kinds["Last batch age"] == "stat"
    every_sql = " ".join(t["rawSql"] for _, t in _targets(dashboard))
    for used in ("$__timeFilter(", "$__timeGroupAlias(", "$sensor", "$site"):
        assert used in every_sql
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"sensor", "site"}
    assert all(v["datasource"] == DATASOURCE and v["multi"] and v["includeAll"] for v in variables.values())


def test_time_series_panels_aggregate_in_sql(dashboard):
    # A row per batch (about two a second) outgrows the endpoint's row limit on a long range, and
    # an answer over it fails; a row per $__interval bucket stays near the panel's width in points.
    for title, target in _targets(dashboard):
        if target["format"] == "time_series":
            assert re.search(r"\$__timeGroup(Alias)?\(", target["rawSql"]), title
            assert "GROUP BY 1" in target["rawSql"], title


@pytest.fixture(scope="module")
def served(filled_endpoint):
    _, server, settings = filled_endpoint
    return server, settings


# The metadata queries of Grafana's PostgreSQL query builder (its postgresMetaQuery.ts), as it
# sends them: the version, the schema list, the table list (with and without a schema picked) and
# a table's columns; tables on the search path are listed bare, others as schema.table.
_ON_SEARCH_PATH = """quote_ident(table_schema) IN (
    SELECT CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
    FROM generate_series(
        array_lower(string_to_array(current_setting('search_path'), ','), 1),
        array_upper(string_to_array(current_setting('search_path'), ','), 1)
    ) AS i, string_to_array(current_setting('search_path'), ',') s)"""
_NOT_SYSTEM = "quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog', '_timescaledb_cache')"


def _columns_of(table: str) -> str:
    quoted = "'" + table.replace("'", "''") + "'"
    return f"""SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE CASE WHEN array_length(parse_ident({quoted}), 1) = 2
        THEN quote_ident(table_schema) = (parse_ident({quoted}))[1]
            AND quote_ident(table_name) = (parse_ident({quoted}))[2]
        ELSE quote_ident(table_name) = {quoted} AND {_ON_SEARCH_PATH}
    END"""


GRAFANA_METADATA = {
    "version": "SELECT current_setting('server_version_num')::int/100 as version",
    "timescaledb": "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
    "schemas": """SELECT schema_name AS "name" FROM information_schema.schemata
    WHERE schema_name NOT IN ('information_schema', 'pg_catalog', 'pg_toast', '_timescaledb_cache')
    ORDER BY schema_name""",
    "tables": f"""SELECT CASE WHEN {_ON_SEARCH_PATH} THEN quote_ident(table_name)
        ELSE quote_ident(table_schema) || '.' || quote_ident(table_name) END AS "table"
    FROM information_schema.tables WHERE {_NOT_SYSTEM}
    ORDER BY CASE WHEN {_ON_SEARCH_PATH} THEN 0 ELSE 1 END, 1""",
    "tables in main": """SELECT quote_ident(table_name) AS "table" FROM information_schema.tables
    WHERE quote_ident(table_schema) = 'main' ORDER BY 1""",
    "columns": _columns_of("window_stats"),
    "columns of main.window_stats": _columns_of("main.window_stats"),
}


@pytest.fixture(scope="module")
def answers(dashboard, served, tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Every panel query, both variable queries and the query builder's metadata queries, run
    once with pgx in each protocol mode; and pgx's Ping and a pgxpool that pings idle connections."""
    server, settings = served
    binary = build_pgx(tmp_path_factory.mktemp("pgx"))
    queries = [{"name": title, "sql": t["rawSql"]} for title, t in _targets(dashboard)]
    queries += [{"name": f"var:{v['name']}", "sql": v["query"]} for v in dashboard["templating"]["list"]]
    queries += [{"name": f"meta:{name}", "sql": sql} for name, sql in GRAFANA_METADATA.items()]
    queries.append(
        {"name": "arrays", "sql": "SELECT current_schemas(true) AS s, list_value(1, NULL, 3) AS n"}
    )
    one_sensor = [q for q in queries if q["name"] == "Anomalies feed"]
    request = {"conn": url(server, settings), **TIME_RANGE}
    everything = run_pgx(
        binary,
        {
            **request,
            "vars": {"sensor": list(SENSORS), "site": list(SITES)},
            "queries": queries,
            "pool_query": "SELECT count(*) FROM window_stats",
        },
    )
    filtered = run_pgx(
        binary, {**request, "vars": {"sensor": ["sensor-a1"], "site": list(SITES)}, "queries": one_sensor}
    )
    result = {(r["name"], r["mode"]): r for r in everything}
    result.update({("sensor-a1:" + r["name"], r["mode"]): r for r in filtered})
    return result


@pytest.mark.go
@pytest.mark.parametrize("mode", ["simple", "extended"])
@pytest.mark.parametrize("title", sorted(EXPECTED))
def test_every_panel_query_runs_through_pgx(answers, title, mode):
    answer = answers[(title, mode)]
    assert not answer.get("error"), f"{title} ({mode}): {answer.get('error')}\n{answer['sql']}"
    assert "$" not in answer["sql"], "a Grafana macro or variable was left in"
    assert tuple(c["name"] for c in answer["columns"]) == EXPECTED[title]
    if title in NON_EMPTY:
        assert answer["rows"] > 0, f"{title}: no rows on a store with data"
    if EXPECTED[title][0] == "time":  # a time series: Grafana needs the time column first
        assert answer["columns"][0]["oid"] in TIME_OIDS
        if answer["values"]:
            assert answer["go_types"][0] in ("time.Time", "float64")


@pytest.mark.go
def test_panel_answers_match_the_store(answers):
    readings = answers[("Readings", "extended")]["values"][0][0]
    status = {row[0]: row[-1] for row in answers[("Current state", "simple")]["values"]}
    feed = answers[("sensor-a1:Anomalies feed", "extended")]
    series = answers[("Window averages (min/max in tooltip)", "extended")]
    assert readings == "93"  # 92 on time + 1 late, as the sink counted them
    assert status == {"sensor-a1": "ok", "sensor-a2": "anomaly", "sensor-b1": "ok"}
    assert feed["rows"] == 0 and not feed.get("error")  # the sensor variable reaches the SQL
    # $__timeGroupAlias gives epoch seconds on whole minutes, as Grafana's PostgreSQL macro does.
    first = float(series["values"][0][0])
    assert first % 60 == 0 and datetime.fromtimestamp(first, UTC).date().isoformat() == "2026-11-26"


@pytest.mark.go
def test_psql_runs_every_panel_query(answers, served):
    """The same SQL Grafana would send (as pgx got it), through psql: row counts agree."""
    server, settings = served
    for title in EXPECTED:
        answer = answers[(title, "simple")]
        done = psql(server, settings, "\\pset format unaligned", "\\pset tuples_only on", answer["sql"])
        assert done.returncode == 0, f"{title}: {done.stderr}"
        rows = [
            line for line in done.stdout.splitlines() if not line.startswith(("Output format", "Tuples only"))
        ]
        assert len(rows) == answer["rows"], title


@pytest.mark.go
def test_the_variable_queries_run(answers):
    for mode in ("simple", "extended"):
        assert [row[0] for row in answers[("var:site", mode)]["values"]] == list(SITES)
        assert [row[0] for row in answers[("var:sensor", mode)]["values"]] == sorted(SENSORS)


@pytest.mark.go
def test_pgx_pings_and_its_pool_pings_idle_connections(answers):
    # pgx pings with "-- ping", which must be an empty query, not an error.
    assert not answers[("ping", "conn")].get("error")
    pool = answers[("pool", "pgxpool")]
    assert not pool.get("error"), pool.get("error")
    first, second, opened = pool["values"]
    assert first == second and int(first[0]) > 0
    # Idle for over a second, the connection was pinged on the second acquire and kept: a failed
    # ping would have made the pool open a second one.
    assert opened == ["1"]


@pytest.mark.go
@pytest.mark.parametrize("mode", ["simple", "extended"])
def test_grafana_query_builder_metadata(answers, mode):
    def rows(name: str) -> list[list[str]]:
        answer = answers[(f"meta:{name}", mode)]
        assert not answer.get("error"), f"{name}: {answer.get('error')}\n{answer['sql']}"
        return answer["values"] or []  # pgx's answer has no values (null) when there are no rows

    assert rows("version") == [["1500"]] and rows("timescaledb") == []
    assert rows("schemas") == [["main"]]  # once, not once per DuckDB catalog
    tables = [row[0] for row in rows("tables")]
    assert "window_stats" in tables and "readings" in tables and tables == sorted(tables)
    assert [row[0] for row in rows("tables in main")] == tables
    columns = dict(rows("columns"))
    assert columns["window_start"] == "timestamp with time zone"  # a time column to the builder
    assert columns["avg_value"] == "double precision" and columns["sensor_id"] == "character varying"
    assert dict(rows("columns of main.window_stats")) == columns


@pytest.mark.go
@pytest.mark.parametrize("mode", ["simple", "extended"])
def test_pgx_reads_lists_as_postgres_arrays(answers, mode):
    answer = answers[("arrays", mode)]  # extended: pgx asks for PostgreSQL's binary array format
    assert not answer.get("error"), answer.get("error")
    assert [c["oid"] for c in answer["columns"]] == [1009, 1007]  # text[], int4[]
    assert answer["values"] == [["[pg_catalog main]", "[1 <nil> 3]"]]
    assert answer["go_types"] == ["[]interface {}", "[]interface {}"]


def test_provisioning_points_at_the_endpoint_and_keeps_the_snapshot():
    datasources = GRAFANA / "provisioning" / "datasources"
    live = (datasources / "postgres.yaml").read_text()
    assert re.search(rf"^\s+type: {DATASOURCE['type']}$", live, re.M)
    assert re.search(rf"^\s+uid: {DATASOURCE['uid']}$", live, re.M)
    assert re.search(r"^\s+url: \$\{SENSORSTREAM_PG_ADDRESS\}$", live, re.M)
    assert re.search(r"^\s+password: \$\{SENSORSTREAM_PG_PASSWORD\}$", live, re.M)
    assert re.search(r"^\s+user: \$\{SENSORSTREAM_PG_USER\}$", live, re.M)
    # Grafana reads these from its own environment: the endpoint's client guide names each one.
    grafana_row = next(
        line
        for line in (ROOT / "docs" / "postgres.md").read_text().splitlines()
        if line.startswith("| Grafana |")
    )
    for name in re.findall(r"\$\{(SENSORSTREAM_\w+)\}", live):
        assert f"`{name}`" in grafana_row, name
    assert re.search(r"^\s+isDefault: true$", live, re.M)
    snapshot = (datasources / "duckdb.yaml").read_text()
    assert re.search(rf"^\s+type: {SNAPSHOT_PLUGIN}$", snapshot, re.M)
    assert re.search(r"^\s+path: \$\{SENSORSTREAM_SNAPSHOT_PATH\}$", snapshot, re.M)
    assert re.search(r"^\s+readOnly: true$", snapshot, re.M)
    provider = (GRAFANA / "provisioning" / "dashboards" / "sensorstream.yaml").read_text()
    compose = (ROOT / "docker-compose.yml").read_text()
    mount = re.search(r"^\s+path: (\S+)$", provider, re.M).group(1)
    assert f"./grafana/dashboards:{mount}:ro" in compose
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in compose
    # The container reaches the stream's endpoint on the host.
    assert '"host.docker.internal:host-gateway"' in compose
    assert "SENSORSTREAM_PG_ADDRESS: host.docker.internal:5433" in compose
    assert "SENSORSTREAM_SNAPSHOT_PATH: /var/lib/sensorstream/snapshot.duckdb" in compose
    assert "./data:/var/lib/sensorstream:ro" in compose

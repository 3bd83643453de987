"""Real PostgreSQL clients on the store's endpoint: psql, psycopg, SQLAlchemy and pgJDBC.

One store filled through the real sink (``BatchMerger``), served by ``PgServer`` on a free port
with a password; every answer is checked against DuckDB's own answer on the same connection.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from decimal import Decimal

import asyncpg
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from psycopg import errors

from kit.pg import PASSWORD, conninfo, endpoint, psql, run_jdbc, url
from sensorstream.store.migrations import TABLES

pytestmark = pytest.mark.integration

ALL_TABLES = {*TABLES, "schema_version"}
FROM = dt.datetime(2026, 11, 26, 20, 0, tzinfo=dt.UTC)
TO = dt.datetime(2026, 11, 26, 20, 2, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def served(filled_endpoint):
    return filled_endpoint


@pytest.fixture
def conn(served):
    _, server, settings = served
    with psycopg.connect(conninfo(server, settings), autocommit=True) as connection:
        yield connection


def duckdb_count(con, sql: str, params: list) -> int:
    cur = con.cursor()
    try:
        return cur.execute(sql, params).fetchone()[0]
    finally:
        cur.close()


# --- psql -------------------------------------------------------------------------------------------
def test_psql_lists_and_describes_the_tables(served):
    _, server, settings = served
    listed = psql(server, settings, r"\dt")
    assert listed.returncode == 0, listed.stderr
    for table in ALL_TABLES:
        assert f"| {table} " in listed.stdout
    described = psql(server, settings, r"\d window_stats")
    assert described.returncode == 0, described.stderr
    assert 'Table "main.window_stats"' in described.stdout
    lines = {line.split("|")[0].strip(): line for line in described.stdout.splitlines() if "|" in line}
    assert "timestamp with time zone" in lines["window_start"] and "not null" in lines["window_start"]
    assert "double precision" in lines["avg_value"] and "bigint" in lines["reading_count"]
    assert "not null" not in lines["site"]
    # The primary key, found through pg_index and pg_constraint as psql looks for it.
    assert re.search(
        r'"window_stats_\w+_pkey" PRIMARY KEY, \w+ \(sensor_id, window_start\)', described.stdout
    )


def test_psql_runs_queries_and_reports_errors(served):
    con, server, settings = served
    done = psql(
        server, settings, "SELECT count(*) AS n FROM readings WHERE event_time >= '2026-11-26T20:01:00Z'"
    )
    assert done.returncode == 0, done.stderr
    expected = duckdb_count(
        con, "SELECT count(*) FROM readings WHERE event_time >= ?", [FROM + dt.timedelta(minutes=1)]
    )
    assert done.stdout.split("\n")[2].strip() == str(expected)
    refused = psql(server, settings, "DELETE FROM readings")
    assert refused.returncode != 0 and "only SELECT" in refused.stderr


def test_a_wrong_password_fails_with_a_clear_error(served):
    _, server, settings = served
    done = psql(server, settings, "SELECT 1", password="not-the-password")
    assert done.returncode != 0
    assert f'password authentication failed for user "{settings.pg_user}"' in done.stderr
    assert "SENSORSTREAM_PG_PASSWORD" in done.stderr
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(conninfo(server, settings).replace(settings.pg_user, "somebody-else", 1)).close()


# --- psycopg ----------------------------------------------------------------------------------------
EVERY_TYPE = {
    "int": 7,
    "bigint": 2**40,
    "double": 1.5,
    "text": "héllo 'quoted'",
    "boolean": True,
    "timestamptz": dt.datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "timestamp": dt.datetime(2026, 1, 2, 3, 4, 5),
    "date": dt.date(2026, 1, 2),
    "numeric": Decimal("12.345"),
    "uuid": uuid.UUID(int=5),
    "bytea": b"\x00\xff",
    "interval": dt.timedelta(days=1, seconds=5),
    "time": dt.time(1, 2, 3),
}


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_psycopg_parameters_of_every_type_round_trip(conn, binary):
    sql = "SELECT " + ", ".join(f"%s::{name} AS {name}_" for name in EVERY_TYPE)
    cur = conn.cursor(binary=binary)
    cur.execute(sql, list(EVERY_TYPE.values()))
    row = cur.fetchone()
    assert dict(zip(EVERY_TYPE, row, strict=True)) == EVERY_TYPE  # timestamptz compares as an instant
    assert row[list(EVERY_TYPE).index("timestamptz")].utcoffset() == dt.timedelta(0)  # sent in UTC
    oids = [d.type_code for d in cur.description]
    # DuckDB has one string type, VARCHAR: text comes back as varchar (1043), as its columns do.
    assert oids == [23, 20, 701, 1043, 16, 1184, 1114, 1082, 1700, 2950, 17, 1186, 1083]


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_psycopg_timestamptz_range_matches_duckdb(served, conn, binary):
    con, _, _ = served
    cur = conn.cursor(binary=binary)
    cur.execute(
        "SELECT sensor_id, window_start, avg_value, is_final FROM window_stats "
        "WHERE window_start >= %s AND window_start < %s AND sensor_id = %s ORDER BY window_start",
        (FROM, TO, "sensor-a1"),
    )
    rows = cur.fetchall()
    expected = duckdb_count(
        con, "SELECT count(*) FROM window_stats WHERE window_start >= ? AND window_start < ? AND sensor_id = ?",
        [FROM, TO, "sensor-a1"],
    )  # fmt: skip
    assert len(rows) == expected == 2
    assert rows[0][1] == FROM and rows[0][1].tzinfo is not None
    assert [d.type_code for d in cur.description] == [1043, 1184, 701, 16]


@pytest.mark.parametrize(
    ("sql", "sqlstate"),
    [
        ("DELETE FROM readings", "25006"),
        ("INSERT INTO schema_version VALUES (99, now())", "25006"),
        ("UPDATE window_stats SET avg_value = 0", "25006"),
        ("DROP TABLE readings", "25006"),
        ("CREATE TABLE x (a INT)", "25006"),
        # As PostgreSQL answers a role without file privileges, and a read-only server.
        ("COPY readings TO '/tmp/readings.csv'", "42501"),
        ("COPY readings TO PROGRAM 'cat'", "42501"),
        ("COPY readings FROM STDIN", "25006"),
        ("ATTACH '/tmp/other.duckdb' AS other", "25006"),
        ("SELECT * FROM read_csv('/etc/passwd')", "42501"),
        ("SELECT * FROM '/etc/passwd'", "42501"),
        ("SELECT * FROM glob('/*')", "42501"),
        ("SELECT 1; DROP TABLE readings", "25006"),
        ("SELECT * FROM no_such_table", "42P01"),
        ("SELEC 1", "42601"),
    ],
)
def test_writes_copy_and_file_readers_are_refused(served, conn, sql, sqlstate):
    con, _, _ = served
    before = duckdb_count(con, "SELECT count(*) FROM readings", [])
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql)
    assert caught.value.sqlstate == sqlstate, str(caught.value)
    assert duckdb_count(con, "SELECT count(*) FROM readings", []) == before


def test_catalog_answers_reveal_no_engine_settings_or_paths(served, conn):
    _, _, settings = served
    rows = conn.execute("SELECT name, setting FROM pg_catalog.pg_settings").fetchall()
    text = repr(rows) + repr(conn.execute("SELECT current_setting('data_directory')").fetchone())
    assert ("timezone", "UTC") in rows
    assert str(settings.db) not in text and str(settings.data_dir) not in text
    assert "memory_limit" not in text and "temp_directory" not in text
    with pytest.raises(errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM duckdb_settings()")


def test_session_commands_and_transaction_states(conn):
    assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)
    assert conn.execute("SELECT version()").fetchone()[0].startswith("PostgreSQL 15.0")
    conn.execute("SET application_name = 'tests'")
    assert conn.execute("SHOW application_name").fetchone() == ("tests",)
    with pytest.raises(errors.UndefinedObject):
        conn.execute("SHOW no_such_setting")
    conn.autocommit = False
    conn.execute("SELECT 1")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    with pytest.raises(errors.ReadOnlySqlTransaction):
        conn.execute("DELETE FROM readings")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    with pytest.raises(errors.InFailedSqlTransaction):
        conn.execute("SELECT 1")
    conn.rollback()
    assert conn.execute("SELECT 2").fetchone() == (2,)
    conn.commit()


@pytest.mark.parametrize("binary", [False, True], ids=["simple", "extended"])
@pytest.mark.parametrize("text", ["-- ping", "", " ; ", "/* nothing */"])
def test_an_empty_or_comment_only_query_is_an_empty_query(conn, binary, text):
    # pgx (Grafana's driver) pings with "-- ping"; PostgreSQL answers EmptyQueryResponse.
    cur = conn.cursor(binary=binary)  # psycopg sends a binary cursor's query as Parse/Bind/Execute
    cur.execute(text)
    assert cur.pgresult.status == psycopg.pq.ExecStatus.EMPTY_QUERY and cur.description is None
    assert conn.execute("SELECT 1").fetchone() == (1,)


UNALIASED = (
    "SELECT count(*), avg(avg_value), sum(reading_count), max(window_start), reading_count::int, 1, "
    "'x', lower(sensor_id), avg_value AS Mean, min(avg_value) AS \"Lowest\", CASE WHEN true THEN 1 END, "
    "coalesce(site, 'none'), (SELECT max(batch_id) FROM pipeline_metrics), avg_value + 1 "
    "FROM window_stats GROUP BY reading_count, sensor_id, avg_value, site"
)
POSTGRES_NAMES = [
    *("count", "avg", "sum", "max", "reading_count", "?column?", "?column?", "lower", "mean", "Lowest"),
    *("case", "coalesce", "max", "?column?"),
]


@pytest.mark.parametrize("binary", [False, True], ids=["simple", "extended"])
def test_unaliased_columns_get_postgres_names(conn, binary):
    cur = conn.cursor(binary=binary)
    cur.execute(UNALIASED)
    assert [d.name for d in cur.description] == POSTGRES_NAMES
    cur.execute("SELECT *, count(*) OVER () FROM schema_version")
    assert [d.name for d in cur.description] == ["version", "description", "applied_at", "count"]


def test_pandas_gets_postgres_column_names(served):
    _, server, settings = served
    engine = sa.create_engine(url(server, settings).replace("postgres://", "postgresql+psycopg://"))
    try:
        with engine.connect() as connection:
            frame = pd.read_sql(sa.text(UNALIASED), connection)
    finally:
        engine.dispose()
    assert list(frame.columns) == POSTGRES_NAMES


def test_asyncpg_pool_acquires_and_releases(served):
    con, server, settings = served
    expected = duckdb_count(con, "SELECT count(*) FROM window_stats WHERE sensor_id = ?", ["sensor-a1"])

    async def use_pool() -> list[int]:
        # One connection, so every acquire gets the one the last release reset (asyncpg sends
        # pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL on release).
        pool = await asyncpg.create_pool(url(server, settings), min_size=1, max_size=1)
        try:
            counts = []
            for _ in range(3):
                async with pool.acquire() as connection:
                    counts.append(
                        await connection.fetchval(
                            "SELECT count(*) FROM window_stats WHERE sensor_id = $1", "sensor-a1"
                        )
                    )
            return counts
        finally:
            await pool.close()

    assert asyncio.run(use_pool()) == [expected] * 3


def test_grafana_schema_and_array_functions(conn):
    cur = conn.execute(
        "SELECT current_schemas(false), current_schemas(true), quote_ident('window_stats'), "
        "quote_ident('Mixed Case'), quote_ident('select'), parse_ident('main.\"A b\"'), user"
    )
    assert cur.fetchone() == (
        ["main"], ["pg_catalog", "main"], "window_stats", '"Mixed Case"', '"select"', ["main", "A b"], "sensorstream"
    )  # fmt: skip
    assert cur.description[0].type_code == 1009  # text[]: a PostgreSQL array, not DuckDB's text for it
    binary = conn.cursor(binary=True)  # PostgreSQL's binary array format, with a NULL element
    binary.execute("SELECT current_schemas(true), list_value(1, NULL, 3), CAST([] AS DOUBLE[])")
    assert binary.fetchone() == (["pg_catalog", "main"], [1, None, 3], [])
    rows = conn.execute("SELECT x, s FROM string_to_array('a,b', ',') AS s, generate_series(1, 2) AS x")
    assert rows.fetchall() == [(1, ["a", "b"]), (2, ["a", "b"])]


@pytest.mark.parametrize("binary", [False, True], ids=["simple", "extended"])
def test_an_answer_over_the_row_limit_fails_rather_than_being_cut(served, binary):
    con, _, settings = served
    rows = duckdb_count(con, "SELECT count(*) FROM readings", [])
    limited = settings.model_copy(update={"read_max_rows": rows - 1})
    with (
        endpoint(con, limited) as server,
        psycopg.connect(conninfo(server, limited), autocommit=True) as connection,
    ):
        cur = connection.cursor(binary=binary)
        with pytest.raises(errors.ProgramLimitExceeded, match="SENSORSTREAM_READ_MAX_ROWS"):
            cur.execute("SELECT * FROM readings")
        cur.execute("SELECT * FROM readings LIMIT %s", [rows - 1])
        assert len(cur.fetchall()) == rows - 1


def test_bad_parameter_bytes_are_a_data_error(conn):
    with pytest.raises(errors.InvalidTextRepresentation):
        conn.execute("SELECT %s::int", ["not a number"], prepare=False)


# --- SQLAlchemy -------------------------------------------------------------------------------------
def test_sqlalchemy_reflects_the_tables(served):
    con, server, settings = served
    engine = sa.create_engine(
        f"postgresql+psycopg://{settings.pg_user}:{PASSWORD}@{server.host}:{server.port}/sensorstream"
    )
    try:
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names(schema="main")) == ALL_TABLES
        assert set(inspector.get_table_names()) == ALL_TABLES
        table = sa.Table("window_stats", sa.MetaData(), autoload_with=engine, schema="main")
        described = con.execute("DESCRIBE window_stats").fetchall()
        assert [c.name for c in table.columns] == [row[0] for row in described]
        assert isinstance(table.c.window_start.type, sa.TIMESTAMP) and table.c.window_start.type.timezone
        assert isinstance(table.c.avg_value.type, sa.Float)
        assert {c.name: c.nullable for c in table.columns} == {row[0]: row[2] == "YES" for row in described}
        assert [c.name for c in table.primary_key.columns] == ["sensor_id", "window_start"]
        assert inspector.get_pk_constraint("dead_letters")["constrained_columns"] == [
            "kafka_topic", "kafka_partition", "kafka_offset"
        ]  # fmt: skip
        with engine.connect() as connection:
            counts = connection.execute(
                sa.select(table.c.sensor_id, sa.func.count())
                .group_by(table.c.sensor_id)
                .order_by(table.c.sensor_id)
            ).fetchall()
        expected = con.execute(
            "SELECT sensor_id, count(*) FROM window_stats GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert [tuple(r) for r in counts] == expected
    finally:
        engine.dispose()


# --- pgJDBC -----------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.jvm
def test_jdbc_lists_tables_columns_and_runs_a_timestamp_range(served):
    con, server, settings = served
    lines = run_jdbc(server, settings, FROM.isoformat(), TO.isoformat(), "sensor-a1")
    facts: dict[str, list[list[str]]] = {}
    for line in lines:
        facts.setdefault(line[0], []).append(line[1:])
    assert facts["product"][0][0].startswith("PostgreSQL 15")
    assert set(facts["tables"][0][0].split(",")) == {f"main.{t}" for t in ALL_TABLES}
    columns = {c[0]: c[1:] for c in facts["column"]}
    assert columns["window_start"] == ["timestamptz", "93", "NO"]  # java.sql.Types.TIMESTAMP
    assert columns["avg_value"] == ["float8", "8", "NO"] and columns["site"][2] == "YES"
    expected = duckdb_count(
        con, "SELECT count(*) FROM window_stats WHERE window_start >= ? AND window_start < ? AND sensor_id = ?",
        [FROM, TO, "sensor-a1"],
    )  # fmt: skip
    key = [c[:2] for c in facts["primary_key"]]
    assert key == [["sensor_id", "1"], ["window_start", "2"]] and facts["primary_key"][0][2].endswith("_pkey")
    assert [i[1:] for i in facts["index"]] == [["sensor_id", "1", "false"], ["window_start", "2", "false"]]
    types = {name: int(sql_type) for name, sql_type in facts["type_info"]}
    assert types["int8"] == -5 and types["float8"] == 8 and types["timestamptz"] == 93  # java.sql.Types
    assert len(facts["range"]) == 7  # past the driver's prepareThreshold: named statements, binary results
    for _, rows, type_name, first_time, sensor, *_ in facts["range"]:
        assert (int(rows), type_name, sensor) == (expected, "timestamptz", "sensor-a1")
        assert dt.datetime.fromisoformat(first_time) == FROM

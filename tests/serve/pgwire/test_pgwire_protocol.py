"""The PostgreSQL endpoint's pure parts (types, SQL sorting and rewriting, parameter inference,
settings) and its life in the writer's process (start-up errors, connection limit, shared gate)."""

from __future__ import annotations

import datetime as dt
import socket
import struct
from decimal import Decimal

import psycopg
import pytest

from kit.pg import conninfo, endpoint, pg_settings
from kit.store import writer_store
from sensorstream.config import SettingsError, load_settings
from sensorstream.serve.pgwire import PgStartError, statements, translate
from sensorstream.serve.pgwire import types as t
from sensorstream.serve.pgwire.params import infer_param_types
from sensorstream.serve.store_service import StoreService


@pytest.mark.parametrize(
    "value", [Decimal("0"), Decimal("12.345"), Decimal("-0.0001"), Decimal("123456789012.5"), Decimal("1E+8")]
)
def test_numeric_binary_round_trips(value):
    data = t.encoder(t.NUMERIC, binary=True)(value)
    assert t.decode_param(t.NUMERIC, data, binary=True) == value


def test_numeric_binary_layout_is_postgres():
    # 12.345 = digits [12, 3450], weight 0, positive, display scale 3
    assert t.encoder(t.NUMERIC, binary=True)(Decimal("12.345")) == struct.pack(
        "!hhHhhh", 2, 0, 0, 3, 12, 3450
    )


def test_timestamps_are_sent_in_utc_and_read_back():
    moment = dt.datetime(2026, 11, 26, 21, 0, 1, 500000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert t.encoder(t.TIMESTAMPTZ, binary=False)(moment) == b"2026-11-26 20:00:01.500000+00"
    binary = t.encoder(t.TIMESTAMPTZ, binary=True)(moment)
    assert t.decode_param(t.TIMESTAMPTZ, binary, binary=True) == moment
    assert t.decode_param(t.TIMESTAMPTZ, b"2026-11-26 20:00:01.5+00", binary=False) == moment
    assert t.pg_type("TIMESTAMP WITH TIME ZONE").oid == 1184 and t.pg_type("DECIMAL(18,3)").oid == 1700
    assert t.pg_type("VARCHAR").oid == t.VARCHAR


def test_lists_are_postgres_arrays():
    assert t.pg_type("INTEGER[]").oid == 1007 and t.pg_type("VARCHAR[]").oid == 1009
    assert t.pg_type("INTEGER[][]").oid == t.TEXT and t.pg_type("STRUCT(a INTEGER)[]").oid == t.TEXT
    text = t.encoder(1009, binary=False)
    assert text(["main", "b c", None, "", 'q"', "NULL"]) == b'{main,"b c",NULL,"","q\\"","NULL"}'
    # ndim 1, has NULLs, int4; 3 elements from 1; then 1, NULL, 3
    assert t.encoder(1007, binary=True)([1, None, 3]) == struct.pack("!iiiiiii", 1, 1, 23, 3, 1, 4, 1) + (
        struct.pack("!ii", -1, 4) + struct.pack("!i", 3)
    )
    assert t.encoder(1007, binary=True)([]) == struct.pack("!iii", 0, 0, 23)


def test_bad_parameter_bytes_are_named():
    with pytest.raises(t.ParamDecodeError, match="int4"):
        t.decode_param(t.INT4, b"twelve", binary=False)


def test_statements_are_split_and_sorted():
    assert statements.split_statements("SELECT ';'; SET x = 1 ;; -- c;\n") == ["SELECT ';'", "SET x = 1"]
    assert statements.split_statements(" ; ") == []
    command = statements.classify("SET SESSION application_name TO 'grafana'")
    assert (command.kind, command.name, command.value) == ("set", "application_name", "grafana")
    assert statements.classify("SET TIME ZONE 'UTC'").name == "timezone"
    assert statements.classify("show transaction isolation level").name == "transaction isolation level"
    assert statements.classify("BEGIN READ ONLY").tx_state == "T"
    assert statements.classify("DISCARD ALL").kind == "noop"
    assert statements.classify("DELETE FROM readings").kind == "query"  # the gate refuses it


def test_catalog_rewrites():
    sql = translate.to_duckdb(
        "SELECT pg_catalog.pg_get_userbyid(c.relowner), 'window_stats'::regclass, version(), "
        "current_setting('server_version') FROM pg_catalog.pg_class c "
        "WHERE c.relname OPERATOR(pg_catalog.~) '^w' COLLATE pg_catalog.default",
        "me",
        (("server_version", "15.0"),),
    )
    assert "PG_GET_USERBYID(" not in sql.upper() and "'me'" in sql
    assert "REGCLASS" not in sql.upper() and "relname = 'window_stats'" in sql
    assert "PostgreSQL 15.0" in sql and "'15.0'" in sql
    assert "COLLATE" not in sql.upper() and "REGEXP" in sql.upper()
    assert "pg_settings" not in translate.to_duckdb("SELECT * FROM pg_settings", "me", ()).replace(
        "AS pg_settings", ""
    )


def test_parameter_types_come_from_casts_columns_and_limits():
    columns = {"window_start": "TIMESTAMP WITH TIME ZONE", "sensor_id": "VARCHAR", "reading_count": "BIGINT"}
    sql = (
        "SELECT $5::int FROM window_stats WHERE window_start >= $1 AND sensor_id = $2 "
        "AND reading_count > $3 LIMIT $4"
    )
    assert infer_param_types(sql, [], columns) == [t.TIMESTAMPTZ, t.VARCHAR, t.INT8, t.INT8, t.INT4]
    assert infer_param_types(sql, [0, t.TEXT], columns)[:2] == [t.TIMESTAMPTZ, t.TEXT]  # the client's wins
    assert infer_param_types("SELECT $1", [], columns) == [t.TEXT]


def test_settings_refuse_an_exposed_endpoint_with_the_default_password():
    with pytest.raises(SettingsError, match="SENSORSTREAM_PG_PASSWORD"):
        load_settings(pg_host="0.0.0.0")
    assert load_settings(pg_host="0.0.0.0", pg_password="not-the-default").pg_host == "0.0.0.0"
    assert "not-the-default" not in repr(load_settings(pg_password="not-the-default"))


@pytest.mark.integration
def test_a_busy_port_names_the_setting(make_settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = pg_settings(make_settings, pg_port=taken.getsockname()[1])
        with (
            writer_store(settings, batches=1) as (con, _),
            pytest.raises(PgStartError, match="SENSORSTREAM_PG_PORT"),
            endpoint(con, settings),
        ):
            pass


@pytest.mark.integration
@pytest.mark.process  # the service's read API and endpoint each in a process of its own
def test_the_store_service_serves_it_on_the_shared_gate_and_limits_connections(make_settings):
    settings = pg_settings(make_settings, api_port=0, pg_max_connections=1)
    with writer_store(settings, batches=2) as (con, _):
        service = StoreService(con, settings).start()
        try:
            assert service.pg is not None and service.pg.gate is service.gate
            with psycopg.connect(conninfo(service.pg, settings)) as first:
                assert first.execute("SELECT count(*) FROM pipeline_metrics").fetchone() == (2,)
                with pytest.raises(psycopg.OperationalError, match="too many clients"):
                    psycopg.connect(conninfo(service.pg, settings)).close()
        finally:
            service.stop()
        assert StoreService(con, pg_settings(make_settings, pg_port=-1)).pg is None

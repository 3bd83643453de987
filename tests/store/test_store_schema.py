"""Migrations and integrity: old files upgrade, foreign files are refused, a bad batch leaves nothing."""

from __future__ import annotations

import duckdb
import pytest

from kit.store import store_settings, writer_store
from sensorstream.store.db import BatchWriteError, connect, write_transaction
from sensorstream.store.migrations import LATEST, MIGRATIONS, Migration, SchemaError, migrate
from sensorstream.tools.synthetic import FakeBatchWriter

FUTURE = Migration(
    LATEST + 1, "test: a column added by a future release", "ALTER TABLE readings ADD COLUMN quality DOUBLE"
)


@pytest.fixture
def settings(make_settings):
    return store_settings(make_settings)


def _counts(con) -> dict[str, int]:
    return {
        t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("readings", "window_stats", "pipeline_metrics", "sink_commits")
    }


def test_an_empty_file_is_migrated_to_the_latest_version(tmp_path):
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    con = connect(path)
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == LATEST
    con.close()


def test_a_v1_file_upgrades_to_the_latest_version_and_keeps_its_rows(settings):
    settings.db.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.db)) as con:
        migrate(con, MIGRATIONS[:1])  # a file written by the first release
        FakeBatchWriter(con).write_batch()
        before = _counts(con)
        windows = con.execute("SELECT * FROM window_stats ORDER BY ALL").fetchall()
        readings = con.execute("SELECT * FROM readings ORDER BY ALL").fetchall()
    con = connect(settings.db)
    try:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == LATEST
        assert _counts(con) == before and before["window_stats"] > 0
        assert con.execute("SELECT * EXCLUDE (m2_value) FROM window_stats ORDER BY ALL").fetchall() == windows
        assert con.execute("SELECT * FROM readings ORDER BY ALL").fetchall() == readings
        # Version 3 keeps each window's sum of squared deviations, so later batches merge into it.
        assert con.execute(
            "SELECT count(*) FROM window_stats "
            "WHERE abs(m2_value - coalesce(stddev_value ^ 2 * (reading_count - 1), 0)) > 1e-9 * (1 + m2_value)"
        ).fetchone() == (0,)
    finally:
        con.close()


def test_a_v4_file_keys_pipeline_metrics_like_the_ledger_and_keeps_every_row(settings):
    settings.db.parent.mkdir(parents=True, exist_ok=True)
    metrics = "SELECT * FROM pipeline_metrics ORDER BY ALL"
    with duckdb.connect(str(settings.db)) as con:
        migrate(con, MIGRATIONS[:4])  # keyed by batch_id alone: two queries, but no batch id twice
        first = FakeBatchWriter(con)
        for _ in range(3):
            first.write_batch()
        FakeBatchWriter(con, query_name="fake-sink/2", batch_id=3, offset=10_000).write_batch()
        rows = con.execute(metrics).fetchall()
    con = connect(settings.db)
    try:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == LATEST
        assert con.execute(metrics).fetchall() == rows
        assert con.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() "
            "WHERE table_name = 'pipeline_metrics' AND constraint_type = 'PRIMARY KEY'"
        ).fetchall() == [(["query_name", "batch_id"],)]
        # A reset checkpoint's batch 0 is a new row beside the first query's batch 0.
        FakeBatchWriter(con, query_name="fake-sink/3", offset=20_000).write_batch()
        assert con.execute("SELECT query_name FROM pipeline_metrics WHERE batch_id = 0 ORDER BY 1").fetchall() == [
            ("fake-sink",), ("fake-sink/3",),
        ]  # fmt: skip
        assert con.execute("SELECT count(*) FROM pipeline_metrics").fetchone()[0] == len(rows) + 1
    finally:
        con.close()


def test_event_tables_carry_no_index_so_a_batch_costs_the_same_on_a_full_store(tmp_path):
    # DuckDB maintains an ART index row by row: a primary key on readings.event_id made each batch's
    # insert and each retention delete cost more as the store grew. The sink keeps event_id unique.
    con = connect(tmp_path / "fresh.duckdb")
    try:
        keyed = con.execute(
            "SELECT DISTINCT table_name FROM duckdb_constraints() WHERE constraint_type IN ('PRIMARY KEY', 'UNIQUE') "
            "UNION SELECT table_name FROM duckdb_indexes()"
        ).fetchall()
        not_null = con.execute(
            "SELECT table_name FROM duckdb_columns() WHERE column_name = 'event_id' AND NOT is_nullable ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    assert not {("readings",), ("late_events",), ("anomalies",)} & set(keyed)
    assert ("window_stats",) in keyed  # one row per sensor and window: its key stays
    assert not_null == [("anomalies",), ("late_events",), ("readings",)]


def test_window_stats_has_no_check_over_several_columns(tmp_path):
    # DuckDB turns each UPDATE of such a table into a slow path (47 s vs 0.8 s for 3 x 200 K
    # windows); the sink updates window_stats every batch. Single-column checks are cheap and stay.
    con = connect(tmp_path / "fresh.duckdb")
    checks = con.execute(
        "SELECT constraint_text, constraint_column_names FROM duckdb_constraints() "
        "WHERE table_name = 'window_stats' AND constraint_type = 'CHECK'"
    ).fetchall()
    con.close()
    assert checks and all(len(columns) == 1 for _, columns in checks), checks
    assert any("reading_count > 0" in text for text, _ in checks)


def test_a_future_migration_upgrades_a_file_and_keeps_its_rows(settings):
    with writer_store(settings) as (con, _):
        before = _counts(con)
        assert migrate(con, (*MIGRATIONS, FUTURE)) == LATEST
        assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == FUTURE.version
        assert "quality" in {c[0] for c in con.execute("DESCRIBE readings").fetchall()}
        assert _counts(con) == before
        assert migrate(con, (*MIGRATIONS, FUTURE)) == FUTURE.version  # idempotent: nothing left to do


def test_a_file_from_a_newer_release_is_refused(settings):
    with writer_store(settings) as (con, _):
        migrate(con, (*MIGRATIONS, FUTURE))
    with pytest.raises(
        SchemaError,
        match=rf"schema version {FUTURE.version}, newer than this sensorstream understands \({LATEST}\)",
    ):
        connect(settings.db)


def test_our_tables_without_a_ledger_are_refused(tmp_path):
    path = tmp_path / "foreign.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE readings (event_id VARCHAR)")
    with pytest.raises(SchemaError, match="no schema_version ledger; it was not created by sensorstream"):
        connect(path)


@pytest.mark.parametrize(
    ("bad_statement", "message"),
    [
        # a duplicate key: this window is already in window_stats
        ("INSERT INTO window_stats SELECT * FROM window_stats LIMIT 1", "Duplicate key"),
        # NULL in a required column
        ("INSERT INTO late_events VALUES ('e1', NULL, now(), 1, now(), now(), 0, 0, 9, now())", "NOT NULL"),
        # a wrong-shaped row
        ("INSERT INTO pipeline_metrics VALUES (99, 'q', now())", "columns but 3 values were supplied"),
    ],
)
def test_a_bad_row_rolls_back_the_whole_batch(settings, bad_statement, message):
    with writer_store(settings) as (con, writer):
        before = _counts(con)
        with (
            pytest.raises(BatchWriteError, match=message) as caught,
            write_transaction(con, "batch 99") as tx,
        ):
            tx.cur.execute("INSERT INTO sink_commits VALUES ('q', 99, now(), NULL, NULL, NULL)")
            tx.cur.execute(
                "INSERT INTO window_stats VALUES ('s', '2026-01-01', '2026-01-01 00:01', NULL, NULL, 1, 1, 1, 1, NULL, false, now(), 0)"
            )
            tx.cur.execute(bad_statement)
        assert "batch 99 rolled back, nothing written" in str(caught.value)
        assert _counts(con) == before
        writer.write_batch()  # and the store takes the next batch normally
        assert _counts(con)["sink_commits"] == before["sink_commits"] + 1

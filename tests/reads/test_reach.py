"""reads.reach: which checked statements need the store's data, only its catalog, or nothing of it."""

from __future__ import annotations

import duckdb
import pytest

from sensorstream.reads.reach import ReachJudge
from sensorstream.tools.faults.pg_attacks import HEAVY


@pytest.fixture(scope="module")
def judge():
    return ReachJudge(duckdb.connect(":memory:"))


@pytest.mark.parametrize(
    ("sql", "kind", "stable"),
    [
        ("SELECT 1", "none", True),
        ("SELECT 'PostgreSQL 15.0' AS version", "none", True),
        ("SELECT * FROM (SELECT * FROM (VALUES ('block_size', '8192')) AS t(name, setting))", "none", True),
        ("WITH x AS (SELECT 1 AS a) SELECT a FROM x", "none", True),
        ("SELECT now()", "none", False),
        ("SELECT current_timestamp", "none", False),
        ("SELECT * FROM range(3)", "none", False),
        ("SELECT * FROM pg_catalog.pg_database", "catalog", True),
        ("SELECT relname FROM pg_class WHERE relname = $1", "catalog", True),
        ("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'", "catalog", True),
        ("SELECT * FROM duckdb_columns()", "catalog", True),
        ("SELECT col_description(1, 1)", "catalog", True),  # a macro over the catalog
        ("SELECT current_database()", "catalog", False),
        ("SELECT 'happy'::mood", "catalog", True),  # a type the store would define
        ("SELECT relname, now() FROM pg_class", "catalog", False),
        ("SELECT * FROM readings", "store", False),
        ("SELECT * FROM main.readings", "store", False),
        ("SELECT * FROM sensorstream.main.pg_class", "store", False),
        ("WITH x AS (SELECT * FROM readings) SELECT * FROM x", "store", False),
        ("SELECT * FROM pg_class, readings", "store", False),
        ("SELECT 1 WHERE EXISTS (SELECT 1 FROM window_stats)", "store", False),
        ("SELECT * FROM pragma_storage_info('readings')", "store", False),
        ("SELECT nextval('ids')", "store", False),
        ("SELECT store_macro(1)", "store", False),  # not DuckDB's own: the store's
        (HEAVY, "store", False),
    ],
)
def test_a_statement_reaches_only_what_it_reads(judge, sql, kind, stable):
    reach = judge(sql)
    assert (reach.kind, reach.stable) == (kind, stable)


def test_a_text_it_cannot_serialize_needs_the_store(judge):
    assert judge("PIVOT readings ON sensor_id USING count(*)").kind == "store"

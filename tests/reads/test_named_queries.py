"""The named queries: documented columns, bound filters, sensor status, same answer both ways."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import duckdb
import pandas as pd
import pytest

from kit.store import serving, store_settings, writer_store
from sensorstream.reads import catalog
from sensorstream.reads.errors import QueryError
from sensorstream.reads.execute import run_query
from sensorstream.serve.client import StoreClient
from sensorstream.store.db import write_transaction


@pytest.fixture
def settings(make_settings):
    return store_settings(make_settings)


@pytest.fixture(scope="module")
def store(module_settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """A store of 5 batches, shared by the tests that only read it."""
    with writer_store(store_settings(module_settings)) as (con, _):
        yield con


@pytest.mark.parametrize("name", list(catalog.QUERIES))
def test_every_query_answers_its_documented_columns(store, name):
    result = run_query(store, name)
    assert tuple(result.columns) == catalog.QUERIES[name].columns


def test_timestamps_come_back_as_iso_strings(store):
    row = run_query(store, "latest_windows", {"limit": 1}).rows[0]
    assert row[3] == "2026-01-01T00:00:00+00:00"  # window_start


def test_a_filter_value_is_bound_never_spliced_into_the_sql(store):
    everything = run_query(store, "latest_windows", {"limit": 10_000}).rows
    injected = run_query(store, "latest_windows", {"sensor_id": "x' OR '1'='1", "limit": 10_000}).rows
    one = run_query(store, "latest_windows", {"sensor_id": "sensor-0003"}).rows
    assert len(everything) > 1
    assert injected == []
    assert {r[0] for r in one} == {"sensor-0003"}


def test_unknown_queries_and_parameters_are_refused_by_name(store):
    with pytest.raises(QueryError, match="no query named 'nope'"):
        run_query(store, "nope")
    with pytest.raises(QueryError, match="has no parameter"):
        run_query(store, "totals", {"limit": 3})
    with pytest.raises(QueryError, match="out of range"):
        run_query(store, "latest_windows", {"limit": 0})
    with pytest.raises(QueryError, match="not an ISO-8601 time"):
        run_query(store, "sensor_series", {"until": "yesterday"})


def test_since_takes_minutes_before_the_newest_data_or_an_iso_time(settings):
    with writer_store(settings, batches=130) as (con, _):  # 130 s of event time: windows 00:00-00:02
        starts = {r[3] for r in run_query(con, "latest_windows", {"since": 1, "limit": 10_000}).rows}
        absolute = {r[3] for r in run_query(con, "latest_windows", {"since": "2026-01-01T00:02:00Z"}).rows}
    assert starts == {"2026-01-01T00:01:00+00:00", "2026-01-01T00:02:00+00:00"}
    assert absolute == {"2026-01-01T00:02:00+00:00"}


def test_sensor_status_is_ok_anomaly_or_stale(settings):
    with writer_store(settings, batches=1) as (con, writer):
        # 186 batches = 186 s of event time. The fake writer puts an anomaly on sensor-0001 every
        # 5th batch (batch 185 lands in the newest window); sensor-0002 we silence for the last
        # two windows, as if it had stopped reporting.
        for _ in range(185):
            writer.write_batch()
        with write_transaction(con, "silence sensor-0002") as tx:
            newest = tx.cur.execute("SELECT max(window_start) FROM window_stats").fetchone()[0]
            tx.cur.execute(
                "DELETE FROM window_stats WHERE sensor_id = 'sensor-0002' AND window_start > ?",
                [newest - timedelta(minutes=2)],
            )
        status = dict((r[0], r[9]) for r in run_query(con, "sensors").rows)
    assert status["sensor-0002"] == "stale"
    assert status["sensor-0001"] == "anomaly"  # batch 185 wrote one into the latest window
    assert status["sensor-0003"] == "ok"


def test_the_client_gives_the_same_frame_over_http_and_from_the_file(settings):
    with writer_store(settings) as (con, _), serving(con, settings), StoreClient(settings) as client:
        over_api = client.query("latest_windows", limit=50)
        assert client.mode == "api"
    with StoreClient(settings) as client:  # the writer is closed now: the client reads the file
        from_file = client.query("latest_windows", limit=50)
        assert client.mode == "file"
    pd.testing.assert_frame_equal(over_api, from_file)
    assert str(over_api["window_start"].dtype) == "datetime64[ns, UTC]"

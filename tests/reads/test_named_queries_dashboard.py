"""Named queries added for the dashboard: ``pipeline_rates``."""

from __future__ import annotations

import pytest

from kit.dashboard import filled_store
from sensorstream.reads import catalog
from sensorstream.reads.errors import QueryError
from sensorstream.reads.execute import run_query
from sensorstream.store.db import connect, write_transaction


@pytest.fixture
def settings(make_settings):
    return make_settings()


def _rows(con, **params) -> list[dict]:
    result = run_query(con, "pipeline_rates", params)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def test_pipeline_rates_answers_its_documented_columns_oldest_first(settings):
    with filled_store(settings) as con:
        result = run_query(con, "pipeline_rates")
        newest_two = _rows(con, limit=2)
    assert tuple(result.columns) == catalog.QUERIES["pipeline_rates"].columns
    assert [r[0] for r in result.rows] == [0, 1, 2]  # batch ids, oldest first
    assert [r["batch_id"] for r in newest_two] == [1, 2]  # the newest `limit`, still oldest first


def test_rates_fall_back_to_the_sinks_numbers_until_monitoring_fills_them(settings):
    with filled_store(settings) as con:
        before = _rows(con)
        with write_transaction(con, "monitoring") as tx:
            tx.cur.execute(
                "UPDATE pipeline_metrics SET input_rows_per_second = 11, processed_rows_per_second = 22, "
                "consumer_lag = 5 WHERE batch_id = 2"
            )
        after = _rows(con)
        spans = con.execute(
            "SELECT batch_id, input_rows, epoch(committed_at) - epoch(lag(committed_at) OVER (ORDER BY batch_id)), "
            "rows_per_second FROM pipeline_metrics ORDER BY batch_id"
        ).fetchall()
    first, *rest = before
    assert first["input_rate"] is None  # no earlier commit to measure against
    for row, (_, rows, span, sink_rate) in zip(rest, spans[1:], strict=True):
        assert row["input_rate"] == pytest.approx(rows / span)
        assert row["processing_rate"] == pytest.approx(sink_rate)
    assert all(r["consumer_lag"] is None and r["age_seconds"] >= 0 for r in before)
    assert (after[-1]["input_rate"], after[-1]["processing_rate"], after[-1]["consumer_lag"]) == (11, 22, 5)


def test_pipeline_rates_is_empty_before_the_first_batch_and_binds_its_limit(settings):
    con = connect(settings.db)
    try:
        assert run_query(con, "pipeline_rates").rows == []
        with pytest.raises(QueryError, match="out of range"):
            run_query(con, "pipeline_rates", {"limit": 0})
        with pytest.raises(QueryError, match="not an integer"):
            run_query(con, "pipeline_rates", {"limit": "1; DROP TABLE readings"})
    finally:
        con.close()

"""The sink's merge, batch by batch, on a real DuckDB file (no Spark needed to state the rules)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from kit.batches import T0, BatchBuilder
from kit.parse import records
from sensorstream.reads.execute import health, run_query
from sensorstream.schema import MAX_VALUE, encode, make_event
from sensorstream.sink import ledger
from sensorstream.sink.merge import BatchMerger
from sensorstream.store.db import connect


def window_rows(con):
    return con.execute(
        "SELECT sensor_id, strftime(window_start, '%H:%M'), reading_count, avg_value, min_value, max_value, is_final "
        "FROM window_stats ORDER BY 1, 2"
    ).fetchall()


def test_one_batch_becomes_windows_readings_and_dead_letters(store):
    merger, con = store
    b = BatchBuilder()
    b.event("a", "s1", 0, 10).event("b", "s1", 30, 20).event("c", "s1", 61, 5).bad(b"{oops", "not_json")
    result = merger.merge(0, b.take())
    assert (result.new_readings, result.dead_letters, result.late_rows) == (3, 1, 0)
    assert window_rows(con) == [
        ("s1", "20:00", 2, 15.0, 10.0, 20.0, False),
        ("s1", "20:01", 1, 5.0, 5.0, 5.0, False),
    ]
    assert con.execute("SELECT raw_value, error FROM dead_letters").fetchall() == [(b"{oops", "not_json")]


def test_an_event_id_counts_once_within_a_batch_and_across_batches(store):
    merger, con = store
    b = BatchBuilder()
    merger.merge(0, b.event("a", "s1", 1, 10).event("a", "s1", 1, 10).event("b", "s1", 2, 30).take())
    result = merger.merge(1, b.event("a", "s1", 1, 10).event("c", "s1", 3, 20).take())
    assert result.duplicate_rows == 1 and result.new_readings == 1
    assert window_rows(con) == [("s1", "20:00", 3, 20.0, 10.0, 30.0, False)]
    assert con.execute("SELECT count(*) FROM readings").fetchone()[0] == 3


def test_out_of_order_within_lateness_counts_and_behind_the_watermark_is_late(store):
    merger, con = store
    b = BatchBuilder()
    merger.merge(0, b.event("a", "s1", 150, 1).take())  # newest event time 20:02:30 -> watermark 20:02:00
    result = merger.merge(1, b.event("in-time", "s1", 121, 2).event("too-late", "s1", 59, 3).take())
    assert result.watermark.strftime("%H:%M:%S") == "20:02:00"
    assert (result.new_readings, result.late_rows) == (2, 1)
    # 20:00 window ended (20:01) before the watermark: final, so the event is late, not counted.
    assert con.execute("SELECT event_id, strftime(watermark, '%H:%M:%S') FROM late_events").fetchall() == [
        ("too-late", "20:02:00")
    ]
    assert window_rows(con) == [("s1", "20:02", 2, 1.5, 1.0, 2.0, False)]
    # The late event is still stored (flagged), so nothing is lost.
    assert con.execute("SELECT is_late FROM readings WHERE event_id = 'too-late'").fetchone() == (True,)


def test_windows_turn_final_once_the_watermark_passes_their_end(store):
    merger, con = store
    b = BatchBuilder()
    merger.merge(0, b.event("a", "s1", 10, 1).take())
    assert window_rows(con)[0][-1] is False
    merger.merge(1, b.event("b", "s1", 95, 1).take())  # max 20:01:35 -> next watermark 20:01:05 >= 20:01
    assert [r[-1] for r in window_rows(con)] == [True, False]


def test_a_replayed_batch_id_is_skipped_and_changes_nothing(store):
    merger, con = store
    b = BatchBuilder()
    batch = b.event("a", "s1", 1, 10).event("b", "s2", 2, 20).take()
    merger.merge(0, batch)
    before = window_rows(con)
    assert merger.merge(0, batch).skipped
    assert window_rows(con) == before
    assert con.execute("SELECT count(*) FROM sink_commits").fetchone()[0] == 1


def test_a_reset_checkpoint_reuses_batch_ids_without_double_counting(store, make_settings):
    merger, con = store
    b = BatchBuilder()
    batch = b.event("a", "s1", 1, 10).event("b", "s1", 2, 20).take()
    merger.merge(0, batch)
    fresh = BatchMerger(con, merger.settings, query_name="q/2")  # new checkpoint: batch ids restart
    result = fresh.merge(0, batch)
    assert not result.skipped and result.duplicate_rows == 2
    assert window_rows(con) == [("s1", "20:00", 2, 15.0, 10.0, 20.0, False)]


def test_a_reset_checkpoint_keeps_the_old_querys_ledger_and_metrics_rows(store):
    merger, con = store
    b = BatchBuilder()
    merger.merge(0, b.event("a", "s1", 1, 10).take())
    merger.merge(1, b.event("b", "s1", 2, 20).take())
    fresh = BatchMerger(con, merger.settings, query_name="q/2")  # new checkpoint: batch ids restart
    fresh.merge(0, b.event("c", "s1", 3, 30).event("d", "s1", 4, 40).take())
    by_commit = "SELECT query_name, batch_id{} FROM {} ORDER BY committed_at"
    assert con.execute(by_commit.format(", input_rows", "pipeline_metrics")).fetchall() == [
        ("q/1", 0, 1), ("q/1", 1, 1), ("q/2", 0, 2),
    ]  # fmt: skip
    assert con.execute(by_commit.format("", "sink_commits")).fetchall() == [
        ("q/1", 0),
        ("q/1", 1),
        ("q/2", 0),
    ]
    # Monitoring's figures land on the named query's batch only.
    ledger.annotate(con, "q/2", 0, consumer_lag=7)
    assert con.execute(
        "SELECT query_name, consumer_lag FROM pipeline_metrics WHERE batch_id = 0 ORDER BY query_name"
    ).fetchall() == [("q/1", None), ("q/2", 7)]
    # The newest batch is the newest commit (q/2's batch 0), not the largest batch id (q/1's 1).
    last = run_query(con, "last_batch")
    assert dict(zip(last.columns, last.rows[0], strict=True))["query_name"] == "q/2"
    assert health(con)["last_batch_id"] == 0


def test_a_failing_batch_rolls_back_whole(store):
    merger, con = store
    b = BatchBuilder()
    b.bad(b"junk", "not_json").event("ok", "s1", 1, 10)
    b.rows.append({**b.rows[-1], "event_id": "no-sensor", "sensor_id": None, "kafka_offset": 99})
    with pytest.raises(Exception, match=r"(?i)not null|constraint"):
        merger.merge(0, b.take())
    for table in ("readings", "dead_letters", "window_stats", "sink_commits", "pipeline_metrics"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table


def test_anomalies_by_threshold_and_by_zscore(store):
    merger, con = store
    b = BatchBuilder()
    # Ten quiet minutes of history for s1 (values 20 +- 1, past the warm-up), then a 35 (z-score)
    # and a 70 (threshold).
    for minute in range(10):
        for i, v in enumerate((19.0, 20.0, 21.0, 20.0)):
            b.event(f"h{minute}-{i}", "s1", minute * 60 + i, v)
    merger.merge(0, b.take())
    result = merger.merge(1, b.event("spike", "s1", 601, 35.0).event("hot", "s1", 602, 70.0).take())
    assert result.anomalies == 2
    rows = dict(con.execute("SELECT event_id, rule FROM anomalies").fetchall())
    assert rows == {"spike": "zscore", "hot": "threshold"}
    assert con.execute("SELECT score FROM anomalies WHERE event_id = 'spike'").fetchone()[0] > 4


def test_pipeline_metrics_account_for_every_input_row(store):
    merger, con = store
    b = BatchBuilder()
    merger.merge(0, b.event("a", "s1", 100, 1).take())
    b.event("a", "s1", 100, 1).event("late", "s1", 1, 1).event("new", "s1", 101, 1).bad(b"x", "not_json")
    merger.merge(1, b.take())
    row = con.execute(
        "SELECT input_rows, valid_rows, new_readings, duplicate_rows, late_rows, dead_letters "
        "FROM pipeline_metrics WHERE batch_id = 1"
    ).fetchone()
    assert row == (4, 3, 2, 1, 1, 1)
    inputs, valid, new, dup, _late, dead = row
    assert valid + dead == inputs and new + dup == valid


def test_sliding_windows_match_a_brute_force_count(make_settings):
    """WINDOW 60 s sliding every 20 s: each event sits in three windows, each window exact."""
    import random

    settings = make_settings(window="60 seconds", slide="20 seconds", allowed_lateness="30 seconds")
    con = connect(settings.db)
    merger = BatchMerger(con, settings, query_name="q/1")
    rng = random.Random(3)
    b = BatchBuilder(window_seconds=20)  # readings carry the latest window start: the slide
    events = [(f"e{i}", 3 * i + rng.random(), round(rng.uniform(0, 10), 3)) for i in range(60)]  # 0..180 s
    for batch_id, chunk in enumerate((events[:20], events[20:40], events[40:])):
        for event_id, seconds, value in sorted(chunk, key=lambda e: -e[1]):  # newest first
            b.event(event_id, "s1", seconds, value)
        merger.merge(batch_id, b.take())
    got = {
        (round(start), count, round(avg, 9))
        for start, count, avg in con.execute(
            "SELECT epoch(window_start - TIMESTAMPTZ '2026-11-26 20:00:00+00'), reading_count, avg_value "
            "FROM window_stats"
        ).fetchall()
    }
    want = set()
    for start in range(-40, 181, 20):
        inside = [v for _, t, v in events if start <= t < start + 60]
        if inside:
            want.add((start, len(inside), round(sum(inside) / len(inside), 9)))
    assert got == want
    assert con.execute("SELECT count(*) FROM late_events").fetchone()[0] == 0
    con.close()


def test_a_copy_long_after_its_original_and_across_a_restart_is_still_a_duplicate(make_settings):
    """The original's window is final and 50 batches have passed; the sink restarted in between."""
    settings = make_settings(window="1 minute", allowed_lateness="30 seconds")
    con = connect(settings.db)
    b = BatchBuilder()
    BatchMerger(con, settings, query_name="q/1").merge(0, b.event("orig", "s1", 5, 42.0).take())
    merger = BatchMerger(con, settings, query_name="q/1")
    for batch_id in range(1, 51):  # ten seconds of event time per batch: the watermark moves on
        merger.merge(batch_id, b.event(f"e{batch_id}", "s1", 10 * batch_id, 1.0).take())
    con.close()

    con = connect(settings.db)  # a restart: a new connection and a new merger read the ledger
    before = window_rows(con)
    result = BatchMerger(con, settings, query_name="q/1").merge(51, b.event("orig", "s1", 5, 42.0).take())
    assert (result.duplicate_rows, result.new_readings, result.late_rows) == (1, 0, 0)
    assert con.execute("SELECT count(*) FROM readings WHERE event_id = 'orig'").fetchone() == (1,)
    assert con.execute("SELECT count(*) FROM late_events").fetchone() == (0,)
    assert window_rows(con) == before
    con.close()


def test_windows_merged_batch_by_batch_equal_one_computation_over_all_events(make_settings):
    """Count, mean, min, max and stddev folded in over many batches equal DuckDB's own aggregate."""
    import random

    settings = make_settings(window="1 minute", allowed_lateness="30 seconds")
    con = connect(settings.db)
    merger = BatchMerger(con, settings, query_name="q/1")
    rng = random.Random(5)
    b = BatchBuilder()
    for batch_id in range(12):  # 12 batches of 40 events over 3 sensors, each within the lateness
        for i in range(40):
            b.event(f"e{batch_id}-{i}", f"s{i % 3}", 5 * batch_id + rng.uniform(0, 20), rng.gauss(20, 3))
        merger.merge(batch_id, b.take())
    got = con.execute(
        "SELECT sensor_id, window_start, reading_count, avg_value, min_value, max_value, stddev_value "
        "FROM window_stats ORDER BY 1, 2"
    ).fetchall()
    want = con.execute(
        "SELECT sensor_id, window_start, count(*), avg(value), min(value), max(value), stddev_samp(value) "
        "FROM readings WHERE NOT is_late GROUP BY ALL ORDER BY 1, 2"
    ).fetchall()
    con.close()
    assert len(got) == len(want) > 3
    for g, w in zip(got, want, strict=True):
        assert g[:3] == w[:3] and g[4:6] == w[4:6]
        assert g[3] == pytest.approx(w[3], rel=1e-12) and g[6] == pytest.approx(w[6], rel=1e-9)


def test_poison_records_become_dead_letters_and_every_valid_event_around_them_commits(store):
    """Records that once failed the whole batch (and a replay into the same failure), between 800
    valid events: each is a dead letter with its reason, every valid event commits, and so does the
    next batch."""
    merger, con = store
    good = [
        encode(make_event(f"e{i}", f"s{i % 8}", T0 + timedelta(seconds=i / 10), 20.0)) for i in range(900)
    ]
    extra = b'{"event_id":"p","sensor_id":"s","event_time":"2026-11-26T20:00:00Z","value":1,"x":%s}'
    poison = {
        b"[" * 1000: "too_deep",
        extra % (b"[" * 1000 + b"]" * 1000): "too_deep",
        extra % (b"1" * 5000): None,  # a valid event: a huge integer in a field the event does not use
        extra.replace(b"2026-11-26T20:00:00Z", b"-290308-12-21T19:59:05.224192Z") % b"1": "bad_event_time",
        b'{"event_id":"p","sensor_id":"s","event_time":"2026-11-26T20:00:00Z","value":'
        + b"9" * 5000
        + b"}": ("value_not_finite"),
        b"\xff\xfe[": "not_utf8",
        b"[" * 1_000_000: "too_deep",
    }
    values: list[bytes | None] = []
    for i, raw in enumerate([*poison, None]):  # None: a tombstone
        values += [*good[i * 100 : (i + 1) * 100], raw]
    result = merger.merge_records(0, records(values))
    assert (result.new_readings, result.dead_letters) == (801, 7)
    dead = dict(con.execute("SELECT raw_value, error FROM dead_letters").fetchall())
    assert dead == {raw: reason for raw, reason in poison.items() if reason} | {None: "not_json"}
    result = merger.merge_records(1, records(good[800:], first_offset=len(values)))
    assert result.new_readings == 100
    assert con.execute("SELECT count(*) FROM readings").fetchone()[0] == 901
    assert con.execute("SELECT count(*) FROM sink_commits").fetchone()[0] == 2


def test_values_as_large_as_allowed_keep_every_window_finite(store):
    """±MAX_VALUE in one window, batch after batch, commits with a finite mean and spread; beyond it a
    value is out_of_range (±1.7e308 made a window's mean infinite, refused by the store, on every replay)."""
    merger, con = store
    sent = 0
    for batch_id, signs in enumerate(((1, -1), (-1, -1, 1))):
        values = [
            encode(
                make_event(
                    f"e{sent + i}", "s1", T0 + timedelta(seconds=i % 60), signs[i % len(signs)] * MAX_VALUE
                )
            )
            for i in range(300)
        ]
        values += [encode(make_event(f"big{batch_id}", "s1", T0, -1.7976931348623157e308))]
        result = merger.merge_records(batch_id, records(values, first_offset=sent))
        assert (result.new_readings, result.dead_letters) == (300, 1)
        sent += len(values)
    assert con.execute("SELECT DISTINCT error FROM dead_letters").fetchall() == [("out_of_range",)]
    count, mean, spread = con.execute(
        "SELECT reading_count, avg_value, stddev_value FROM window_stats"
    ).fetchone()
    assert count == 600 and math.isfinite(mean) and math.isfinite(spread)

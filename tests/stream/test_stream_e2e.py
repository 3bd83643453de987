"""Kafka -> Spark -> DuckDB, end to end, against the reference model (computed without Spark or the sink)."""

from __future__ import annotations

import pytest

from kit.stream import build_stream
from sensorstream.kafka.topics import create_topic
from sensorstream.sink.merge import BatchMerger
from sensorstream.store.db import connect
from sensorstream.stream.job import StreamJob
from sensorstream.tools.reference import Expectation, Message

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_windows_late_events_and_dead_letters_match_an_independent_computation(
    kafka, spark, topic, make_settings
):
    settings = make_settings(bootstrap_servers=kafka.bootstrap_servers, topic=topic, trigger="500 ms")
    create_topic({"bootstrap.servers": kafka.bootstrap_servers}, topic, 3)
    stream = build_stream()
    # Phase 0 is in the topic before the job starts (its first batch takes it whole); phase 1 is
    # sent once phase 0 is committed and holds no newer event: the watermark moves once, between.
    messages = [Message(key, value, "sent") for phase in stream.phases for key, value in phase]
    phases = [len(phase) for phase in stream.phases]
    expected = Expectation(messages, settings.valid_ranges, window_s=60, lateness_s=30, batches=phases).con

    con = connect(settings.db)
    job = StreamJob(spark, settings, BatchMerger(con, settings))
    sent = stream.send(kafka.bootstrap_servers, topic, 0)
    job.start()
    try:
        job.wait_idle(timeout=180, min_offsets=sent)
        sent += stream.send(kafka.bootstrap_servers, topic, 1)
        job.wait_idle(timeout=180, min_offsets=sent)
    finally:
        job.stop()

    # Every message is accounted for: a reading (first copy), a duplicate, or a dead letter.
    totals = con.execute(
        "SELECT sum(input_rows), sum(new_readings), sum(duplicate_rows), sum(dead_letters) FROM pipeline_metrics"
    ).fetchone()
    assert totals[0] == stream.total
    assert totals[1] + totals[2] + totals[3] == stream.total

    got_windows = con.execute(
        "SELECT sensor_id, window_start, reading_count, round(avg_value, 9), min_value, max_value "
        "FROM window_stats ORDER BY 1, 2"
    ).fetchall()
    want_windows = expected.execute(
        "SELECT sensor_id, window_start, reading_count, round(avg_value, 9), min_value, max_value "
        "FROM expected_windows ORDER BY 1, 2"
    ).fetchall()
    assert got_windows == want_windows

    got_late = {r[0] for r in con.execute("SELECT event_id FROM late_events").fetchall()}
    want_late = {r[0] for r in expected.execute("SELECT event_id FROM classified WHERE late_lo").fetchall()}
    assert got_late == want_late and len(got_late) == 6

    got_dead = sorted(r[0] for r in con.execute("SELECT error FROM dead_letters").fetchall())
    want_dead = sorted(r[0] for r in expected.execute("SELECT error FROM expected_dead, range(n)").fetchall())
    assert got_dead == want_dead
    assert con.execute("SELECT count(*) FROM dead_letters WHERE raw_value IS NULL").fetchone()[0] == 0

    # Windows the watermark passed are final; the newest ones are still open.
    finals = dict(con.execute("SELECT is_final, count(*) FROM window_stats GROUP BY 1").fetchall())
    assert finals.get(True, 0) > 0 and finals.get(False, 0) > 0
    con.close()

"""The fault checker itself: it must see a lost, doubled or wrong row (so a passing scenario means
something), and it must refuse a stream whose result would depend on batch boundaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensorstream.config import Settings
from sensorstream.store.db import connect
from sensorstream.tools.reference import Expectation, StreamSpec, build, topic_check

RANGES = Settings().valid_ranges


def store_from(expected: Expectation, db: Path) -> None:
    """A store holding exactly the expected result (what a correct job would write)."""
    con = connect(db)
    con.register("exp_events", expected.con.execute("SELECT * FROM classified").to_arrow_table())
    con.register("exp_windows", expected.con.execute("SELECT * FROM expected_windows").to_arrow_table())
    con.register(
        "exp_dead",
        expected.con.execute("SELECT seq, raw, error FROM input WHERE error IS NOT NULL").to_arrow_table(),
    )
    con.execute(
        """
        INSERT INTO readings (event_id, sensor_id, event_time, value, window_start, is_late, kafka_partition,
                              kafka_offset, batch_id, ingested_at)
        SELECT event_id, sensor_id, event_time, value, window_start, late_lo, 0, seq, 0, now() FROM exp_events;
        INSERT INTO late_events (event_id, sensor_id, event_time, value, window_start, watermark, kafka_partition,
                                 kafka_offset, batch_id, detected_at)
        SELECT event_id, sensor_id, event_time, value, window_start, now(), 0, seq, 0, now()
        FROM exp_events WHERE late_lo;
        INSERT INTO window_stats (sensor_id, window_start, window_end, reading_count, avg_value, min_value,
                                  max_value, updated_at)
        SELECT sensor_id, window_start, window_start + INTERVAL 1 MINUTE, reading_count, avg_value, min_value,
               max_value, now() FROM exp_windows;
        INSERT INTO dead_letters (kafka_topic, kafka_partition, kafka_offset, raw_value, error, batch_id, received_at)
        SELECT 't', 0, seq, raw, error, 0, now() FROM exp_dead;
        """
    )
    con.close()


@pytest.fixture
def stream():
    messages = build(StreamSpec(events=3_000, sensors=20, step_ms=50, malformed=0.05, seed=3), RANGES)
    return messages, Expectation(messages, RANGES, behind=500, ahead=100)


def test_a_correct_store_passes(stream, tmp_path):
    _, expected = stream
    store_from(expected, tmp_path / "s.duckdb")
    verdict = expected.compare(tmp_path / "s.duckdb")
    assert verdict.ok and verdict.late_expected > 0 and verdict.dead_kinds >= 10, verdict


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        ("DELETE FROM readings WHERE event_id = (SELECT min(event_id) FROM readings WHERE NOT is_late)", "lost"),
        ("UPDATE window_stats SET reading_count = reading_count + 1 WHERE rowid = 0", "duplicated"),
        ("UPDATE window_stats SET max_value = max_value + 1 WHERE rowid = 1", "wrong_windows"),
        ("DELETE FROM window_stats WHERE rowid = 2", "wrong_windows"),
        ("DELETE FROM late_events WHERE rowid = 0", "wrong_late"),
        ("UPDATE dead_letters SET error = 'not_json' WHERE error <> 'not_json' AND rowid = "
         "(SELECT min(rowid) FROM dead_letters WHERE error <> 'not_json')", "dead_lost"),
        ("INSERT INTO dead_letters SELECT kafka_topic, kafka_partition, kafka_offset + 1000000, kafka_key, raw_value, "
         "error, batch_id, received_at FROM dead_letters LIMIT 1", "dead_extra"),
    ],
)  # fmt: skip
def test_each_kind_of_damage_is_counted(stream, tmp_path, damage, field):
    _, expected = stream
    db = tmp_path / "s.duckdb"
    store_from(expected, db)
    con = connect(db)
    con.execute(damage)
    con.close()
    verdict = expected.compare(db)
    assert getattr(verdict, field) >= 1 and not verdict.ok, verdict


def test_a_stream_that_depends_on_batch_boundaries_is_refused():
    # Event time racing ahead (1 s per message): a batch boundary 100 messages off decides lateness.
    messages = build(StreamSpec(events=2_000, sensors=5, step_ms=1_000, disorder=0.05, seed=1), RANGES)
    with pytest.raises(ValueError, match="batch boundaries"):
        Expectation(messages, RANGES, behind=500, ahead=100)


def test_topic_check_counts_lost_and_doubled_messages(stream):
    from collections import Counter

    messages, _ = stream
    topic = Counter(m.value for m in messages)
    assert topic_check(messages, topic)["topic_lost"] == 0
    first, second = messages[0].value, messages[1].value
    topic[first] -= 1
    topic[second] += 2
    got = topic_check(messages, topic)
    assert (got["topic_lost"], got["topic_doubled"]) == (1, 2)

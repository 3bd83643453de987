"""The soak benchmark's own parts: a pre-filled store takes real batches exactly; the verdict's rules."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sensorstream.kafka.consume import consume
from sensorstream.kafka.topics import create_topic
from sensorstream.sink.parse import RecordParser
from sensorstream.store.db import connect
from sensorstream.tools.bench.load import BulkLoad
from sensorstream.tools.bench.soak import _save, per_minute, sink_batches, verdict
from sensorstream.tools.synthetic import prefill


def test_a_prefilled_store_takes_batches_and_finds_every_copy_even_hours_old(make_settings):
    settings = make_settings()
    con = connect(settings.db)
    try:
        prefill(con, 50_000, datetime.now(UTC) - timedelta(minutes=2), sensors=100)
        assert con.execute("SELECT count(*), count(DISTINCT event_id) FROM readings").fetchone() == (
            50_000,
            50_000,
        )
        assert con.execute("SELECT bool_and(is_final), sum(reading_count) FROM window_stats").fetchone() == (
            True,
            50_000,
        )
        figures = sink_batches(con, settings, batches=4, events=2_000, sensors=100)
        # 1 % copies of the previous batch (batches 1-3) and 1 per 2,000 copies of hours-old readings.
        assert figures.duplicates == 3 * 20 + 4 * 1
        assert figures.late == 4 * 2  # 0.1 % an hour behind: their windows are final
        total, distinct = con.execute("SELECT count(*), count(DISTINCT event_id) FROM readings").fetchone()
        assert total == distinct == 50_000 + 4 * 2_000 - 3 * 20
    finally:
        con.close()


def _samples(lag_per_s: float, file_mb_per_s: float) -> list[dict]:
    return [
        {"t": t, "consumer_lag": 1000 + lag_per_s * t, "file_mb": 50 + file_mb_per_s * t, "python_rss_mb": 300,
         "jvm_rss_mb": 700}
        for t in range(0, 600, 10)
    ]  # fmt: skip


def test_steady_state_means_a_flat_lag_and_the_verdict_says_how_sizes_move():
    flat = verdict(_samples(lag_per_s=5, file_mb_per_s=0), rate=1000)
    assert flat["lag_flat"] and flat["file_mb_per_min"] == 0 and flat["python_rss_mb_per_min"] == 0
    growing = verdict(_samples(lag_per_s=50, file_mb_per_s=0.1), rate=1000)
    assert not growing["lag_flat"] and round(growing["file_mb_per_min"], 6) == 6.0


@pytest.mark.integration
def test_the_soak_load_sends_valid_events_on_the_wall_clocks_schedule(kafka, topic, make_settings):
    """The soak's producer (the simulator tops out at 11-15 K events/s beside the job): every
    message is an event the sink's own parser accepts, ids unique, event time on schedule."""
    settings = make_settings(bootstrap_servers=kafka.bootstrap_servers, topic=topic)
    create_topic(settings.kafka_client_config, topic, 3)
    load = BulkLoad(settings.kafka_client_config, topic, rate=20_000, sensors=50)
    started = datetime.now(UTC)
    try:
        assert load.run(duration=1.5) == 0  # nothing undelivered
    finally:
        load.close()
    assert time.monotonic() - load.started >= 1.4  # sent on schedule, not as fast as it could
    messages = list(consume(settings.kafka_client_config, topic, start="beginning", max_messages=30_000,
                            idle_timeout=10))  # fmt: skip
    assert len(messages) == 30_000
    raw = pa.table(
        {"kafka_topic": [m.topic() for m in messages], "kafka_partition": [m.partition() for m in messages],
         "kafka_offset": [m.offset() for m in messages],
         "kafka_timestamp": [datetime.fromtimestamp(m.timestamp()[1] / 1000, UTC) for m in messages],
         "kafka_key": [m.key() for m in messages], "raw_value": [m.value() for m in messages]}
    )  # fmt: skip
    parsed = RecordParser(settings.valid_ranges, settings.window_step).parse(raw)
    assert parsed.filter(pc.invert(pc.is_null(parsed["error"]))).num_rows == 0
    assert len(set(parsed["event_id"].to_pylist())) == 30_000
    assert len(set(parsed["sensor_id"].to_pylist())) == 50
    times = sorted(parsed["event_time"].to_pylist())
    assert started - timedelta(seconds=1) <= times[0] and times[-1] <= started + timedelta(seconds=2.5)
    assert (times[-1] - times[0]).total_seconds() == pytest.approx(1.5, abs=0.01)  # 20 K/s of event time
    # Never sent before it happened (that would flatter the latency); at most a tick (50 ms) after.
    sent_after = pc.subtract(parsed["kafka_timestamp"], parsed["event_time"]).cast(pa.int64()).to_numpy()
    assert sent_after.min() >= -1_000 and sent_after.max() < 1_000_000  # microseconds


def test_each_part_saves_its_figures_even_into_a_folder_not_there_yet(tmp_path):
    """A soak-only run (no pre-fill points) once lost its 20 minutes of samples: the report's folder
    was created only by the pre-fill part."""
    report = tmp_path / "new" / "bench-soak.json"
    _save(report, {"soak": {"samples": [{"t": 10.0}]}})
    assert json.loads(report.read_text()) == {"soak": {"samples": [{"t": 10.0}]}}


def test_a_minutes_p99_is_the_largest_of_its_samples_every_event_p99():
    # Each 10 s sample holds the p99 of the events committed in it: at most 1 % of each sample's
    # events are above it, so at most 1 % of the minute's are above the largest.
    samples = [
        {"t": 10.0 * i, "consumer_lag": 1_000, "batch_ms": 300.0, "batch_latency_max_p99_ms": 1_500.0 + i,
         "latency_p99_ms": p99, "python_rss_mb": 600.0, "jvm_rss_mb": 900.0, "file_mb": 250.0, "rows": {}}
        for i, p99 in enumerate([900.0, 1_100.0, None, 950.0, 1_020.0, 990.0, 800.0])
    ]  # fmt: skip
    first, second = per_minute(samples, rate=50_000)
    assert first["latency_p99_ms"] == 1_100  # the samples without a committed event do not count
    assert first["batch_latency_max_p99_ms"] == 1_505
    assert second["latency_p99_ms"] == 800

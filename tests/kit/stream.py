"""Test helpers for the streaming job: a fixed event stream (with malformed records), the store's
tables as plain rows, and an uninterrupted run in this process to hold a stopped-and-restarted one
against. What the store must hold after a stream is the reference model's (``tools.reference``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Producer

from sensorstream.config import load_settings, settings_env
from sensorstream.schema import encode, make_event
from sensorstream.store.db import connect

T0 = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)

MALFORMED = [
    b"not json at all",
    b"[1, 2, 3]",
    b'{"event_id": "m1", "sensor_id": "s0", "event_time": "2026-11-26T20:00:01Z"}',
    b'{"event_id": "m2", "sensor_id": "s0", "event_time": "2026-11-26T20:00:01Z", "value": "hot"}',
    b'{"event_id": "m3", "sensor_id": "s0", "event_time": "2026-11-26T20:00:01Z", "value": NaN}',
    b'{"event_id": "m4", "sensor_id": "s0", "event_time": "26/11/2026 20:00", "value": 1}',
    b'{"event_id": "", "sensor_id": "s0", "event_time": "2026-11-26T20:00:01Z", "value": 1}',
    b"\xff\xfe\xfd",
    b'{"event_id": 5, "sensor_id": "s0", "event_time": "2026-11-26T20:00:01Z", "value": 1}',
    b'{"event_id": "m5", "sensor_id": "s0", "event_time": "2026-11-26T20:00:01Z", "value": 999,'
    b' "sensor_type": "humidity"}',
]


@dataclass
class EventStream:
    """Messages (key, value) in send order, phase by phase."""

    phases: list[list[tuple[bytes | None, bytes]]] = field(default_factory=list)

    def send(self, bootstrap: str, topic: str, phase: int) -> int:
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
        for key, value in self.phases[phase]:
            producer.produce(topic, key=key, value=value)
        assert producer.flush(30) == 0
        return len(self.phases[phase])

    @property
    def total(self) -> int:
        return sum(len(p) for p in self.phases)


def build_stream(sensors: int = 6, minutes: int = 4, seed: int = 7) -> EventStream:
    """Phase 0: disordered, duplicated, malformed. Phase 1: late, in-lateness, duplicates, more junk."""
    rng = random.Random(seed)
    events = []
    for s in range(sensors):
        for i in range(minutes * 12):  # one reading every 5 s
            ts = T0 + timedelta(seconds=5 * i + rng.random())
            value = 20 + s + rng.gauss(0, 1)
            events.append(
                make_event(f"e-{s}-{i}", f"s{s}", ts, round(value, 3), "temperature", "C", "plant-a")
            )
    # Out of order: shuffle within blocks of ~20 s; duplicates: resend ~5 % anywhere later.
    rng.shuffle(events)
    events.sort(key=lambda e: e["event_time"][:18])  # coarse order, random within 10 s buckets
    phase0 = [(e["sensor_id"].encode(), encode(e)) for e in events]
    for e in rng.sample(events, len(events) // 20):
        phase0.insert(rng.randrange(len(phase0)), (e["sensor_id"].encode(), encode(e)))
    for bad in MALFORMED:
        phase0.insert(rng.randrange(len(phase0)), (None, bad))

    newest = T0 + timedelta(minutes=minutes)
    phase1 = []
    for s in range(sensors):
        # Far behind the watermark: their windows are final, so they are late.
        ts = T0 + timedelta(seconds=10 + s)
        phase1.append(make_event(f"late-{s}", f"s{s}", ts, 50.0, "temperature", "C", "plant-a"))
        # Behind the newest event but within the lateness: they still count.
        ts = newest - timedelta(seconds=12 + s)
        phase1.append(make_event(f"ok-{s}", f"s{s}", ts, 21.0, "temperature", "C", "plant-a"))
    msgs = [(e["sensor_id"].encode(), encode(e)) for e in phase1]
    msgs += [(e["sensor_id"].encode(), encode(e)) for e in rng.sample(events, 5)]  # old duplicates
    msgs += [(None, b"{broken"), (None, b'{"event_id": "x"}')]
    return EventStream([phase0, msgs])


# Everything a batch decides, without wall-clock columns (ingested_at, updated_at, batch ids...).
SNAPSHOT = {
    "readings": "SELECT event_id, sensor_id, event_time, value, window_start, is_late, kafka_partition, kafka_offset "
    "FROM readings ORDER BY event_id",
    # Rounded: DuckDB's parallel aggregation may sum in another order (last-bit differences).
    "window_stats": "SELECT sensor_id, window_start, window_end, reading_count, round(avg_value, 9), min_value, "
    "max_value, round(stddev_value, 9), is_final FROM window_stats ORDER BY 1, 2",
    "late_events": "SELECT event_id, watermark FROM late_events ORDER BY 1",
    "dead_letters": "SELECT kafka_partition, kafka_offset, raw_value, error FROM dead_letters ORDER BY 1, 2",
    "anomalies": "SELECT event_id, rule, round(score, 9) FROM anomalies ORDER BY 1",
}


def snapshot(db: Path) -> dict[str, list]:
    con = connect(db, read_only=True)
    try:
        return {name: con.execute(sql).fetchall() for name, sql in SNAPSHOT.items()}
    finally:
        con.close()


def run_in_process(spark, settings, total: int, timeout: float = 300) -> None:
    """The uninterrupted reference: run the job in this process until it has read ``total`` messages."""
    from sensorstream.sink.merge import BatchMerger
    from sensorstream.stream.job import StreamJob

    con = connect(settings.db)
    job = StreamJob(spark, settings, BatchMerger(con, settings))
    job.start()
    try:
        job.wait_idle(timeout=timeout, min_offsets=total)
    finally:
        job.stop()
        con.close()


def child_env(ref, db: Path, ckpt: Path, data_dir: Path, **overrides: str) -> dict[str, str]:
    """The reference run's settings as SENSORSTREAM_* for a `sensorstream stream` child with its own
    store, checkpoint and data dir (``overrides``: more settings, by their names in lower case)."""
    env = {
        "bootstrap_servers": ref.bootstrap_servers, "topic": ref.topic, "db": str(db),
        "checkpoint_dir": str(ckpt), "data_dir": str(data_dir),
        "max_offsets_per_trigger": str(ref.max_offsets_per_trigger), "trigger": str(ref.trigger),
        "spark_master": "local[2]", "shuffle_partitions": str(ref.shuffle_partitions), "metrics_port": "0",
        "cache_dir": str(ref.cache_dir), "api_port": "0", "pg_port": "0", **overrides,
    }  # fmt: skip
    return settings_env(load_settings(**env), base={})

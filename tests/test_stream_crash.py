"""kill -9 in the middle of the stream, restart: the tables equal an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sensorstream.kafka.broker import create_topic
from sensorstream.sink.merge import BatchMerger
from sensorstream.store.db import connect
from sensorstream.stream.job import StreamJob
from streamkit import build_stream

pytestmark = [pytest.mark.integration, pytest.mark.slow]

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


def stream_process(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sensorstream", "stream", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_minus_9_and_restart_equals_an_uninterrupted_run(kafka, spark, topic, make_settings, tmp_path):
    create_topic({"bootstrap.servers": kafka.bootstrap_servers}, topic, 3)
    stream = build_stream(sensors=8, minutes=6)
    total = stream.send(kafka.bootstrap_servers, topic, 0) + stream.send(kafka.bootstrap_servers, topic, 1)
    batch = 80  # small batches, so the kill lands mid-stream and the watermark moves between them

    # 1. The reference: one uninterrupted run, in this process.
    ref = make_settings(bootstrap_servers=kafka.bootstrap_servers, topic=topic, max_offsets_per_trigger=batch,
                        trigger="200 ms", db=tmp_path / "ref.duckdb", checkpoint_dir=tmp_path / "ref-ckpt")  # fmt: skip
    con = connect(ref.db)
    job = StreamJob(spark, ref, BatchMerger(con, ref))
    job.start()
    try:
        job.wait_idle(timeout=300, min_offsets=total)
    finally:
        job.stop()
        con.close()

    # 2. The same stream in a separate process, killed with SIGKILL after a few committed batches.
    db, ckpt = tmp_path / "crash.duckdb", tmp_path / "crash-ckpt"
    env = {
        "SENSORSTREAM_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "SENSORSTREAM_TOPIC": topic,
        "SENSORSTREAM_DB": str(db), "SENSORSTREAM_CHECKPOINT_DIR": str(ckpt),
        "SENSORSTREAM_DATA_DIR": str(tmp_path / "crash-data"), "SENSORSTREAM_MAX_OFFSETS_PER_TRIGGER": str(batch),
        "SENSORSTREAM_TRIGGER": "200 ms", "SENSORSTREAM_SPARK_MASTER": "local[2]",
        "SENSORSTREAM_SHUFFLE_PARTITIONS": "2", "SENSORSTREAM_METRICS_PORT": "0",
        "SENSORSTREAM_CACHE_DIR": str(ref.cache_dir), "SENSORSTREAM_API_PORT": "0",
        "SENSORSTREAM_PG_PORT": "0",
    }  # fmt: skip
    commits = ckpt / "sensorstream" / "commits"
    kills = 0
    for wait_for in (2, 4):
        proc = stream_process(env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(commits.glob("[0-9]*"))) < wait_for:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills == 2 and len(list(commits.glob("[0-9]*"))) < total // batch  # really stopped mid-stream

    # 3. Restart and let it finish.
    proc = stream_process(env, "--until-idle", "--timeout", "240")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err

    crashed, reference = snapshot(db), snapshot(ref.db)
    for table in SNAPSHOT:
        assert crashed[table] == reference[table], f"{table} differs after kill -9 and restart"
    assert len(reference["readings"]) > 500 and reference["late_events"] and reference["dead_letters"]

"""kill -9 in the middle of the stream, restart: the tables equal an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from sensorstream.kafka.topics import create_topic
from streamkit import SNAPSHOT, build_stream, child_env, run_in_process, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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
    run_in_process(spark, ref, total)

    # 2. The same stream in a separate process, killed with SIGKILL after a few committed batches.
    db, ckpt = tmp_path / "crash.duckdb", tmp_path / "crash-ckpt"
    env = child_env(ref, db, ckpt, tmp_path / "crash-data")
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

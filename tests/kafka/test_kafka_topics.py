"""`sensorstream kafka topic create|list|describe`, and a missing topic stopping produce and stream at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration


def cli(kafka, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "SENSORSTREAM_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "sensorstream", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_topic_is_created_with_its_partitions_and_retention_then_listed_and_described(kafka, topic):
    made = cli(kafka, "kafka", "topic", "create", topic, "--partitions", "4", "--retention", "2 hours")
    assert made.returncode == 0, made.stderr
    assert f"topic {topic} created: 4 partitions, replication 1" in made.stderr
    again = cli(kafka, "kafka", "topic", "create", topic, "--partitions", "4")
    assert again.returncode == 0 and "already exists (left as it is)" in again.stderr

    listed = cli(kafka, "kafka", "topic", "list")
    assert listed.returncode == 0
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in listed.stdout.splitlines()]
    assert [topic, "4", "1"] in rows, listed.stdout

    described = cli(kafka, "kafka", "topic", "describe", topic)
    assert described.returncode == 0, described.stderr
    assert f"topic {topic}: 4 partitions, replication 1" in described.stdout
    assert "retention.ms = 7200000" in described.stdout  # 2 hours
    assert described.stdout.count("1/1") == 4  # every partition has its one replica in sync


def test_produce_and_stream_to_a_missing_topic_fail_at_once_with_one_sentence(kafka, tmp_path):
    for command in (["produce", "--count", "1"], ["stream", "--db", str(tmp_path / "x.duckdb")]):
        started = time.monotonic()
        result = cli(kafka, *command, "--topic", "no-such-topic")
        assert result.returncode == 1
        assert time.monotonic() - started < 20  # not a 30 s metadata wait, nor a Spark start
        assert "topic 'no-such-topic' does not exist" in result.stderr
        assert "sensorstream kafka topic create no-such-topic" in result.stderr
        assert "Traceback" not in result.stderr


def test_describing_a_missing_topic_says_how_to_create_it(kafka):
    result = cli(kafka, "kafka", "topic", "describe", "nope-nope")
    assert result.returncode == 1 and "does not exist" in result.stderr

"""`sensorstream status` exit codes: 0 healthy, 2 broker down, 3 stream stalled."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from sensorstream.cli import app
from sensorstream.kafka.topics import create_topic
from sensorstream.store.db import connect

pytestmark = pytest.mark.integration


def run_status(settings, monkeypatch) -> tuple[int, str]:
    for name, value in {
        "BOOTSTRAP_SERVERS": settings.bootstrap_servers, "TOPIC": settings.topic, "DB": settings.db,
        "API_PORT": 1, "STALE_AFTER": "5 seconds",
    }.items():  # fmt: skip
        monkeypatch.setenv(f"SENSORSTREAM_{name}", str(value))
    result = CliRunner().invoke(app, ["status"])
    return result.exit_code, result.output


def test_healthy_when_broker_answers_and_nothing_waits(kafka, topic, make_settings, monkeypatch):
    settings = make_settings(bootstrap_servers=kafka.bootstrap_servers, topic=topic)
    create_topic({"bootstrap.servers": kafka.bootstrap_servers}, topic, 3)
    connect(settings.db).close()  # an empty store, no stream running: idle, not broken
    code, out = run_status(settings, monkeypatch)
    assert code == 0, out
    assert "healthy" in out


def test_broker_down_exits_2_and_says_so(make_settings, monkeypatch):
    settings = make_settings(bootstrap_servers="127.0.0.1:1")
    connect(settings.db).close()
    code, out = run_status(settings, monkeypatch)
    assert code == 2
    assert "does not answer" in out


def test_records_waiting_without_a_stream_is_stalled_exit_3(kafka, topic, make_settings, monkeypatch):
    settings = make_settings(bootstrap_servers=kafka.bootstrap_servers, topic=topic)
    create_topic({"bootstrap.servers": kafka.bootstrap_servers}, topic, 3)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for _ in range(10):
        producer.produce(topic, key=b"s1", value=b"{}")
    producer.flush(10)
    connect(settings.db).close()
    code, out = run_status(settings, monkeypatch)
    assert code == 3, out
    assert "10 records wait in Kafka" in out

"""The consumer: reads the topic as a group, commits what it handed over, and reports lag."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sensorstream.cli import app
from sensorstream.kafka.consume import consume, lag, lag_details
from sensorstream.kafka.topics import create_topic
from sensorstream.produce import ProducePlan, produce

pytestmark = pytest.mark.integration


@pytest.fixture
def filled(kafka, topic, make_settings):
    """Settings for a 3-partition topic holding 30 simulated events."""
    settings = make_settings(bootstrap_servers=kafka.bootstrap_servers, topic=topic)
    create_topic(settings.kafka_client_config, topic, 3)
    assert produce(settings, ProducePlan(sensors=5, count=30, rate=0)).acked == 30
    return settings


def read(settings, group: str, **kwargs) -> list:
    """What ``group`` gets now: stops at ``max_messages`` or after 3 idle seconds."""
    return list(consume(settings.kafka_client_config, settings.topic, group=group, idle_timeout=3, **kwargs))


def test_a_new_group_reads_everything_once_and_lag_returns_to_zero(filled):
    conf = filled.kafka_client_config
    assert sum(lag(conf, filled.topic, "g").values()) == 30  # nothing committed yet

    messages = read(filled, "g", max_messages=30)
    assert len(messages) == len({(m.partition(), m.offset()) for m in messages}) == 30
    assert lag(conf, filled.topic, "g") == {0: 0, 1: 0, 2: 0}
    assert read(filled, "g") == []  # resumes after its committed offsets


def test_max_stops_early_and_commits_only_what_was_handed_over(filled):
    conf = filled.kafka_client_config
    assert len(read(filled, "g", max_messages=10)) == 10
    assert sum(lag(conf, filled.topic, "g").values()) == 20

    assert len(read(filled, "g", max_messages=30)) == 20
    assert all(row.committed == row.high for row in lag_details(conf, filled.topic, "g") if row.high)


def test_from_beginning_ignores_committed_offsets_and_latest_skips_the_backlog(filled):
    read(filled, "g", max_messages=30)
    assert len(read(filled, "g", start="beginning", max_messages=30)) == 30
    assert read(filled, "g2", start="latest", max_messages=1) == []


def test_lag_of_a_missing_topic_is_an_error(kafka):
    from confluent_kafka import KafkaException

    with pytest.raises(KafkaException):
        lag({"bootstrap.servers": kafka.bootstrap_servers}, "no-such-topic", "g", timeout=5)


def test_cli_consume_prints_json_lines_and_lag(filled):
    args = ["--topic", filled.topic, "--bootstrap-servers", filled.bootstrap_servers, "--group", "cli"]
    result = CliRunner().invoke(app, ["consume", "--from-beginning", "--max", "5", "--json", *args])
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(docs) == 5 and all(json.loads(d["value"])["sensor_id"] == d["key"] for d in docs)

    result = CliRunner().invoke(app, ["consume", "--lag", "--json", *args])
    assert sum(row["lag"] for row in json.loads(result.stdout)) == 25


def test_cli_consume_pretty_prints_keys_and_values(filled):
    args = ["--topic", filled.topic, "--bootstrap-servers", filled.bootstrap_servers]
    result = CliRunner().invoke(app, ["consume", "--max", "3", *args])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all("sensor-" in line and '"event_id"' in line for line in lines)

"""The producer: what `sensorstream produce` sends is exactly what it says it sent.

Every test reads its topic back from a real broker and checks the messages themselves.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from sensorstream.cli import app
from sensorstream.kafka.consume import consume
from sensorstream.kafka.topics import create_topic
from sensorstream.produce import ProducePlan, produce
from sensorstream.produce.file_source import file_messages
from sensorstream.produce.inject import Injection, Injector
from sensorstream.produce.malformed import KINDS
from sensorstream.produce.producer import FLUSH_MARGIN, EventProducer
from sensorstream.produce.rate import TokenBucket
from sensorstream.produce.simulator import SIGNALS, Simulator
from sensorstream.schema import Reason, parse_time, validate

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka, topic, make_settings):
    return make_settings(bootstrap_servers=kafka.bootstrap_servers, topic=topic)


def read_back(settings, expected: int) -> list:
    """Every message of the test's topic, in partition order."""
    return list(
        consume(
            settings.kafka_client_config, settings.topic, group="read-back", start="beginning",
            max_messages=expected, idle_timeout=10,
        )
    )  # fmt: skip


def classify(messages, valid_ranges) -> Counter:
    """What a message is, judged from the topic alone (one partition: global send order)."""
    kinds: Counter = Counter()
    seen: set[str] = set()
    newest = None
    for msg in messages:
        event, reason = validate(msg.value(), valid_ranges)
        if event is None:
            kinds[f"malformed:{reason.split(':')[0]}"] += 1
            continue
        if event["event_id"] in seen:
            kinds["duplicate"] += 1
            continue
        seen.add(event["event_id"])
        at = parse_time(event["event_time"])
        behind = (newest - at).total_seconds() if newest else 0
        kinds["late" if behind > 60 else "out_of_order" if behind > 0 else "valid"] += 1
        newest = max(newest or at, at)
    return kinds


def test_every_event_arrives_once_keyed_by_sensor_in_per_sensor_order(settings):
    create_topic(settings.kafka_client_config, settings.topic, 3)
    summary = produce(settings, ProducePlan(sensors=6, count=300, rate=0, seed=1))
    assert (summary.sent, summary.acked, summary.failed) == (300, 300, 0)

    messages = read_back(settings, 300)
    events = [json.loads(m.value()) for m in messages]
    assert len({e["event_id"] for e in events}) == 300
    assert all(m.key().decode() == e["sensor_id"] for m, e in zip(messages, events, strict=True))
    by_sensor = defaultdict(list)
    for event in events:
        by_sensor[event["sensor_id"]].append(event["event_time"])
    assert len(by_sensor) == 6
    assert all(times == sorted(times) for times in by_sensor.values())


def test_injection_switches_send_exactly_what_they_claim(settings):
    create_topic(settings.kafka_client_config, settings.topic, 1)
    plan = ProducePlan(
        sensors=5, count=400, rate=0, seed=7, late=6, duplicates=5, out_of_order=4, malformed=2 * len(KINDS)
    )
    summary = produce(settings, plan)
    assert (summary.valid, summary.late, summary.duplicates, summary.out_of_order) == (400, 6, 5, 4)
    assert summary.malformed == {kind: 2 for kind in KINDS}  # every dead-letter reason, twice

    found = classify(read_back(settings, summary.sent), settings.valid_ranges)
    assert found == summary.kinds


def test_malformed_messages_cover_every_dead_letter_reason():
    reasons = {v for k, v in vars(Reason).items() if not k.startswith("_")}
    # `internal_error` is the rules failing on a record: a bug, which no message is built to cause.
    assert set(KINDS) == reasons - {Reason.INTERNAL}


def test_fractions_are_of_the_readings(settings):
    create_topic(settings.kafka_client_config, settings.topic, 1)
    plan = ProducePlan(count=1000, rate=0, late=0.01, duplicates=0.02, out_of_order=0.005, malformed=0.03)
    summary = produce(settings, plan)
    assert (summary.late, summary.duplicates, summary.out_of_order) == (10, 20, 5)
    assert sum(summary.malformed.values()) == 30
    assert classify(read_back(settings, summary.sent), settings.valid_ranges) == summary.kinds


def test_simulated_events_are_valid_near_now_and_of_every_type(make_settings):
    settings = make_settings()
    start = datetime.now(UTC)
    readings = list(Simulator(8, start, 0.01, seed=3, valid_ranges=settings.valid_ranges).readings(2000))
    assert all(validate(json.dumps(r.event).encode(), settings.valid_ranges)[0] for r in readings)
    assert {r.event["sensor_type"] for r in readings} == set(SIGNALS)
    assert readings[0].event_time == start and readings[-1].event_time - start < timedelta(seconds=20)


def test_same_seed_same_stream():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    one = [r.event for r in Simulator(4, start, 1, seed=5).readings(50)]
    two = [r.event for r in Simulator(4, start, 1, seed=5).readings(50)]
    other = [r.event for r in Simulator(4, start, 1, seed=6).readings(50)]
    assert one == two and one != other


def test_file_replay_is_byte_for_byte_in_file_order(settings, tmp_path):
    create_topic(settings.kafka_client_config, settings.topic, 1)
    good = {"event_id": "e1", "sensor_id": "s-1", "event_time": "2026-01-01T00:00:00Z", "value": 1.5}
    lines = [
        json.dumps(good).encode(),
        b'{"event_id": "e2", "sensor_id": "s-2",   "event_time": "2026-01-01T00:00:01+01:00", "value": 2}',
        b"not json at all",
        b'{"sensor_id": "s-3", "value": "caf\xe9"}',  # not UTF-8
        b"",
        b'["an", "array"]',
        json.dumps(good).encode(),  # the same event again
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    summary = produce(settings, ProducePlan(file=path))
    assert summary.sent == len(lines) and summary.duplicates == 1
    assert summary.malformed == {"not_json": 2, "not_utf8": 1, "not_object": 1}

    messages = read_back(settings, len(lines))
    assert [m.value() for m in messages] == lines
    assert [m.key() for m in messages] == [b"s-1", b"s-2", None, None, None, None, b"s-1"]


def test_dataset_replay_sends_valid_events_of_the_real_sensors(settings):
    create_topic(settings.kafka_client_config, settings.topic, 3)
    # 10 time steps x 12 sensors, replayed at a million times real speed.
    plan = ProducePlan(dataset="nrel_RSF_II", count=120, speed=1e6)
    summary = produce(settings, plan)
    assert summary.valid == summary.acked == 120

    events = [validate(m.value(), settings.valid_ranges)[0] for m in read_back(settings, 120)]
    assert all(events)
    assert len({e["sensor_id"] for e in events}) == 12
    assert {"nrel-rsf-ii/ambient_temp__1053", "nrel-rsf-ii/poa_irradiance__1055"} <= {
        e["sensor_id"] for e in events
    }
    assert {e["sensor_type"] for e in events} >= {"temperature", "irradiance", "power"}
    newest = max(parse_time(e["event_time"]) for e in events)
    assert abs(datetime.now(UTC) - newest) < timedelta(minutes=1)


def test_rate_is_held_by_the_token_bucket(settings):
    create_topic(settings.kafka_client_config, settings.topic, 1)
    summary = produce(settings, ProducePlan(count=60, rate=200))
    assert 0.25 <= summary.elapsed < 2


def test_token_bucket_pays_back_oversleeping():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds * 3  # a coarse sleep: three times longer than asked

    bucket = TokenBucket(100, burst=5, clock=lambda: now[0], sleep=sleep)
    for _ in range(100):
        bucket.take()
    assert 0.9 <= now[0] <= 1.1  # 100 tokens at 100/s: one second, not three


def test_bad_amounts_are_refused_with_the_flag_name():
    with pytest.raises(ValueError, match=r"--late 2\.5"):
        Injection(late=2.5)
    with pytest.raises(ValueError, match="cannot make 20 late"):
        Injector(Injection(late=20), total=10)


def test_cli_produce_prints_a_summary(settings):
    create_topic(settings.kafka_client_config, settings.topic, 1)
    result = CliRunner().invoke(
        app,
        ["produce", "--count", "40", "--rate", "0", "--malformed", "9", "--quiet",
         "--topic", settings.topic, "--bootstrap-servers", settings.bootstrap_servers],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["valid"] == 40 and summary["acked"] == 49 and len(summary["malformed"]) == 9


def test_cli_refuses_two_sources(tmp_path):
    result = CliRunner().invoke(app, ["produce", "--file", str(tmp_path / "x"), "--dataset", "nrel_RSF_II"])
    assert result.exit_code == 2 and "two different sources" in result.output


@pytest.mark.parametrize("seed", range(3))
def test_every_malformed_variant_is_filed_under_its_reason(seed, make_settings):
    from sensorstream.produce.malformed import build

    ranges = make_settings().valid_ranges
    rng = random.Random(seed)
    event = next(Simulator(1, datetime.now(UTC), 1, seed=seed).readings(1)).event
    for kind in KINDS:
        for _ in range(20):
            assert validate(build(kind, event, rng, ranges), ranges)[1].split(":")[0] == kind


def test_messages_the_broker_never_takes_are_counted_as_failed(kafka):
    # Topics are not auto-created here, so these can only time out.
    producer = EventProducer(
        {"bootstrap.servers": kafka.bootstrap_servers}, "no-such-topic", {"message.timeout.ms": 1500}
    )
    for i in range(5):
        producer.send(b"{}", str(i).encode())
    # By default the wait outlasts librdkafka's own (message.timeout.ms): a shorter one counted
    # messages still being retried after a broker restart as undelivered. Here each fails at 1.5 s.
    assert producer.answer_timeout == 1.5 + FLUSH_MARGIN
    assert producer.flush() == 0
    assert (producer.sent, producer.acked, producer.failed) == (5, 0, 5)


def test_a_file_line_too_deep_or_not_json_is_replayed_without_a_key(tmp_path):
    # json.loads recurses once per level: picking the key of b"[" * 1000 must not parse it.
    path = tmp_path / "odd.jsonl"
    path.write_bytes(b"[" * 1000 + b"\n" + b'{"a":' * 5000 + b'\n{"sensor_id": "s-1"}\n')
    out = list(file_messages(path))
    assert [(m.key, m.kind) for m in out] == [
        (None, "malformed:too_deep"),
        (None, "malformed:too_deep"),
        (b"s-1", "malformed:missing_field"),
    ]

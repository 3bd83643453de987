"""Fault injection, quick forms: kill -9 (several times), a broker restart, a malformed storm, and a
reader hammering the read API through all of them. Each compares the store with an expectation
computed from the input without Spark (``faults.events.Expectation``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sensorstream.tools.faults import broker_restart, hostile_pg, hostile_reader, kill9, malformed_storm
from sensorstream.tools.faults.scenario import FaultOptions, ScenarioResult

# Each scenario runs `sensorstream stream` in child processes.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.spark]
# Each scenario brings its own store and stream job: `make test`'s workers take them one by one.
ONE_UNIT_PER_TEST = True


@pytest.fixture
def opts(make_settings, tmp_path: Path, kafka):
    def _opts(**over) -> FaultOptions:
        base = {"quick": True, "workdir": tmp_path, "bootstrap": kafka.bootstrap_servers, **over}
        return FaultOptions(make_settings(), **base)

    return _opts


def assert_clean(result: ScenarioResult) -> None:
    assert result.error is None, result.error
    assert result.verdict is not None and result.verdict.events_expected > 0
    v = result.verdict
    assert (v.lost, v.extra, v.duplicated, v.wrong_windows, v.wrong_late, v.dead_lost, v.dead_extra) == (
        0,
    ) * 7, v
    assert all(result.checks.values()), result.checks
    # The reader: answers all the time the job was up, never saw the readings count go down.
    r = result.reader
    assert r is not None and r.ok > 50 and r.errors == 0 and r.count_decreases == 0, r
    assert r.p99_ms is not None


def test_kill9_several_times_loses_and_doubles_nothing(opts):
    # 3 kills in ~7 batches (tests/stream/test_stream_stop.py kills twice at fixed points; this one at
    # random moments, with the read API under load, against an expectation computed without Spark).
    result = kill9.run(opts(events=12_000, seed=int(os.environ.get("FAULTS_SEED", "1"))))
    assert_clean(result)
    assert result.numbers["kills"] == 3
    assert result.verdict.late_expected > 0 and result.verdict.dead_expected > 0
    assert result.reader.refused_while_down > 0  # the API really went away during the kills


def test_broker_restart_while_producing_and_streaming(opts):
    # 10 s of producing at 1 K/s, the restart 2.5 s in: the producer and the job both outlive it.
    result = broker_restart.run(opts(bootstrap=None, events=10_000))  # its own broker: it gets restarted
    assert_clean(result)
    assert result.numbers["topic_lost"] == 0 and result.numbers["topic_doubled"] == 0
    assert result.numbers["in_topic"] == result.numbers["sent"] == result.events
    assert result.reader.refused_while_down == 0  # the store's API does not depend on Kafka


def test_malformed_storm_every_bad_message_in_dead_letters(opts):
    # 1,000 of 10,000 malformed: every kind the contract names, many times over.
    result = malformed_storm.run(opts(events=10_000))
    assert_clean(result)
    assert result.verdict.dead_kinds >= 10
    assert 0.09 <= result.numbers["malformed_share"] <= 0.11


def test_hostile_reader_changes_nothing_and_gets_a_sentence_for_everything(opts):
    # The bounded form: 6K events at 2K/s per phase; the 1.5x latency check is the full run's.
    result = hostile_reader.run(opts(events=6_000))
    hostile = result.numbers.get("hostile", {})
    print(f"latency p99 ms {result.numbers.get('latency_p99_ms')}, hostile answers {hostile.get('statuses')}")
    assert result.error is None, result.error
    assert hostile["requests"] > 20 and hostile["problems"] == 0, hostile["problem_samples"]
    assert_clean(result)
    assert "latency p99 within 1.5x of the calm run" not in result.checks
    assert set(hostile["statuses"]) <= {"200", "400", "413", "429"}, hostile["statuses"]
    assert all(result.numbers["latency_p99_ms"].values())


@pytest.mark.broker
@pytest.mark.spark
def test_hostile_pg_every_hostile_client_loses_nothing_and_psql_still_answers(opts):
    # The bounded form: 8 s calm, 8 s hostile at 1 K/s; the 1.2x p50 and RSS checks are the full run's.
    result = hostile_pg.run(opts())
    hostile = result.numbers.get("hostile", {})
    print(result.numbers)
    assert result.error is None, result.error
    assert hostile["requests"] > 50 and not hostile["problems"], hostile["problems"]
    # Every kind of client ran against the endpoint.
    assert {"silent socket dropped", "200 KB statement", "sleep_ms", "SET", "heavy read"} <= set(
        hostile["counts"]
    )
    assert result.numbers["psql"]["probes"] >= 10
    assert result.numbers["endpoint_rss_peak_mb"]["hostile"], "the endpoint's own process was not found"
    v = result.verdict
    assert v is not None and v.events_expected > 0
    assert (v.lost, v.extra, v.duplicated, v.wrong_windows, v.dead_lost, v.dead_extra) == (0,) * 6, v
    assert all(result.checks.values()), result.checks

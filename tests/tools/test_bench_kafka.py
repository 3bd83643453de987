"""The Kafka benchmark runs both sides on the same payloads and writes a readable report."""

import json

import pytest

from sensorstream.schema import validate
from sensorstream.tools.bench.kafka import event_payloads, run_bench

pytestmark = pytest.mark.integration


def test_payloads_are_valid_events_of_exactly_the_record_size():
    payloads = event_payloads(200, n=50)
    assert {len(value) for _, value in payloads} == {200}
    assert all(validate(value)[0]["sensor_id"].encode() == key for key, value in payloads)


@pytest.mark.jvm  # Kafka's own perf-test clients
def test_bench_compares_us_with_kafkas_tools_and_writes_the_report(kafka, make_settings, tmp_path):
    report = tmp_path / "bench-kafka.json"
    result = run_bench(
        make_settings(), records=3000, bootstrap_servers=kafka.bootstrap_servers, report=report,
        pipeline_records=500,
    )  # fmt: skip
    assert json.loads(report.read_text()) == result
    for side in ("producer", "consumer"):
        assert result[side]["java"]["records"] == result[side]["ours"]["records"] == 3000
        assert result[side]["ratio"] > 0
    assert result["produce_pipeline"]["records"] == 500

"""Monitoring: every batch accounted for, in `pipeline_metrics` and in the Prometheus scrape."""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sensorstream.kafka.topics import create_topic
from sensorstream.monitor.alerts import AlertRules
from sensorstream.produce.plan import ProducePlan
from sensorstream.produce.send import produce
from sensorstream.serve.client import StoreClient
from sensorstream.tools.ports import free_port
from sensorstream.writer.main import StreamRuntime


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_lag_growing_fires_only_after_n_growing_batches_above_the_floor():
    rules = AlertRules(lag_batches=3, stale_after=30, min_lag=100)
    for lag in (50, 60, 70, 80, 90):  # growing, but a healthy wobble below the floor
        rules.on_batch(lag)
    assert not rules.firing["lag_growing"]
    for lag in (200, 400, 800):
        rules.on_batch(lag)
    assert rules.firing["lag_growing"]
    rules.on_batch(10)
    assert not rules.firing["lag_growing"]


def test_stalled_fires_when_records_wait_and_no_batch_comes():
    rules = AlertRules(lag_batches=3, stale_after=30)
    rules.on_batch(0, now=1000)
    rules.on_tick(0, now=1100)  # nothing waiting: an idle stream is not a stalled one
    assert not rules.firing["stalled"]
    rules.on_tick(5, now=1100)
    assert rules.firing["stalled"]
    rules.on_batch(0, now=1101)
    assert not rules.firing["stalled"]


@pytest.mark.integration
@pytest.mark.slow
def test_injected_counts_show_up_in_metrics_table_and_prometheus(kafka, spark, topic, make_settings):
    metrics_port, api_port = free_port(), free_port()
    settings = make_settings(bootstrap_servers=kafka.bootstrap_servers, topic=topic, metrics_port=metrics_port,
                             api_port=api_port, trigger="300 ms", max_offsets_per_trigger=400,
                             db_threads=1)  # fmt: skip
    create_topic({"bootstrap.servers": kafka.bootstrap_servers}, topic, 3)
    started = time.monotonic()
    with StreamRuntime(settings) as runtime:
        # The store's engine has the threads the settings give it (reads share them with the writer).
        assert runtime.con.execute("SELECT current_setting('threads')").fetchone()[0] == 1
        # Warm-up first, so the watermark has moved before the late events arrive.
        warm = produce(settings, ProducePlan(sensors=5, count=300, rate=0, seed=1))
        runtime.job.wait_idle(timeout=120, min_offsets=warm.sent)
        run = produce(settings, ProducePlan(sensors=5, count=1200, rate=0, seed=2, late=15, duplicates=25,
                                            malformed=30, out_of_order=40))  # fmt: skip
        runtime.job.wait_idle(timeout=120, min_offsets=warm.sent + run.sent)
        with StoreClient(settings) as client:
            # The monitor's tick (every 5 s) records the last batch's trigger: wait for it, no longer.
            last_timed = (
                "SELECT count(*) AS n FROM pipeline_metrics "
                "WHERE batch_id = (SELECT max(batch_id) FROM pipeline_metrics) AND trigger_ms IS NOT NULL"
            )
            deadline = time.monotonic() + 15
            while not int(client.sql(last_timed).iloc[0, 0]) and time.monotonic() < deadline:
                time.sleep(0.2)
            scraped = scrape(metrics_port)
            totals = client.sql(
                "SELECT sum(input_rows) AS input, sum(duplicate_rows) AS dup, sum(late_rows) AS late, "
                "sum(dead_letters) AS dead, min(latency_p50_ms) AS lat_min, max(latency_max_ms) AS lat_max, "
                "arg_max(consumer_lag, batch_id) AS last_lag FROM pipeline_metrics"
            ).iloc[0]
            # Spark's own view of each trigger, read after the batch: a trigger spans the batch.
            progress = client.sql(
                "SELECT count(*) FILTER (WHERE input_rows > 0) AS batches, count(trigger_ms) AS timed, "
                "count(*) FILTER (WHERE trigger_ms < spark_ms + sink_ms) AS shorter, "
                "min(processed_rows_per_second) AS processed, "
                "bool_or(batch_id = (SELECT max(batch_id) FROM pipeline_metrics) AND trigger_ms IS NOT NULL) "
                "AS last_timed FROM pipeline_metrics"
            ).iloc[0]
    elapsed_ms = (time.monotonic() - started) * 1000

    assert (run.late, run.duplicates, sum(run.malformed.values())) == (15, 25, 30)
    assert int(totals["input"]) == warm.sent + run.sent
    assert int(totals["dup"]) == run.duplicates
    assert int(totals["late"]) == run.late
    assert int(totals["dead"]) == sum(run.malformed.values())
    # Latency: positive and shorter than the whole run (events are stamped "now" by the simulator).
    assert totals["lat_min"] > 0 and totals["lat_max"] < elapsed_ms
    # Lag drains to zero once the producer stops.
    assert int(totals["last_lag"]) == 0
    # Most batches carry their trigger's figures (one whose trigger ended between two polls may
    # not), the last one too (the tick read it), each on its own batch.
    assert int(progress["timed"]) >= int(progress["batches"]) // 2 and bool(progress["last_timed"])
    assert int(progress["shorter"]) == 0 and progress["processed"] > 0

    def metric(name, **labels):
        return scraped[(name, tuple(sorted(labels.items())))]

    assert metric("sensorstream_events_total", outcome="input") == warm.sent + run.sent
    assert metric("sensorstream_events_total", outcome="duplicate") == run.duplicates
    assert metric("sensorstream_events_total", outcome="late") == run.late
    assert metric("sensorstream_events_total", outcome="dead_letter") == sum(run.malformed.values())
    assert metric("sensorstream_consumer_lag_total") == 0
    assert metric("sensorstream_batch_duration_seconds_count") >= 2
    assert 0 < metric("sensorstream_e2e_latency_seconds", quantile="0.5", clock="kafka") < elapsed_ms / 1000

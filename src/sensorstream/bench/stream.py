"""Streaming benchmark: how many events/s the job keeps up with here, and at what latency.

Three measurements, each on a throwaway broker (unless ``--bootstrap-servers``):

1. **drain**: a backlog of N events is already in Kafka; the job drains it with the configured
   ``maxOffsetsPerTrigger``. Events/s = N / time from the first batch to caught-up. This is the
   job's capacity with nothing else competing for the two cores.
2. **fixed rates**: the simulator produces at R events/s (a separate process, as in production)
   for D seconds while the job runs. Reports event->commit latency p50/p99 over every event of the
   phase (commit time of its batch minus its event time) and whether the lag stayed bounded.
3. **where time goes**: per-batch Spark time (Kafka read, parse, validate, Arrow transfer) vs sink
   time (DuckDB merge), from ``pipeline_metrics``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sensorstream.bench.kafka import bench_broker
from sensorstream.config import ENV_PREFIX, Settings
from sensorstream.kafka.broker import create_topic
from sensorstream.produce import ProducePlan, produce
from sensorstream.store.client import StoreClient
from sensorstream.stream.runner import StreamRuntime

console = Console(stderr=True)


def _settings(base: Settings, bootstrap: str, topic: str, work: Path, **over: Any) -> Settings:
    return base.model_copy(
        update={
            "bootstrap_servers": bootstrap, "topic": topic, "data_dir": work, "db": work / "bench.duckdb",
            "checkpoint_dir": work / "checkpoints", "api_port": 0, "metrics_port": 0, **over,
        }
    )  # fmt: skip


def _producer_process(
    settings: Settings, rate: float, duration: float, sensors: int, seed: int
) -> subprocess.Popen:
    env = dict(os.environ)
    env[f"{ENV_PREFIX}BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
    env[f"{ENV_PREFIX}TOPIC"] = settings.topic
    return subprocess.Popen(
        [sys.executable, "-m", "sensorstream", "produce", "--quiet", "--sensors", str(sensors),
         "--rate", str(rate), "--duration", str(duration), "--seed", str(seed)],
        env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def _latency(client: StoreClient, since_batch: int) -> dict[str, float | None]:
    """Per-event latency: the commit time of the event's batch minus its event time."""
    df = client.sql(
        """
        SELECT count(*) AS events,
               quantile_cont(epoch_ms(m.committed_at) - epoch_ms(r.event_time), 0.5) AS p50_ms,
               quantile_cont(epoch_ms(m.committed_at) - epoch_ms(r.event_time), 0.99) AS p99_ms,
               quantile_cont(epoch_ms(m.committed_at) - epoch_ms(r.kafka_timestamp), 0.5) AS kafka_p50_ms,
               quantile_cont(epoch_ms(m.committed_at) - epoch_ms(r.kafka_timestamp), 0.99) AS kafka_p99_ms
        FROM readings r JOIN pipeline_metrics m USING (batch_id)
        WHERE NOT r.is_late AND r.batch_id > ?
        """,
        [since_batch],
    )
    return {k: (None if v is None or v != v else float(v)) for k, v in df.iloc[0].to_dict().items()}


def _stages(client: StoreClient, since_batch: int) -> dict[str, float]:
    df = client.sql(
        """
        SELECT count(*) AS batches, avg(input_rows) AS rows_per_batch, avg(spark_ms) AS spark_ms,
               avg(sink_ms) AS sink_ms, avg(trigger_ms) AS trigger_ms,
               1000 * sum(input_rows) / nullif(sum(spark_ms + sink_ms), 0) AS rows_per_busy_second
        FROM pipeline_metrics WHERE batch_id > ?
        """,
        [since_batch],
    )
    return {k: float(v) if v == v else 0.0 for k, v in df.iloc[0].to_dict().items()}


def _last_batch(client: StoreClient) -> int:
    df = client.sql("SELECT coalesce(max(batch_id), -1) AS b FROM pipeline_metrics")
    return int(df.iloc[0, 0])


def drain(settings: Settings, events: int, sensors: int) -> dict[str, Any]:
    summary = produce(settings, ProducePlan(sensors=sensors, count=events, rate=0, seed=11))
    with StreamRuntime(settings) as runtime:
        started = time.monotonic()
        runtime.job.wait_idle(timeout=1800, min_offsets=summary.sent)
        elapsed = time.monotonic() - started
        with StoreClient(settings, api_url=runtime.store_service.api.url) as client:
            stages = _stages(client, -1)
    return {"events": summary.sent, "seconds": round(elapsed, 2), "events_per_second": round(summary.sent / elapsed),
            "stages": stages}  # fmt: skip


def fixed_rates(
    settings: Settings, rates: list[float], duration: float, sensors: int
) -> list[dict[str, Any]]:
    out = []
    with (
        StreamRuntime(settings) as runtime,
        StoreClient(settings, api_url=runtime.store_service.api.url) as client,
    ):
        time.sleep(8)  # first (empty) batches and JIT warm-up, not measured
        for phase, rate in enumerate(rates):
            before = _last_batch(client)
            # A new seed per phase: the same seed would resend the same event ids (all duplicates).
            proc = _producer_process(settings, rate, duration, sensors, seed=100 + phase)
            proc.wait(timeout=duration + 120)
            lag_end = runtime.monitor.lag.lag(_end_offsets(client))
            waited = time.monotonic()
            runtime.job.wait_idle(timeout=600)
            catch_up = time.monotonic() - waited
            row = {"rate": rate, "lag_at_end": sum(lag_end.values()), "catch_up_seconds": round(catch_up, 2)}
            row.update(_latency(client, before))
            row["stages"] = _stages(client, before)
            row["kept_up"] = row["lag_at_end"] <= max(rate * 3 * settings.trigger, 1000)
            out.append(row)
            console.print(f"rate {rate:,.0f}/s: {json.dumps(row, default=str)}")
    return out


def _end_offsets(client: StoreClient) -> dict[str, int]:
    df = client.sql("SELECT end_offsets FROM sink_commits ORDER BY committed_at DESC LIMIT 1")
    return json.loads(df.iloc[0, 0]) if len(df) else {}


def run_stream_bench(
    settings: Settings, *, bootstrap_servers: str | None = None, events: int = 500_000,
    rates: tuple[float, ...] = (1_000, 5_000, 20_000, 50_000), duration: float = 30.0, sensors: int = 100,
    report: Path = Path("reports/bench-stream.json"),
) -> dict[str, Any]:  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="sensorstream-bench-") as tmp,
        bench_broker(settings, bootstrap_servers, None) as bootstrap,
    ):
        work = Path(tmp)
        topic = f"bench-drain-{uuid.uuid4().hex[:6]}"
        create_topic({"bootstrap.servers": bootstrap}, topic, settings.partitions)
        drained = drain(_settings(settings, bootstrap, topic, work / "drain"), events, sensors)
        console.print(f"drain: {json.dumps(drained)}")
        topic = f"bench-rates-{uuid.uuid4().hex[:6]}"
        create_topic({"bootstrap.servers": bootstrap}, topic, settings.partitions)
        paced = fixed_rates(
            _settings(settings, bootstrap, topic, work / "rates"), list(rates), duration, sensors
        )
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {"spark_master": settings.spark_master, "shuffle_partitions": settings.shuffle_partitions,
                     "partitions": settings.partitions, "trigger_s": settings.trigger,
                     "max_offsets_per_trigger": settings.max_offsets_per_trigger, "window_s": settings.window},
        "drain": drained, "rates": paced,
        "sustained_events_per_second": max([r["rate"] for r in paced if r["kept_up"]], default=0),
    }  # fmt: skip
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2, default=str))
    _print(result)
    return result


def _print(result: dict[str, Any]) -> None:
    d = result["drain"]
    console.print(
        f"drain: {d['events']:,} events in {d['seconds']} s = [bold]{d['events_per_second']:,} events/s[/bold]; "
        f"per batch: {d['stages']['rows_per_batch']:,.0f} rows, spark {d['stages']['spark_ms']:.0f} ms, "
        f"sink {d['stages']['sink_ms']:.0f} ms"
    )
    table = Table("rate/s", "kept up", "lag at end", "p50 ms", "p99 ms", "kafka p50", "kafka p99", "spark ms", "sink ms",
                  title="event -> commit latency at fixed rates")  # fmt: skip
    for r in result["rates"]:

        def f(v):
            return "-" if v is None else f"{v:,.0f}"

        table.add_row(f"{r['rate']:,.0f}", "yes" if r["kept_up"] else "[red]no[/red]", f"{r['lag_at_end']:,}",
                      f(r["p50_ms"]), f(r["p99_ms"]), f(r["kafka_p50_ms"]), f(r["kafka_p99_ms"]),
                      f(r["stages"]["spark_ms"]), f(r["stages"]["sink_ms"]))  # fmt: skip
    console.print(table)
    console.print(f"sustained: [bold]{result['sustained_events_per_second']:,.0f} events/s[/bold]; settings "
                  f"{json.dumps(result['settings'])}")  # fmt: skip

"""Streaming benchmark: how many events/s the job keeps up with here, and at what latency.

Three measurements, each on a throwaway broker (unless ``--bootstrap-servers``):

1. **drain**: a backlog of N events is already in Kafka; the job drains it with the configured
   ``maxOffsetsPerTrigger``. Events/s = N / time from the first batch to caught-up. This is the
   job's capacity with nothing else competing for the two cores.
2. **fixed rates**: the bulk load (``bench.load``: events rendered in DuckDB, a separate process,
   as in production) produces at R events/s for D seconds while the job runs. (The simulator, at
   ~60 us of Python per event, tops out at 11-15 K events/s beside the job, and its own delay
   counted as the job's latency.) Reports event->commit latency p50/p99 over every event of the
   phase (commit time of its batch minus its event time) and whether the job kept up: the lag's
   trend over the phase's batches is flat (see :func:`kept_up`). Sustained = the highest rate
   actually produced in a phase the job kept up with.
3. **where time goes**: per-batch Spark time (Kafka read, parse, validate, Arrow transfer) vs sink
   time (DuckDB merge), from ``pipeline_metrics``.

The report keeps every batch of the fixed-rate phases, and two PNGs are drawn from it next to the
report: latency over time (``stream-latency.png``) and throughput vs rate (``stream-throughput.png``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sensorstream.config import Settings
from sensorstream.kafka.topics import create_topic
from sensorstream.monitor.lag import LAST_END_OFFSETS_SQL, end_offsets
from sensorstream.produce import ProducePlan, produce
from sensorstream.serve.client import StoreClient
from sensorstream.tools.bench.kafka import bench_broker
from sensorstream.tools.bench.load import load_process
from sensorstream.tools.bench.plots import plot_stream
from sensorstream.writer.main import StreamRuntime

console = Console(stderr=True)
# Outside a terminal (make, CI logs, a pipe) rich would fold the table to 80 columns.
wide = console if console.is_terminal else Console(stderr=True, width=160)


def run_settings(base: Settings, bootstrap: str, topic: str, work: Path, **over: Any) -> Settings:
    return base.model_copy(
        update={
            "bootstrap_servers": bootstrap, "topic": topic, "data_dir": work, "db": work / "bench.duckdb",
            "checkpoint_dir": work / "checkpoints", "api_port": 0, "metrics_port": 0, "pg_port": -1, **over,
        }
    )  # fmt: skip


WARM_UP_S = 20.0


def warm_up(settings: Settings, runtime: Any, sensors: int, rate: float, seconds: float = WARM_UP_S) -> None:
    """``seconds`` of real events at ``rate`` through the job before anything is measured.

    The job's first batches with data compile Spark's code for the parse and the aggregation,
    open the Kafka fetchers and warm the JVM's JIT: the first batch took ~4.5 s here, and
    batches of 10-30 K events kept taking 2-5 s for about 10 s more. Measured from a cold start,
    that backlog is what every later event waits behind, and it says nothing about the pipeline
    running at that rate.
    """
    load_process(settings, rate, seconds, sensors).wait(timeout=seconds + 120)
    runtime.job.wait_idle(timeout=300)


def _figures(df: Any) -> dict[str, float | None]:
    """The first row of a one-row aggregate as floats; SQL NULL and NaN (no rows) become None."""
    return {k: None if v is None or v != v else float(v) for k, v in df.iloc[0].to_dict().items()}


# A run's batches are the ones committed after the newest batch before it (``last_commit``), not
# those above a batch id: batch ids restart at 0 with each checkpoint, and the store keeps every
# query's rows. Commit times travel as epoch microseconds: exact, and plain numbers over the API.
COMMITTED_AFTER = "committed_at > make_timestamptz(CAST(? AS BIGINT))"


def last_commit(client: StoreClient) -> int:
    """The newest batch's commit time in epoch microseconds (0 before the first batch)."""
    df = client.sql("SELECT coalesce(epoch_us(max(committed_at)), 0) AS t FROM pipeline_metrics")
    return int(df.iloc[0, 0])


def latency_figures(
    client: StoreClient, since_us: int, until_us: int | None = None
) -> dict[str, float | None]:
    """Per-event latency: the commit time of the event's batch minus its event time, for the
    batches committed after ``since_us`` (up to and including ``until_us``; see ``last_commit``)."""
    # A reading's batch is the metrics row of its batch id committed first at or after the reading's
    # transaction began (ingested_at): another query's batch of the same id committed in another
    # transaction, wholly before that or after this batch's commit.
    df = client.sql(
        """
        SELECT count(*) AS events,
               quantile_cont(epoch_ms(m.committed_at) - epoch_ms(r.event_time), 0.5) AS p50_ms,
               quantile_cont(epoch_ms(m.committed_at) - epoch_ms(r.event_time), 0.99) AS p99_ms,
               quantile_cont(epoch_ms(m.committed_at) - epoch_ms(r.kafka_timestamp), 0.5) AS kafka_p50_ms,
               quantile_cont(epoch_ms(m.committed_at) - epoch_ms(r.kafka_timestamp), 0.99) AS kafka_p99_ms
        FROM readings r ASOF JOIN pipeline_metrics m ON r.batch_id = m.batch_id AND r.ingested_at <= m.committed_at
        WHERE NOT r.is_late AND r.ingested_at > make_timestamptz(CAST($since AS BIGINT))
          AND m.committed_at <= coalesce(make_timestamptz(CAST($until AS BIGINT)), m.committed_at)
        """,
        {"since": since_us, "until": until_us},
    )
    return _figures(df)


def _stages(client: StoreClient, since_us: int) -> dict[str, float | None]:
    df = client.sql(
        f"""
        SELECT count(*) AS batches, avg(input_rows) AS rows_per_batch, avg(spark_ms) AS spark_ms,
               avg(sink_ms) AS sink_ms, avg(trigger_ms) AS trigger_ms,
               1000 * sum(input_rows) / nullif(sum(spark_ms + sink_ms), 0) AS rows_per_busy_second
        FROM pipeline_metrics WHERE {COMMITTED_AFTER}
        """,
        [since_us],
    )
    # trigger_ms comes from Spark's progress, read after the next batch: the last one may lack it.
    return _figures(df)


def drain(settings: Settings, events: int, sensors: int) -> dict[str, Any]:
    summary = produce(settings, ProducePlan(sensors=sensors, count=events, rate=0, seed=11))
    with StreamRuntime(settings) as runtime:
        started = time.monotonic()
        runtime.job.wait_idle(timeout=1800, min_offsets=summary.sent)
        elapsed = time.monotonic() - started
        with StoreClient(settings, api_url=runtime.store_service.api.url) as client:
            stages = _stages(client, 0)
            steady = _steady(client)
    return {"events": summary.sent, "seconds": round(elapsed, 2), "events_per_second": round(summary.sent / elapsed),
            "steady_events_per_second": steady, "stages": stages}  # fmt: skip


def _steady(client: StoreClient) -> int | None:
    """Rows/s from the first batch's commit to the last one's: the drain rate without the first
    batch, which in a fresh JVM also pays for class loading, JIT and Kafka connections."""
    df = client.sql(
        """
        SELECT sum(input_rows) - arg_min(input_rows, committed_at) AS rows,
               epoch_ms(max(committed_at)) - epoch_ms(min(committed_at)) AS ms
        FROM pipeline_metrics WHERE input_rows > 0
        """
    )
    rows, ms = df.iloc[0, 0], df.iloc[0, 1]
    return round(1000 * float(rows) / float(ms)) if ms and ms == ms and ms > 0 else None


def _batches(client: StoreClient, since_us: int, t0: float) -> list[dict[str, Any]]:
    """One row per batch, for the latency-over-time plot: seconds since the run began, and figures."""
    df = client.sql(
        f"""
        SELECT batch_id, epoch_ms(committed_at) / 1000.0 AS committed, input_rows, latency_p50_ms,
               latency_p95_ms, latency_max_ms, consumer_lag, spark_ms, sink_ms, trigger_ms
        FROM pipeline_metrics WHERE {COMMITTED_AFTER} ORDER BY committed_at
        """,
        [since_us],
    )
    rows = df.to_dict("records")
    for row in rows:
        row["t"] = round(row.pop("committed") - t0, 3)
    return [{k: (None if v != v else v) for k, v in row.items()} for row in rows]


def fixed_rates(
    settings: Settings, rates: list[float], duration: float, sensors: int, warm_up_s: float = WARM_UP_S
) -> list[dict[str, Any]]:
    out = []
    with (
        StreamRuntime(settings) as runtime,
        StoreClient(settings, api_url=runtime.store_service.api.url) as client,
    ):
        runtime.job.wait_idle(timeout=300)  # the first (empty) batches, not measured
        warm_up(settings, runtime, sensors, rates[0] if rates else 1000.0, warm_up_s)
        t0 = time.time()
        for rate in rates:
            before = last_commit(client)
            high_before = sum(runtime.monitor.lag.high_watermarks().values())
            started, phase_start = time.monotonic(), time.time() - t0
            proc = load_process(settings, rate, duration, sensors)
            proc.wait(timeout=duration + 120)
            produced_for = time.monotonic() - started
            phase_end = phase_start + produced_for
            lag_end = runtime.monitor.lag.lag(_end_offsets(client))
            produced = sum(runtime.monitor.lag.high_watermarks().values()) - high_before
            waited = time.monotonic()
            runtime.job.wait_idle(timeout=600)
            catch_up = time.monotonic() - waited
            row = {
                "rate": rate, "produced": produced,
                # What the producer really reached: at high targets it, not the job, is the limit.
                "produced_per_second": round(produced / produced_for), "lag_at_end": sum(lag_end.values()),
                "catch_up_seconds": round(catch_up, 2), "t_start": round(phase_start, 2), "t_end": round(phase_end, 2),
            }  # fmt: skip
            row.update(latency_figures(client, before))
            row["stages"] = _stages(client, before)
            row["batches"] = _batches(client, before, t0)
            # While the producer ran: the catch-up batches after it stopped would flatten the trend.
            row["lag_growth_per_second"] = round(
                lag_growth([b for b in row["batches"] if phase_start <= b["t"] <= phase_end])
            )
            row["kept_up"] = kept_up(row, settings.trigger)
            out.append(row)
            console.print(
                f"rate {rate:,.0f}/s: " + json.dumps({k: v for k, v in row.items() if k != "batches"})
            )
    return out


def lag_growth(batches: list[dict[str, Any]]) -> float:
    """Least-squares slope of the consumer lag over the phase, in events/s (0 with < 3 batches)."""
    points = [(b["t"], b["consumer_lag"]) for b in batches if b.get("consumer_lag") is not None]
    if len(points) < 3:
        return 0.0
    try:
        return statistics.linear_regression(*zip(*points, strict=True)).slope
    except statistics.StatisticsError:  # every batch at the same instant: no trend to speak of
        return 0.0


def kept_up(phase: dict[str, Any], trigger_s: float) -> bool:
    """The job kept up with a phase if its lag did not grow: by at most 2 % of the produced rate
    over the phase (noise: lag is sampled once per batch), and at the end no more than three
    triggers' worth of input was waiting (three seconds' worth with a sub-second trigger, whose
    batches take longer than the trigger anyway)."""
    rate = phase["produced_per_second"]
    waiting_limit = max(3 * max(trigger_s, 1.0) * rate, 1000)
    return phase["lag_growth_per_second"] <= 0.02 * rate and phase["lag_at_end"] <= waiting_limit


def _end_offsets(client: StoreClient) -> dict[str, int]:
    df = client.sql(LAST_END_OFFSETS_SQL)
    return end_offsets(df.iloc[0, 0]) if len(df) else {}


def run_stream_bench(
    settings: Settings, *, bootstrap_servers: str | None = None, events: int = 500_000,
    rates: tuple[float, ...] = (1_000, 5_000, 10_000, 15_000, 20_000, 30_000, 50_000), duration: float = 30.0, sensors: int = 100,
    report: Path = Path("reports/bench-stream.json"), plots: bool = True, warm_up_s: float = WARM_UP_S,
) -> dict[str, Any]:  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="sensorstream-bench-") as tmp,
        bench_broker(settings, bootstrap_servers, None) as bootstrap,
    ):
        work = Path(tmp)
        topic = f"bench-drain-{uuid.uuid4().hex[:6]}"
        create_topic({"bootstrap.servers": bootstrap}, topic, settings.partitions)
        drained = drain(run_settings(settings, bootstrap, topic, work / "drain"), events, sensors)
        console.print(f"drain: {json.dumps(drained)}")
        paced = []
        if rates:  # `--rates ""`: the drain alone (what `bench scale` runs at each point)
            topic = f"bench-rates-{uuid.uuid4().hex[:6]}"
            create_topic({"bootstrap.servers": bootstrap}, topic, settings.partitions)
            paced = fixed_rates(
                run_settings(settings, bootstrap, topic, work / "rates"),
                list(rates),
                duration,
                sensors,
                warm_up_s,
            )
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {"spark_master": settings.spark_master, "shuffle_partitions": settings.shuffle_partitions,
                     "partitions": settings.partitions, "trigger_s": settings.trigger,
                     "max_offsets_per_trigger": settings.max_offsets_per_trigger, "window_s": settings.window},
        "drain": drained, "rates": paced, "sensors": sensors,
        # The rate actually produced, not the target: a producer that fell short proves nothing more.
        "sustained_events_per_second": max(
            [min(r["rate"], r["produced_per_second"]) for r in paced if r["kept_up"]], default=0
        ),
    }  # fmt: skip
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2, default=str))
    if paced and plots:
        result["plots"] = [str(p) for p in plot_stream(result, report.parent)]
        report.write_text(json.dumps(result, indent=2, default=str))
    _print(result)
    return result


def _print(result: dict[str, Any]) -> None:
    d = result["drain"]
    console.print(
        f"drain: {d['events']:,} events in {d['seconds']} s = [bold]{d['events_per_second']:,} events/s[/bold] "
        f"({d['steady_events_per_second'] or 0:,} after the first batch); "
        f"per batch: {d['stages']['rows_per_batch']:,.0f} rows, spark {d['stages']['spark_ms']:.0f} ms, "
        f"sink {d['stages']['sink_ms']:.0f} ms"
    )
    table = Table("rate/s", "produced/s", "kept up", "lag growth/s", "lag at end", "p50 ms", "p99 ms", "kafka p50", "kafka p99", "spark ms", "sink ms",
                  title="event -> commit latency at fixed rates")  # fmt: skip
    for r in result["rates"]:

        def f(v):
            return "-" if v is None else f"{v:,.0f}"

        table.add_row(f"{r['rate']:,.0f}", f"{r['produced_per_second']:,.0f}", "yes" if r["kept_up"] else "[red]no[/red]", f"{r['lag_growth_per_second']:,}", f"{r['lag_at_end']:,}",
                      f(r["p50_ms"]), f(r["p99_ms"]), f(r["kafka_p50_ms"]), f(r["kafka_p99_ms"]),
                      f(r["stages"]["spark_ms"]), f(r["stages"]["sink_ms"]))  # fmt: skip
    if result["rates"]:
        wide.print(table)
    for plot in result.get("plots", []):
        console.print(f"plot: {plot}")
    console.print(f"sustained: [bold]{result['sustained_events_per_second']:,.0f} events/s[/bold]; settings "
                  f"{json.dumps(result['settings'])}")  # fmt: skip

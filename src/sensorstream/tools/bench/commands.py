"""``sensorstream bench ...``: each benchmark prints a table and writes reports/*.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sensorstream.terminal import fail, settings_or_exit

app = typer.Typer(help="Benchmarks; print a table and write reports/*.json.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    """Put ``bench …`` on the ``sensorstream`` menu (the ``sensorstream.commands`` entry point)."""
    root.add_typer(app, name="bench")


@app.callback()
def _bench() -> None:
    from sensorstream.stopping import sigterm_unwinds

    sigterm_unwinds()  # a benchmark stopped by SIGTERM stops its broker and job too


# --- bench kafka ---------------------------------------------------------------------------------
@app.command("kafka")
def bench_kafka(
    records: Annotated[int, typer.Option(help="records per run")] = 1_000_000,
    record_size: Annotated[int, typer.Option(help="bytes per record (events are padded to it)")] = 200,
    bootstrap_servers: Annotated[
        str | None, typer.Option(help="use this broker instead of starting a throwaway one")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="port for the throwaway broker (default: a free one)")
    ] = None,
    report: Annotated[Path, typer.Option(help="JSON report")] = Path("reports/bench-kafka.json"),
) -> None:
    """Our producer and consumer vs Kafka's own ProducerPerformance / ConsumerPerformance."""
    from sensorstream.tools.bench.kafka import run_bench

    settings = settings_or_exit()
    try:
        run_bench(
            settings, records=records, record_size=record_size, bootstrap_servers=bootstrap_servers,
            port=port, report=report,
        )  # fmt: skip
    except RuntimeError as exc:  # the benchmark's own checks (a tool failed, messages lost)
        fail(str(exc))


@app.command("stream")
def bench_stream(
    events: Annotated[int, typer.Option(help="backlog size for the drain measurement")] = 500_000,
    rates: Annotated[
        str, typer.Option(help="comma-separated producer rates (events/s)")
    ] = "1000,5000,10000,15000,20000,30000,50000",
    duration: Annotated[float, typer.Option(help="seconds per rate")] = 30.0,
    sensors: Annotated[int, typer.Option(help="simulated sensors (keys)")] = 100,
    bootstrap_servers: Annotated[
        str | None, typer.Option(help="use this broker instead of a throwaway one")
    ] = None,
    report: Annotated[Path, typer.Option(help="JSON report")] = Path("reports/bench-stream.json"),
) -> None:
    """Events/s the streaming job sustains here, and event->commit latency at fixed rates."""
    from sensorstream.tools.bench.stream import run_stream_bench

    settings = settings_or_exit()
    run_stream_bench(
        settings, bootstrap_servers=bootstrap_servers, events=events,
        rates=tuple(float(r) for r in rates.split(",") if r.strip()), duration=duration, sensors=sensors,
        report=report,
    )  # fmt: skip


@app.command("scale")
def bench_scale(
    events: Annotated[int, typer.Option(help="backlog drained at each point")] = 1_200_000,
    bootstrap_servers: Annotated[
        str | None, typer.Option(help="use this broker instead of a throwaway one")
    ] = None,
    report: Annotated[Path, typer.Option(help="JSON report (scale.png is drawn beside it)")] = Path(
        "reports/bench-scale.json"
    ),
) -> None:
    """Drain throughput vs cores (local[1], local[2]), partitions (1/3/6) and sensors (100/10K/100K)."""
    from sensorstream.tools.bench.scale import run_scale_bench

    run_scale_bench(settings_or_exit(), bootstrap_servers=bootstrap_servers, events=events, report=report)


@app.command("soak")
def bench_soak(
    prefills: Annotated[
        str, typer.Option(help="comma-separated readings pre-filled before measuring")
    ] = "0,10000000,50000000",
    e2e_rate: Annotated[float, typer.Option(help="events/s for the latency on a full store")] = 5_000,
    batches: Annotated[int, typer.Option(help="sink batches per pre-fill size")] = 30,
    rate: Annotated[float, typer.Option(help="events/s for the soak")] = 40_000,
    minutes: Annotated[float, typer.Option(help="soak length (0: skip the soak)")] = 20,
    retention: Annotated[
        str, typer.Option(help="readings retention during the soak and the drain")
    ] = "5 minutes",
    drain_rate: Annotated[
        float, typer.Option(help="events/s of the backlog's schedule, drained with no producer running")
    ] = 50_000,
    drain_minutes: Annotated[
        float, typer.Option(help="minutes of that schedule in the backlog (0: skip)")
    ] = 8,
    bootstrap_servers: Annotated[
        str | None, typer.Option(help="use this broker instead of a throwaway one")
    ] = None,
    report: Annotated[Path, typer.Option(help="JSON report (soak.png is drawn beside it)")] = Path(
        "reports/bench-soak.json"
    ),
) -> None:
    """Cost per batch on a store pre-filled with 0/10M/50M readings, a long run at steady state, then a
    backlog drained with no producer on the cores."""
    from sensorstream.tools.bench.soak import run_soak_bench

    settings = settings_or_exit()
    run_soak_bench(
        settings, bootstrap_servers=bootstrap_servers,
        prefills=tuple(int(n) for n in prefills.split(",") if n.strip()), e2e_rate=e2e_rate, batches=batches,
        rate=rate, minutes=minutes, retention=settings_or_exit(retention=retention).retention,
        drain_rate=drain_rate, drain_minutes=drain_minutes, report=report,
    )  # fmt: skip


@app.command("alerts")
def bench_alerts(
    sensors: Annotated[int, typer.Option(help="simulated sensors")] = 20,
    rate: Annotated[float, typer.Option(help="readings/s over all sensors")] = 200.0,
    minutes: Annotated[float, typer.Option(help="event time simulated per run")] = 10.0,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 0,
    report: Annotated[Path, typer.Option(help="JSON report")] = Path("reports/bench-alerts.json"),
) -> None:
    """False alarms on clean signals, and injected spikes, drifts and stuck values caught, through the real sink."""
    from sensorstream.tools.bench.alerts import run_alerts_bench

    runs = run_alerts_bench(
        settings_or_exit(), sensors=sensors, rate=rate, minutes=minutes, seed=seed, report=report
    )
    if any(r.false_alarms for r in runs) or not runs[1].all_caught:
        raise typer.Exit(1)


@app.command("store")
def bench_store(
    rows: Annotated[int, typer.Option(help="readings prefilled before measuring")] = 1_000_000,
    seconds: Annotated[float, typer.Option(help="seconds per phase")] = 20.0,
) -> None:
    """Read API latency and staleness while a writer commits a batch every 100 ms."""
    from sensorstream.tools.bench.store import run_store_bench

    run_store_bench(settings_or_exit(), rows=rows, seconds=seconds)

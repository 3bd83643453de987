"""The tools wing's commands: the local broker and Spark cluster, benchmarks and fault runs.

Registered on the root ``sensorstream`` command by :mod:`sensorstream.cli`, beside the runtime's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sensorstream.config import Settings
from sensorstream.terminal import console, fail, settings_or_exit

bench_app = typer.Typer(help="Benchmarks; print a table and write reports/*.json.", no_args_is_help=True)
commands = typer.Typer()  # top-level tool commands (faults)


@bench_app.callback()
def _bench() -> None:
    from sensorstream.stopping import sigterm_unwinds

    sigterm_unwinds()  # a benchmark stopped by SIGTERM stops its broker and job too


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
    app.add_typer(cluster_app, name="cluster")
    app.add_typer(commands)


# --- bench kafka ---------------------------------------------------------------------------------
@bench_app.command("kafka")
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


@bench_app.command("stream")
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


@bench_app.command("scale")
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


@bench_app.command("soak")
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


@bench_app.command("alerts")
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


@bench_app.command("store")
def bench_store(
    rows: Annotated[int, typer.Option(help="readings prefilled before measuring")] = 1_000_000,
    seconds: Annotated[float, typer.Option(help="seconds per phase")] = 20.0,
) -> None:
    """Read API latency and staleness while a writer commits a batch every 100 ms."""
    from sensorstream.tools.bench.store import run_store_bench

    run_store_bench(settings_or_exit(), rows=rows, seconds=seconds)


# --- faults --------------------------------------------------------------------------------------
@commands.command("faults")
def faults_cmd(
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="kill9, broker-restart, malformed-storm, hostile-reader, hostile-pg, reader, disk, cluster or all (repeatable)"
        ),
    ] = None,
    events: Annotated[int | None, typer.Option(help="readings per scenario (default: per scenario)")] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="the bounded CI form (20K events, fewer faults)")
    ] = False,
    workdir: Annotated[Path | None, typer.Option(help="temp dirs go here (default: system temp)")] = None,
    bootstrap_servers: Annotated[
        str | None, typer.Option(help="reuse this broker for scenarios that do not break the broker")
    ] = None,
    seed: Annotated[int, typer.Option(help="event stream and fault timing seed")] = 0,
    keep: Annotated[
        bool, typer.Option("--keep", help="keep temp dirs (logs, stores) of passed runs too")
    ] = False,
    report: Annotated[Path, typer.Option(help="JSON report")] = Path("reports/faults.json"),
) -> None:
    """Break the pipeline on purpose and check nothing is lost, doubled or wrong (exit 1 if anything is)."""
    from sensorstream.stopping import sigterm_unwinds
    from sensorstream.tools.faults.scenario import FaultOptions
    from sensorstream.tools.faults.suite import SCENARIOS, run_faults

    sigterm_unwinds()  # stopped by SIGTERM (timeout, a CI runner): its brokers and jobs stop too

    names = scenario or ["all"]
    unknown = [n for n in names if n != "all" and n not in SCENARIOS]
    if unknown:
        fail(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)} or all", 2)
    settings = settings_or_exit()
    if bootstrap_servers:  # before any scenario starts its processes
        from sensorstream.kafka.topics import require_broker

        require_broker({**settings.kafka_client_config, "bootstrap.servers": bootstrap_servers})
    opts = FaultOptions(
        settings,
        quick=quick,
        events=events,
        workdir=workdir,
        bootstrap=bootstrap_servers,
        seed=seed,
        keep=keep,
    )
    results = run_faults(opts, names, report=report, console=console)
    if not all(r.passed for r in results):
        raise typer.Exit(1)


# --- spark cluster -------------------------------------------------------------------------------
cluster_app = typer.Typer(
    help="A local Spark standalone cluster (master + workers) on loopback.", no_args_is_help=True
)
MasterPortOpt = Annotated[int, typer.Option("--port", help="master port")]
WebuiPortOpt = Annotated[int, typer.Option("--webui-port", help="master web UI port")]


def _spark_cluster(
    settings: Settings, port: int, webui_port: int, workers: int = 2, cores: int = 1, memory: str = "1g"
):
    from sensorstream.tools.local.cluster import SparkCluster

    return SparkCluster(settings.data_dir / "spark-cluster", port, webui_port, workers, cores, memory)


@cluster_app.command("start")
def cluster_start(
    port: MasterPortOpt = 7077,
    webui_port: WebuiPortOpt = 8080,
    workers: Annotated[int, typer.Option(help="worker processes")] = 2,
    cores: Annotated[int, typer.Option(help="cores per worker")] = 1,
    memory: Annotated[str, typer.Option(help="memory per worker (its executor's size)")] = "1g",
) -> None:
    """Start a master and workers in the background (logs in data/spark-cluster)."""
    settings = settings_or_exit()
    cluster = _spark_cluster(settings, port, webui_port, workers, cores, memory)
    url = cluster.start()
    console.print(
        f"spark cluster up: [bold]{url}[/bold] ({workers} x {cores} core(s), {memory}); UI {cluster.webui}; "
        f"run the job on it with SENSORSTREAM_SPARK_MASTER={url} sensorstream stream"
    )


@cluster_app.command("stop")
def cluster_stop(
    port: MasterPortOpt = 7077,
    webui_port: WebuiPortOpt = 8080,
    workers: Annotated[int, typer.Option(help="worker processes")] = 2,
) -> None:
    """Stop the workers, then the master (SIGTERM, then SIGKILL after 30 s)."""
    stopped = _spark_cluster(settings_or_exit(), port, webui_port, workers).stop()
    console.print(f"stopped {', '.join(stopped)}" if stopped else "no spark cluster was running")

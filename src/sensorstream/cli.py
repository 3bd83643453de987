"""The one entry point, ``sensorstream``. Commands are thin: they load settings and call a module.

Each command group lives in its own section below; modules are imported inside the commands so
``sensorstream --help`` stays fast and a missing optional part never breaks the others.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sensorstream.config import Settings, SettingsError, load_settings
from sensorstream.logs import setup_logging

app = typer.Typer(
    help="Real-time sensor analytics: Kafka -> Spark -> DuckDB -> dashboard.", no_args_is_help=True
)
kafka_app = typer.Typer(help="The local single-node (or 3-node) KRaft broker.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks; print a table and write reports/*.json.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(bench_app, name="bench")

console = Console(stderr=True)


def settings_or_exit(**overrides) -> Settings:
    """Settings with CLI overrides; a bad value ends the program with a message naming it."""
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    setup_logging(settings.log_level, settings.log_format)
    return settings


def fail(message: str, code: int = 1) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


# --- kafka ---------------------------------------------------------------------------------------
BrokersOpt = Annotated[int, typer.Option("--brokers", help="nodes in the local cluster (3 for fault tests)")]
PortOpt = Annotated[
    int | None, typer.Option("--port", help="first client port (default: from BOOTSTRAP_SERVERS)")
]


def _local_kafka(settings: Settings, brokers: int, port: int | None):
    from sensorstream.kafka.broker import LocalKafka, port_of

    return LocalKafka(
        settings.data_dir / "kafka",
        port=port or port_of(settings.bootstrap_servers),
        brokers=brokers,
        cache_dir=settings.cache_dir,
    )


@kafka_app.command("start")
def kafka_start(
    brokers: BrokersOpt = 1,
    port: PortOpt = None,
    foreground: Annotated[
        bool,
        typer.Option(
            "--foreground", help="stay in the foreground until SIGINT/SIGTERM, then stop cleanly (systemd)"
        ),
    ] = False,
) -> None:
    """Start the local broker(s) in the background and create the topic."""
    from sensorstream.kafka.broker import BrokerError, create_topic
    from sensorstream.kafka.jars import JavaMissingError
    from sensorstream.stopping import StopSignals

    settings = settings_or_exit()
    kafka = _local_kafka(settings, brokers, port)
    # In the foreground the handlers go in first: a stop during start-up still stops the nodes.
    signals = StopSignals("kafka").install() if foreground else None
    try:
        bootstrap = kafka.start(tied=foreground)
        created = create_topic(
            {**settings.kafka_client_config, "bootstrap.servers": bootstrap},
            settings.topic,
            settings.partitions,
            max(settings.replication_factor, min(3, brokers)),
        )
    except (BrokerError, JavaMissingError, RuntimeError) as exc:
        fail(str(exc))
        return
    console.print(
        f"kafka up at [bold]{bootstrap}[/bold]; topic {settings.topic} "
        f"({'created' if created else 'exists'}, {settings.partitions} partitions); logs in {kafka.data_dir}"
    )
    if signals is not None:
        code = kafka.watch(signals.requested)
        kafka.stop()
        raise typer.Exit(code)


@kafka_app.command("stop")
def kafka_stop(brokers: BrokersOpt = 1, port: PortOpt = None) -> None:
    """Stop the local broker(s) cleanly (SIGTERM, wait)."""
    settings = settings_or_exit()
    stopped = _local_kafka(settings, brokers, port).stop()
    console.print(f"stopped {len(stopped)} kafka node(s)" if stopped else "kafka was not running")


@kafka_app.command("status")
def kafka_status(brokers: BrokersOpt = 1, port: PortOpt = None) -> None:
    """Is the broker up and answering? Exit code 1 when not."""
    settings = settings_or_exit()
    status = _local_kafka(settings, brokers, port).status()
    print(json.dumps(status, indent=2))
    if not status["answering"]:
        raise typer.Exit(1)


# --- stream --------------------------------------------------------------------------------------
# --- kafka topic ---------------------------------------------------------------------------------
topic_app = typer.Typer(help="Topics on the cluster (SENSORSTREAM_BOOTSTRAP_SERVERS).", no_args_is_help=True)
kafka_app.add_typer(topic_app, name="topic")


def _topic_or_exit(settings: Settings) -> None:
    """A missing topic stops a producer or the stream at once with one sentence, not after a timeout."""
    from sensorstream.kafka.topics import TopicError, require_topic

    try:
        require_topic(settings.kafka_client_config, settings.topic)
    except TopicError as exc:
        fail(str(exc))


@topic_app.command("create")
def topic_create(
    name: Annotated[str | None, typer.Argument(help="topic (default: SENSORSTREAM_TOPIC)")] = None,
    partitions: Annotated[int | None, typer.Option(help="default: SENSORSTREAM_PARTITIONS")] = None,
    replication_factor: Annotated[
        int | None,
        typer.Option("--replication-factor", "-r", help="default: SENSORSTREAM_REPLICATION_FACTOR"),
    ] = None,
    retention: Annotated[
        str | None, typer.Option(help="how long Kafka keeps messages, e.g. '7 days' (default: the broker's)")
    ] = None,
) -> None:
    """Create a topic (nothing changes if it exists)."""
    from sensorstream.config import parse_duration
    from sensorstream.kafka.topics import TopicError, create

    settings = settings_or_exit(partitions=partitions, replication_factor=replication_factor)
    topic = name or settings.topic
    try:
        retention_ms = round(parse_duration(retention) * 1000) if retention else None
    except ValueError as exc:
        fail(f"--retention {retention!r}: {exc}", 2)
        return
    try:
        created = create(settings.kafka_client_config, topic, settings.partitions, settings.replication_factor,
                         retention_ms)  # fmt: skip
    except TopicError as exc:
        fail(str(exc))
        return
    state = "created" if created else "already exists (left as it is)"
    console.print(
        f"topic {topic} {state}: {settings.partitions} partitions, replication {settings.replication_factor}"
    )


@topic_app.command("list")
def topic_list() -> None:
    """Every topic with its partitions and replication factor."""
    from sensorstream.kafka.topics import TopicError, list_topics

    settings = settings_or_exit()
    try:
        topics = list_topics(settings.kafka_client_config)
    except TopicError as exc:
        fail(str(exc))
        return
    table = Table("topic", "partitions", "replication", title=f"topics on {settings.bootstrap_servers}")
    for t in topics:
        table.add_row(t.name, str(t.partitions), str(t.replication_factor))
    Console().print(table)


@topic_app.command("describe")
def topic_describe(
    name: Annotated[str | None, typer.Argument(help="default: SENSORSTREAM_TOPIC")] = None,
) -> None:
    """Partitions (leader, in-sync replicas), replication and retention of a topic."""
    from sensorstream.kafka.topics import TopicError, describe_topic

    settings = settings_or_exit()
    try:
        info = describe_topic(settings.kafka_client_config, name or settings.topic)
    except TopicError as exc:
        fail(str(exc))
        return
    out = Console()
    out.print(f"topic {info.name}: {info.partitions} partitions, replication {info.replication_factor}")
    for key, value in info.configs.items():
        out.print(f"  {key} = {value}")
    table = Table("partition", "leader", "in-sync replicas")
    for part in sorted(info.leaders):
        table.add_row(str(part), str(info.leaders[part]), f"{info.in_sync[part]}/{info.replication_factor}")
    out.print(table)


@app.command("stream")
def stream(
    bootstrap_servers: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    topic: Annotated[str | None, typer.Option(help="topic to read")] = None,
    db: Annotated[Path | None, typer.Option(help="DuckDB file")] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Spark checkpoints")] = None,
    spark_master: Annotated[str | None, typer.Option(help="e.g. local[2] or spark://host:7077")] = None,
    max_offsets_per_trigger: Annotated[
        int | None, typer.Option(help="upper bound of one micro-batch")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    until_idle: Annotated[bool, typer.Option(help="stop once caught up with the topic")] = False,
) -> None:
    """Run the Spark Structured Streaming job until SIGINT/SIGTERM, then stop gracefully."""
    from sensorstream.kafka.jars import JavaMissingError
    from sensorstream.stopping import exit_now
    from sensorstream.store.db import StoreLockedError
    from sensorstream.store.migrations import SchemaError
    from sensorstream.stream.runner import run_stream

    settings = settings_or_exit(
        bootstrap_servers=bootstrap_servers, topic=topic, db=db, checkpoint_dir=checkpoint_dir,
        spark_master=spark_master, max_offsets_per_trigger=max_offsets_per_trigger,
    )  # fmt: skip
    _topic_or_exit(settings)
    try:
        run_stream(settings, timeout=timeout, until_idle=until_idle)
    except (StoreLockedError, SchemaError, JavaMissingError, RuntimeError) as exc:
        fail(str(exc))
    exit_now(0)  # stopped on request (or caught up): everything is closed already


# --- produce / consume ---------------------------------------------------------------------------
BootstrapOpt = Annotated[str | None, typer.Option(help="Kafka bootstrap servers")]
TopicOpt = Annotated[str | None, typer.Option(help="topic (default: SENSORSTREAM_TOPIC)")]
AmountHelp = "an exact count (>= 1) or a fraction of the readings (< 1)"


def _stop_on_sigterm():
    """An Event set by SIGTERM, so `run` (or a service manager) stops us with a flush, like Ctrl-C."""
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


@app.command("produce")
def produce_cmd(
    sensors: Annotated[int, typer.Option(help="simulated sensors")] = 10,
    rate: Annotated[
        float | None, typer.Option(help="messages/s; 0 = as fast as possible [default: 100, file: 0]")
    ] = None,
    duration: Annotated[str | None, typer.Option(help="run this long, e.g. '60', '5 minutes'")] = None,
    count: Annotated[int | None, typer.Option(help="readings to send (file: lines, data set: rows)")] = None,
    seed: Annotated[int, typer.Option(help="same seed, same sensors, values and event ids")] = 0,
    late: Annotated[float, typer.Option(help=f"late events (minutes behind): {AmountHelp}")] = 0,
    duplicates: Annotated[float, typer.Option(help=f"second sends of an event_id: {AmountHelp}")] = 0,
    out_of_order: Annotated[float, typer.Option(help=f"held back a few messages: {AmountHelp}")] = 0,
    malformed: Annotated[float, typer.Option(help=f"dead letters of every kind: {AmountHelp}")] = 0,
    file: Annotated[Path | None, typer.Option(help="send each line of this file verbatim")] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="replay a real data set: serf_west_15min, nrel_RSF_II, system_4_module_temperature"
        ),
    ] = None,
    speed: Annotated[float, typer.Option(help="data set time compression (900: 15 min -> 1 s)")] = 900.0,
    start: Annotated[str | None, typer.Option(help="first event time, ISO-8601 (default: now)")] = None,
    natural_faults: Annotated[
        bool, typer.Option(help="the simulator's random spikes and stuck spells (--no-natural-faults: clean)")
    ] = True,
    topic: TopicOpt = None,
    bootstrap_servers: BootstrapOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress line")] = False,
) -> None:
    """Send sensor events: simulated (default), a file's lines verbatim, or a real data set.

    Prints a JSON summary (sent, acked, failed, valid, late, duplicates, malformed by kind) on stdout.
    """
    from sensorstream.config import parse_duration
    from sensorstream.produce import ProducePlan, produce
    from sensorstream.schema import parse_time

    settings = settings_or_exit(topic=topic, bootstrap_servers=bootstrap_servers)
    begin = parse_time(start) if start else None
    if start and begin is None:
        fail(f"--start {start!r} is not ISO-8601 with a zone (e.g. 2026-11-26T20:00:00Z)", 2)
    try:
        plan = ProducePlan(
            sensors=sensors, rate=rate, duration=parse_duration(duration) if duration else None,
            count=count, seed=seed, late=late, duplicates=duplicates, out_of_order=out_of_order,
            malformed=malformed, file=file, dataset=dataset, speed=speed, start=begin,
            natural_faults=natural_faults,
        )  # fmt: skip
    except (ValueError, OSError) as exc:
        fail(str(exc), 2)
        return
    # After the arguments (a usage error needs no broker), before anything is sent.
    _topic_or_exit(settings)
    try:
        summary = produce(settings, plan, progress=not quiet, stop=_stop_on_sigterm())
    except (ValueError, OSError) as exc:
        fail(str(exc), 2)
        return
    print(json.dumps(summary.to_dict()))
    if summary.failed:
        fail(f"{summary.failed} message(s) were not acknowledged by Kafka")


@app.command("consume")
def consume_cmd(
    from_beginning: Annotated[
        bool | None,
        typer.Option(
            "--from-beginning/--latest", help="ignore the group's offsets [default: resume the group]"
        ),
    ] = None,
    max_messages: Annotated[int | None, typer.Option("--max", help="stop after N messages")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines on stdout")] = False,
    group: Annotated[
        str, typer.Option(help="consumer group (offsets are committed)")
    ] = "sensorstream-consume",
    lag: Annotated[bool, typer.Option("--lag", help="print the group's lag per partition and exit")] = False,
    timeout: Annotated[float | None, typer.Option(help="stop after this many idle seconds")] = None,
    topic: TopicOpt = None,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Print the topic's messages (pretty, or JSON lines), or the group's lag with --lag."""
    from confluent_kafka import KafkaException
    from rich.highlighter import JSONHighlighter
    from rich.markup import escape

    from sensorstream.kafka.consume import as_json as message_json
    from sensorstream.kafka.consume import consume, lag_details

    settings = settings_or_exit(topic=topic, bootstrap_servers=bootstrap_servers)
    conf = settings.kafka_client_config
    try:
        if lag:
            rows = lag_details(conf, settings.topic, group)
            if as_json:
                print(json.dumps([{**row.__dict__, "lag": row.lag} for row in rows]))
                return
            table = Table(
                "partition", "low", "high", "committed", "lag", title=f"{group} on {settings.topic}"
            )
            for row in rows:
                table.add_row(*(str(v) for v in (row.partition, row.low, row.high, row.committed, row.lag)))
            table.add_row("total", "", "", "", str(sum(r.lag for r in rows)), style="bold")
            Console().print(table)
            return
        start = "committed" if from_beginning is None else "beginning" if from_beginning else "latest"
        out = Console(highlight=False, soft_wrap=True)
        highlight = JSONHighlighter()
        for msg in consume(
            conf, settings.topic, group=group, start=start, max_messages=max_messages, idle_timeout=timeout
        ):
            doc = message_json(msg)
            if as_json:
                print(json.dumps(doc), flush=True)
                continue
            value = doc["value"] if doc["value"] is not None else f"<not UTF-8: {doc['value_hex']}>"
            out.print(
                f"[dim]p{doc['partition']}@{doc['offset']}[/] [cyan]{escape(str(doc['key']))}[/] ", end=""
            )
            out.print(highlight(value))
    except KafkaException as exc:
        fail(f"Kafka at {settings.bootstrap_servers}: {exc}")
    except KeyboardInterrupt:
        pass


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
    from sensorstream.bench.kafka import run_bench

    settings = settings_or_exit()
    try:
        run_bench(
            settings, records=records, record_size=record_size, bootstrap_servers=bootstrap_servers,
            port=port, report=report,
        )  # fmt: skip
    except RuntimeError as exc:
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
    from sensorstream.bench.stream import run_stream_bench

    settings = settings_or_exit()
    run_stream_bench(
        settings, bootstrap_servers=bootstrap_servers, events=events,
        rates=tuple(float(r) for r in rates.split(",") if r.strip()), duration=duration, sensors=sensors,
        report=report,
    )  # fmt: skip


# --- dashboard -----------------------------------------------------------------------------------
@app.command("dashboard")
def dashboard(
    port: Annotated[int | None, typer.Option(help="port on 127.0.0.1 (default: DASHBOARD_PORT)")] = None,
) -> None:
    """Serve the live dashboard (Streamlit) on 127.0.0.1 until Ctrl-C / SIGTERM."""
    from sensorstream.dashboard.server import DashboardStartError, serve_dashboard

    settings = settings_or_exit(dashboard_port=port)
    try:
        code = serve_dashboard(
            settings, on_ready=lambda url: console.print(f"dashboard at [bold]{url}[/bold] (Ctrl-C stops it)")
        )
    except DashboardStartError as exc:
        fail(str(exc))
        return
    raise typer.Exit(code)


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
    from sensorstream.bench.scale import run_scale_bench

    run_scale_bench(settings_or_exit(), bootstrap_servers=bootstrap_servers, events=events, report=report)


@bench_app.command("soak")
def bench_soak(
    prefills: Annotated[
        str, typer.Option(help="comma-separated readings pre-filled before measuring")
    ] = "0,10000000,50000000",
    e2e_rate: Annotated[float, typer.Option(help="events/s for the latency on a full store")] = 5_000,
    batches: Annotated[int, typer.Option(help="sink batches per pre-fill size")] = 30,
    rate: Annotated[float, typer.Option(help="events/s for the soak")] = 20_000,
    minutes: Annotated[float, typer.Option(help="soak length (0: skip the soak)")] = 20,
    retention: Annotated[str, typer.Option(help="readings retention during the soak")] = "5 minutes",
    bootstrap_servers: Annotated[
        str | None, typer.Option(help="use this broker instead of a throwaway one")
    ] = None,
    report: Annotated[Path, typer.Option(help="JSON report (soak.png is drawn beside it)")] = Path(
        "reports/bench-soak.json"
    ),
) -> None:
    """Cost per batch on a store pre-filled with 0/10M/50M readings, then a long run at steady state."""
    from sensorstream.bench.soak import run_soak_bench

    settings = settings_or_exit()
    run_soak_bench(
        settings, bootstrap_servers=bootstrap_servers,
        prefills=tuple(int(n) for n in prefills.split(",") if n.strip()), e2e_rate=e2e_rate, batches=batches,
        rate=rate, minutes=minutes, retention=settings_or_exit(retention=retention).retention, report=report,
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
    from sensorstream.bench.alerts import run_alerts_bench

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
    from sensorstream.bench.store import run_store_bench

    run_store_bench(settings_or_exit(), rows=rows, seconds=seconds)


# --- the store from the command line -------------------------------------------------------------
def _print_read(read: Callable[[Any], Any]) -> None:
    """Print what ``read(client)`` returns; a refusal or an unreachable store is one sentence."""
    from sensorstream.store.client import QueryError, StoreClient, StoreUnavailableError

    settings = settings_or_exit()
    try:
        with StoreClient(settings) as client:
            print(read(client).to_string(index=False))
    except QueryError as exc:
        fail(f"refused: {exc}")
    except (StoreUnavailableError, RuntimeError) as exc:
        fail(str(exc))


@app.command("query")
def query_cmd(
    name: Annotated[str, typer.Argument(help="a named query (see GET /queries)")],
    params: Annotated[list[str] | None, typer.Argument(help="parameters as key=value")] = None,
) -> None:
    """Run a named read query through the store's read API (or the file when no writer runs)."""
    kwargs = dict(p.split("=", 1) for p in params or [] if "=" in p)
    _print_read(lambda client: client.query(name, **kwargs))


@app.command("sql")
def sql_cmd(text: Annotated[str, typer.Argument(help="one read-only SELECT")]) -> None:
    """Ad-hoc read-only SQL against the store (writes, ATTACH, COPY, file readers are refused)."""
    _print_read(lambda client: client.sql(text))


@app.command("snapshot")
def snapshot_cmd() -> None:
    """Write the read-only snapshot file now (only while no stream holds the store)."""
    from sensorstream.store.db import StoreLockedError, connect
    from sensorstream.store.snapshot import write_snapshot

    settings = settings_or_exit()
    try:
        con = connect(settings.db)
    except StoreLockedError as exc:
        fail(f"{exc} (a running stream writes snapshots itself when SENSORSTREAM_SNAPSHOT_INTERVAL > 0)")
        return
    try:
        result = write_snapshot(con, settings.snapshot_path)
    finally:
        con.close()
    console.print(f"snapshot written to {settings.snapshot_path}: {result}")


# --- faults --------------------------------------------------------------------------------------
@app.command("faults")
def faults_cmd(
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="kill9, broker-restart, malformed-storm, hostile-reader, reader, disk, cluster or all (repeatable)"
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
    from sensorstream.faults.base import FaultOptions
    from sensorstream.faults.runner import SCENARIOS, run_faults

    names = scenario or ["all"]
    unknown = [n for n in names if n != "all" and n not in SCENARIOS]
    if unknown:
        fail(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)} or all", 2)
    settings = settings_or_exit()
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
app.add_typer(cluster_app, name="cluster")
MasterPortOpt = Annotated[int, typer.Option("--port", help="master port")]
WebuiPortOpt = Annotated[int, typer.Option("--webui-port", help="master web UI port")]


def _spark_cluster(
    settings: Settings, port: int, webui_port: int, workers: int = 2, cores: int = 1, memory: str = "1g"
):
    from sensorstream.cluster import SparkCluster

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
    from sensorstream.cluster import ClusterError
    from sensorstream.kafka.jars import JavaMissingError

    settings = settings_or_exit()
    cluster = _spark_cluster(settings, port, webui_port, workers, cores, memory)
    try:
        url = cluster.start()
    except (ClusterError, JavaMissingError) as exc:
        fail(str(exc))
        return
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


# --- run and status --------------------------------------------------------------------------------
@app.command("run")
def run(
    sensors: Annotated[int, typer.Option(help="simulated sensors")] = 20,
    rate: Annotated[float, typer.Option(help="events per second from the simulator")] = 200.0,
    no_dashboard: Annotated[bool, typer.Option("--no-dashboard", help="skip the dashboard")] = False,
) -> None:
    """Broker, simulator, stream job and dashboard together, with embedded defaults; Ctrl-C stops all."""
    from sensorstream.kafka.broker import BrokerError
    from sensorstream.kafka.jars import JavaMissingError
    from sensorstream.pipeline import Pipeline
    from sensorstream.stopping import exit_now

    settings = settings_or_exit()
    pipeline = Pipeline(settings, sensors=sensors, rate=rate, dashboard=not no_dashboard)

    def ready() -> None:
        postgres = (
            f"postgres {settings.pg_host}:{settings.pg_port} (user {settings.pg_user})  "
            if settings.pg_port >= 0
            else ""
        )
        console.print(
            f"[bold green]sensorstream running[/bold green]: dashboard http://{settings.host}:{settings.dashboard_port}  "
            f"read API {settings.api_url}  {postgres}metrics http://{settings.host}:{settings.metrics_port}/metrics  "
            "(Ctrl-C stops everything)"
        )

    try:
        code = pipeline.run(on_ready=ready)
    except (BrokerError, JavaMissingError, RuntimeError) as exc:
        fail(str(exc))
        return
    exit_now(code)  # every part has stopped; the interpreter's teardown would only add to the stop


@app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Pipeline health: broker, lag, last batch, rows per table. Exit code 0 only when healthy."""
    from dataclasses import asdict

    from sensorstream.monitor.status import check, render

    settings = settings_or_exit()
    health = check(settings)
    if as_json:
        print(json.dumps(asdict(health), default=str, indent=2))
    else:
        render(health, Console())
    raise typer.Exit(health.code)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

__all__ = ["Path", "app", "fail", "settings_or_exit"]

"""The runtime's commands: produce, stream, read the store, the dashboard, `run` and `status`.

Registered on the root ``sensorstream`` command by :mod:`sensorstream.cli`, beside every other group.
Commands are thin: they load settings and call a module, imported inside the command so
``sensorstream --help`` stays fast and a missing optional part never breaks the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sensorstream.config import Settings
from sensorstream.terminal import console, fail, say_error, settings_or_exit

app = typer.Typer()  # top-level runtime commands, merged into the root


# --- what the commands below share ------------------------------------------------------------


def _require_topic(settings: Settings) -> None:
    """A missing topic or a broker that does not answer stops a command at once with one sentence
    (a TopicError, said by the root command), not after a consumer or producer waited forever."""
    from sensorstream.kafka.topics import require_topic

    require_topic(settings.kafka_client_config, settings.topic)


# --- stream --------------------------------------------------------------------------------------
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
    from sensorstream.stopping import exit_now
    from sensorstream.writer.main import run_stream

    settings = settings_or_exit(
        bootstrap_servers=bootstrap_servers, topic=topic, db=db, checkpoint_dir=checkpoint_dir,
        spark_master=spark_master, max_offsets_per_trigger=max_offsets_per_trigger,
    )  # fmt: skip
    # The store, then the topic, then Spark: each failure ends in one sentence (the root command's).
    run_stream(settings, timeout=timeout, until_idle=until_idle)
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
    _require_topic(settings)
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
    from rich.highlighter import JSONHighlighter
    from rich.markup import escape

    from sensorstream.kafka.consume import as_json as message_json
    from sensorstream.kafka.consume import consume, lag_details

    settings = settings_or_exit(topic=topic, bootstrap_servers=bootstrap_servers)
    conf = settings.kafka_client_config
    _require_topic(settings)  # or a consumer would wait for a broker or a topic that never comes
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
    except KeyboardInterrupt:
        pass


# --- dashboard -----------------------------------------------------------------------------------
@app.command("dashboard")
def dashboard(
    port: Annotated[int | None, typer.Option(help="port on 127.0.0.1 (default: DASHBOARD_PORT)")] = None,
) -> None:
    """Serve the live dashboard (Streamlit) on 127.0.0.1 until Ctrl-C / SIGTERM."""
    from sensorstream.dashboard.launch import serve_dashboard

    settings = settings_or_exit(dashboard_port=port)
    code = serve_dashboard(
        settings, on_ready=lambda url: console.print(f"dashboard at [bold]{url}[/bold] (Ctrl-C stops it)")
    )
    raise typer.Exit(code)


# --- the store from the command line -------------------------------------------------------------
def _print_read(read: Callable[[Any], Any]) -> None:
    """Print what ``read(client)`` returns; a refusal or an unreachable store is one sentence."""
    from sensorstream.serve.client import StoreClient

    settings = settings_or_exit()
    # A little past the store's own limit per read, so a slow read ends in the API's sentence
    # (QueryTimeout), not in the client giving up first.
    with StoreClient(settings, timeout=settings.read_timeout + 2) as client:
        print(read(client).to_string(index=False))


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
    if not settings.db.exists():  # opening it would create an empty store just to copy it
        fail(
            f"there is no store at {settings.db} to snapshot: check SENSORSTREAM_DB, or run the stream first"
        )
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


# --- run and status --------------------------------------------------------------------------------
@app.command("run")
def run(
    sensors: Annotated[int, typer.Option(help="simulated sensors")] = 20,
    rate: Annotated[float, typer.Option(help="events per second from the simulator")] = 200.0,
    no_dashboard: Annotated[bool, typer.Option("--no-dashboard", help="skip the dashboard")] = False,
) -> None:
    """Broker, simulator, stream job and dashboard together, with embedded defaults; Ctrl-C stops all."""
    from sensorstream.app.pipeline import Pipeline
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

    code = pipeline.run(on_ready=ready)
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
    for problem in health.problems:
        say_error(problem)
    raise typer.Exit(health.code)

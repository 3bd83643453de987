"""``sensorstream kafka``: the local KRaft broker (start, stop, status) and topics on any cluster.

The broker commands run :mod:`sensorstream.kafka.broker` (the systemd unit and the container run
``kafka start --foreground``); the topic commands work on whatever cluster
``SENSORSTREAM_BOOTSTRAP_SERVERS`` names. Registered on the root command by :mod:`sensorstream.cli`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sensorstream.config import Settings
from sensorstream.terminal import console, fail, settings_or_exit

app = typer.Typer(
    help="Kafka: the local KRaft broker (start, stop, status) and topics on any cluster.",
    no_args_is_help=True,
)
topic_app = typer.Typer(help="Topics on the cluster (SENSORSTREAM_BOOTSTRAP_SERVERS).", no_args_is_help=True)
app.add_typer(topic_app, name="topic")


# --- the local broker ----------------------------------------------------------------------------
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


@app.command("start")
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
    from sensorstream.kafka.topics import create_topic
    from sensorstream.stopping import StopSignals

    settings = settings_or_exit()
    kafka = _local_kafka(settings, brokers, port)
    # In the foreground the handlers go in first: a stop during start-up still stops the nodes.
    signals = StopSignals("kafka").install() if foreground else None
    bootstrap = kafka.start(tied=foreground)
    created = create_topic(
        {**settings.kafka_client_config, "bootstrap.servers": bootstrap},
        settings.topic,
        settings.partitions,
        max(settings.replication_factor, min(3, brokers)),
    )
    console.print(
        f"kafka up at [bold]{bootstrap}[/bold]; topic {settings.topic} "
        f"({'created' if created else 'exists'}, {settings.partitions} partitions); logs in {kafka.data_dir}"
    )
    if signals is not None:
        code = kafka.watch(signals.requested)
        kafka.stop()
        raise typer.Exit(code)


@app.command("stop")
def kafka_stop(brokers: BrokersOpt = 1, port: PortOpt = None) -> None:
    """Stop the local broker(s) cleanly (SIGTERM, wait)."""
    settings = settings_or_exit()
    stopped = _local_kafka(settings, brokers, port).stop()
    console.print(f"stopped {len(stopped)} kafka node(s)" if stopped else "kafka was not running")


@app.command("status")
def kafka_status(brokers: BrokersOpt = 1, port: PortOpt = None) -> None:
    """Is the broker up and answering? Exit code 1 when not."""
    settings = settings_or_exit()
    status = _local_kafka(settings, brokers, port).status()
    print(json.dumps(status, indent=2))
    if not status["answering"]:
        from sensorstream.kafka.topics import unreachable

        why = (
            "no local node running"
            if not any(n["pid"] for n in status["nodes"])
            else "no metadata within 3 s"
        )
        fail(unreachable(status["bootstrap_servers"], why))


# --- topics --------------------------------------------------------------------------------------


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
    from sensorstream.kafka.topics import create

    settings = settings_or_exit(partitions=partitions, replication_factor=replication_factor)
    topic = name or settings.topic
    try:
        retention_ms = round(parse_duration(retention) * 1000) if retention else None
    except ValueError as exc:
        fail(f"--retention {retention!r}: {exc}", 2)
        return
    created = create(settings.kafka_client_config, topic, settings.partitions, settings.replication_factor,
                     retention_ms)  # fmt: skip
    state = "created" if created else "already exists (left as it is)"
    console.print(
        f"topic {topic} {state}: {settings.partitions} partitions, replication {settings.replication_factor}"
    )


@topic_app.command("list")
def topic_list() -> None:
    """Every topic with its partitions and replication factor."""
    from sensorstream.kafka.topics import list_topics

    settings = settings_or_exit()
    topics = list_topics(settings.kafka_client_config)
    table = Table("topic", "partitions", "replication", title=f"topics on {settings.bootstrap_servers}")
    for t in topics:
        table.add_row(t.name, str(t.partitions), str(t.replication_factor))
    Console().print(table)


@topic_app.command("describe")
def topic_describe(
    name: Annotated[str | None, typer.Argument(help="default: SENSORSTREAM_TOPIC")] = None,
) -> None:
    """Partitions (leader, in-sync replicas), replication and retention of a topic."""
    from sensorstream.kafka.topics import describe_topic

    settings = settings_or_exit()
    info = describe_topic(settings.kafka_client_config, name or settings.topic)
    out = Console()
    out.print(f"topic {info.name}: {info.partitions} partitions, replication {info.replication_factor}")
    for key, value in info.configs.items():
        out.print(f"  {key} = {value}")
    table = Table("partition", "leader", "in-sync replicas")
    for part in sorted(info.leaders):
        table.add_row(str(part), str(info.leaders[part]), f"{info.in_sync[part]}/{info.replication_factor}")
    out.print(table)

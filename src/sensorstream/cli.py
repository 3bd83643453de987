"""The one entry point, ``sensorstream``. Commands are thin: they load settings and call a module.

Each command group lives in its own section below; modules are imported inside the commands so
``sensorstream --help`` stays fast and a missing optional part never breaks the others.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

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
def kafka_start(brokers: BrokersOpt = 1, port: PortOpt = None) -> None:
    """Start the local broker(s) in the background and create the topic."""
    from sensorstream.kafka.broker import BrokerError, create_topic
    from sensorstream.kafka.jars import JavaMissingError

    settings = settings_or_exit()
    kafka = _local_kafka(settings, brokers, port)
    try:
        bootstrap = kafka.start()
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
) -> None:
    """Run the Spark Structured Streaming job until SIGINT/SIGTERM, then stop gracefully."""
    from sensorstream.kafka.jars import JavaMissingError
    from sensorstream.store.db import StoreLockedError
    from sensorstream.store.migrations import SchemaError
    from sensorstream.stream.runner import run_stream

    settings = settings_or_exit(
        bootstrap_servers=bootstrap_servers, topic=topic, db=db, checkpoint_dir=checkpoint_dir,
        spark_master=spark_master, max_offsets_per_trigger=max_offsets_per_trigger,
    )  # fmt: skip
    try:
        run_stream(settings, timeout=timeout)
    except (StoreLockedError, SchemaError, JavaMissingError) as exc:
        fail(str(exc))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

__all__ = ["Path", "app", "fail", "settings_or_exit"]

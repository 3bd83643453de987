"""The one entry point, ``sensorstream``: the runtime's commands and the tools' commands.

Each command group has one ``commands`` module: :mod:`sensorstream.app.commands` (produce, stream,
consume, query, sql, snapshot, dashboard, run, status), :mod:`sensorstream.kafka.commands` (kafka
start/stop/status, kafka topic ...), and in the tools wing ``tools.bench.commands`` (bench ...),
``tools.faults.commands`` (faults) and ``tools.local.commands`` (cluster ...). This is the one
module of the runtime that imports the tools wing: it only puts their commands on the menu.
"""

from __future__ import annotations

import sys

import typer

from sensorstream.app import commands as runtime_commands
from sensorstream.kafka import commands as kafka_commands
from sensorstream.terminal import SentenceGroup
from sensorstream.tools.bench import commands as bench_commands
from sensorstream.tools.faults import commands as faults_commands
from sensorstream.tools.local import commands as cluster_commands

app = typer.Typer(
    help="Real-time sensor analytics: Kafka -> Spark -> DuckDB -> dashboard.",
    no_args_is_help=True,
    cls=SentenceGroup,  # a failure of the API, the broker or the store ends in one sentence
)
app.add_typer(kafka_commands.app, name="kafka")
app.add_typer(runtime_commands.app)
app.add_typer(bench_commands.app, name="bench")
app.add_typer(cluster_commands.app, name="cluster")
app.add_typer(faults_commands.app)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

__all__ = ["app", "main"]

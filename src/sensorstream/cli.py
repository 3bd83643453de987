"""The one entry point, ``sensorstream``: the runtime's commands and the tools' commands.

Each group registers its own: :mod:`sensorstream.app.commands` (produce, stream, consume, query,
sql, snapshot, dashboard, run, status), :mod:`sensorstream.kafka.commands` (kafka start/stop/status,
kafka topic ...) and :mod:`sensorstream.tools.commands` (bench ..., faults, cluster ...). This is
the one module of the runtime that imports the tools wing: it only puts their commands on the menu.
"""

from __future__ import annotations

import sys

import typer

from sensorstream.app import commands as runtime_commands
from sensorstream.kafka import commands as kafka_commands
from sensorstream.terminal import SentenceGroup
from sensorstream.tools import commands as tool_commands

app = typer.Typer(
    help="Real-time sensor analytics: Kafka -> Spark -> DuckDB -> dashboard.",
    no_args_is_help=True,
    cls=SentenceGroup,  # a failure of the API, the broker or the store ends in one sentence
)
app.add_typer(kafka_commands.app, name="kafka")
runtime_commands.register(app)
tool_commands.register(app)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

__all__ = ["app", "main"]

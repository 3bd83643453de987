"""The one entry point, ``sensorstream``: the runtime's commands and the tools' commands.

Each wing registers its own: :mod:`sensorstream.app.commands` (produce, stream, consume, query,
sql, snapshot, dashboard, run, status, kafka topic ...) and :mod:`sensorstream.tools.commands`
(kafka start/stop/status, bench ..., faults, cluster ...).
"""

from __future__ import annotations

import sys

import typer

from sensorstream.app import commands as runtime_commands
from sensorstream.terminal import SentenceGroup
from sensorstream.tools import commands as tool_commands

app = typer.Typer(
    help="Real-time sensor analytics: Kafka -> Spark -> DuckDB -> dashboard.",
    no_args_is_help=True,
    cls=SentenceGroup,  # a failure of the API, the broker or the store ends in one sentence
)
kafka_app = typer.Typer(
    help="Kafka: the local KRaft broker (start, stop, status) and topics on any cluster.",
    no_args_is_help=True,
)
app.add_typer(kafka_app, name="kafka")
runtime_commands.register(app, kafka_app)
tool_commands.register(app, kafka_app)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

__all__ = ["app", "main"]

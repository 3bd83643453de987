"""The one entry point, ``sensorstream``: the runtime's commands and the tools' commands.

Each command group has one ``commands`` module: :mod:`sensorstream.app.commands` (produce, stream,
consume, query, sql, snapshot, dashboard, run, status) and :mod:`sensorstream.kafka.commands` (kafka
start/stop/status, kafka topic ...) here; the tools wing's ``tools.bench.commands`` (bench ...),
``tools.faults.commands`` (faults) and ``tools.local.commands`` (cluster ...) put themselves on the
menu through the ``sensorstream.commands`` entry point (pyproject.toml), so the runtime imports
nothing of the tools wing and runs without it.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import typer

from sensorstream.app import commands as runtime_commands
from sensorstream.kafka import commands as kafka_commands
from sensorstream.terminal import SentenceGroup

app = typer.Typer(
    help="Real-time sensor analytics: Kafka -> Spark -> DuckDB -> dashboard.",
    no_args_is_help=True,
    cls=SentenceGroup,  # a failure of the API, the broker or the store ends in one sentence
)
app.add_typer(kafka_commands.app, name="kafka")
app.add_typer(runtime_commands.app)

# Each entry point is a ``register(root)`` function; by name, so the menu's order is stable.
TOOL_COMMANDS = "sensorstream.commands"
for _tool in sorted(entry_points(group=TOOL_COMMANDS), key=lambda ep: ep.name):
    _tool.load()(app)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

__all__ = ["app", "main"]

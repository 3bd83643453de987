"""What every command shares: settings or one sentence naming the bad one, and how to fail.

Every command group (each its own ``commands`` module, put on one menu by ``sensorstream.cli``) uses
these, so a wrong setting reads the same whichever command met it. :class:`SentenceGroup` is the
root command's class: when what a command depends on (the read API, the broker, the store, the
disk) is down, refuses or is busy, the command ends in one sentence on stderr, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from sensorstream.config import Settings, SettingsError, load_settings
from sensorstream.logs import setup_logging

console = Console(stderr=True)

USAGE = 2  # a bad setting or command-line usage (README: exit codes)
FAILURE = 1  # a real failure


def settings_or_exit(**overrides) -> Settings:
    """Settings with CLI overrides; a bad value ends the program with a message naming it."""
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        fail(str(exc), USAGE)
    setup_logging(settings.log_level, settings.log_format)
    return settings


def say_error(message: str) -> None:
    """``error: <message>`` on stderr, on one line: a log or a pipe keeps a sentence whole."""
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)


def fail(message: str, code: int = FAILURE) -> NoReturn:
    say_error(message)
    raise typer.Exit(code)


# Errors of libraries the commands use, with what to put before their message. Looked up in
# sys.modules rather than imported: an exception of one of them means its module is loaded, and a
# command that never touched Kafka or DuckDB should not import them just to fail.
_FOREIGN = (
    ("confluent_kafka", "KafkaException", "Kafka: "),
    ("duckdb", "Error", "DuckDB: "),
    ("httpx", "HTTPError", "HTTP: "),
)


def sentence_for(exc: BaseException) -> tuple[str, int] | None:
    """The sentence and exit code for a failure the user can act on; ``None`` for a bug.

    Every error class sensorstream defines (``StoreUnavailableError``, ``StoreLockedError``,
    ``TopicError``, ``QueryError``, ``DashboardStartError`` ...) is raised with one sentence naming
    what is wrong and what to do, so its message is shown as it is. A read the store refused says
    so. An ``OSError`` (disk full, permission denied) names the file.
    """
    kind = type(exc)
    if kind.__module__.startswith("sensorstream.") and isinstance(exc, RuntimeError | ValueError):
        from sensorstream.reads.errors import QueryError, ReadBusy, first_line

        if isinstance(exc, QueryError):  # the API's contract: one sentence (DuckDB may add a diagram)
            return f"{'' if isinstance(exc, ReadBusy) else 'refused: '}{first_line(exc)}", FAILURE
        # Whole: a few end with the log lines that say why (the Spark JVM's, Maven's).
        return str(exc).strip() or kind.__name__, USAGE if isinstance(exc, SettingsError) else FAILURE
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return (f"{exc.strerror}{where}" if exc.strerror else str(exc) or kind.__name__), FAILURE
    for module, name, prefix in _FOREIGN:
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, getattr(loaded, name)):
            from sensorstream.reads.errors import first_line

            # A KafkaException's message is the repr of its KafkaError; the error's own text reads better.
            error = exc.args[0] if exc.args else None
            text = error.str() if callable(getattr(error, "str", None)) else first_line(exc)
            return f"{prefix}{text}", FAILURE
    return None


class SentenceGroup(TyperGroup):
    """The root ``sensorstream`` command: every subcommand runs inside its ``invoke``, so this is the
    one place a failure becomes a sentence; a command needs no try/except of its own for it."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            explained = sentence_for(exc)
            if explained is None:
                raise  # a bug: its traceback is what a report needs
            fail(*explained)

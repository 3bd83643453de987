"""What every command shares: settings or one sentence naming the bad one, and how to fail.

Both wings of commands (the runtime's in ``app.commands``, the tools' in ``tools.commands``) use
these, so a wrong setting reads the same whichever command met it.
"""

from __future__ import annotations

import typer
from rich.console import Console

from sensorstream.config import Settings, SettingsError, load_settings
from sensorstream.logs import setup_logging

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

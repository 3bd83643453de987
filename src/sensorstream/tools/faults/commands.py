"""``sensorstream faults``: break the pipeline on purpose and check what the store holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sensorstream.terminal import console, fail, settings_or_exit

app = typer.Typer()  # one top-level command, merged into the root


def register(root: typer.Typer) -> None:
    """Put ``faults`` on the ``sensorstream`` menu (the ``sensorstream.commands`` entry point)."""
    root.add_typer(app)


# --- faults --------------------------------------------------------------------------------------
@app.command("faults")
def faults_cmd(
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="kill9, broker-restart, malformed-storm, hostile-reader, hostile-pg, reader, disk, cluster or all (repeatable)"
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
    from sensorstream.stopping import sigterm_unwinds
    from sensorstream.tools.faults.scenario import FaultOptions
    from sensorstream.tools.faults.suite import SCENARIOS, run_faults

    sigterm_unwinds()  # stopped by SIGTERM (timeout, a CI runner): its brokers and jobs stop too

    names = scenario or ["all"]
    unknown = [n for n in names if n != "all" and n not in SCENARIOS]
    if unknown:
        fail(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)} or all", 2)
    settings = settings_or_exit()
    if bootstrap_servers:  # before any scenario starts its processes
        from sensorstream.kafka.topics import require_broker

        require_broker({**settings.kafka_client_config, "bootstrap.servers": bootstrap_servers})
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

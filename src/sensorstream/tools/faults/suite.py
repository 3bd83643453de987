"""Run the fault scenarios one after another, print a table, write ``reports/faults.json``.

Scenarios run one at a time (two cores: one Spark job at a time). ``reader`` is not a run of its
own: the reader process hammers the read API during every scenario that runs the job, and its row
sums those. Asked for alone, it runs ``kill9`` (the case where the API really goes away).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sensorstream.tools.faults import (
    broker_restart,
    cluster_run,
    disk,
    hostile_pg,
    hostile_reader,
    kill9,
    malformed_storm,
)
from sensorstream.tools.faults.scenario import FaultOptions, ScenarioResult
from sensorstream.tools.reader import ReaderStats

Scenario = Callable[[FaultOptions], ScenarioResult]
SCENARIOS: dict[str, list[Scenario]] = {
    "kill9": [kill9.run],
    "broker-restart": [broker_restart.run, lambda o: broker_restart.run(o, nodes=3)],
    "malformed-storm": [malformed_storm.run],
    "hostile-reader": [hostile_reader.run],
    "hostile-pg": [hostile_pg.run],
    "reader": [],
    "disk": [disk.run],
    "cluster": [cluster_run.run],
}
ALL = (
    "kill9",
    "broker-restart",
    "malformed-storm",
    "hostile-reader",
    "hostile-pg",
    "disk",
    "cluster",
    "reader",
)


def run_faults(
    opts: FaultOptions, names: list[str], report: Path = Path("reports/faults.json"),
    console: Console | None = None,
) -> list[ScenarioResult]:  # fmt: skip
    console = console or Console(stderr=True)
    wanted = list(ALL) if not names or "all" in names else names
    if wanted == ["reader"]:
        wanted = ["kill9", "reader"]
    results: list[ScenarioResult] = []
    for name in wanted:
        for scenario in SCENARIOS[name]:
            console.print(f"[bold]scenario {name}[/bold] ({'quick' if opts.quick else 'full'}) ...")
            result = scenario(opts)
            results.append(result)
            console.print(f"  {result.name}: {_status(result)} in {result.seconds:.0f}s")
            if result.error:
                console.print(f"  [red]{result.error[:2000]}[/red]")
    if "reader" in wanted:
        results.append(reader_summary(results))
    write_report(results, opts, report)
    # Wide even when stderr is not a terminal (make, CI logs): rich would fold it to 80 columns.
    wide = console if console.is_terminal else Console(stderr=True, width=160)
    wide.print(table(results))
    for r in results:
        for name, ok in r.checks.items():
            if not ok:
                wide.print(f"[red]{r.name}: check failed: {name}[/red]")
    console.print(f"report: {report}")
    return results


def reader_summary(results: list[ScenarioResult]) -> ScenarioResult:
    """One row for the reader over every scenario it ran in."""
    stats = [r.reader for r in results if r.reader is not None]
    total = ReaderStats(
        requests=sum(s.requests for s in stats), ok=sum(s.ok for s in stats), errors=sum(s.errors for s in stats),
        refused_while_down=sum(s.refused_while_down for s in stats),
        failed_while_down=sum(s.failed_while_down for s in stats),
        count_decreases=sum(s.count_decreases for s in stats), busy=sum(s.busy for s in stats),
        p50_ms=max((s.p50_ms for s in stats if s.p50_ms is not None), default=None),
        p99_ms=max((s.p99_ms for s in stats if s.p99_ms is not None), default=None),
        max_ms=max((s.max_ms for s in stats if s.max_ms is not None), default=None),
    )  # fmt: skip
    result = ScenarioResult(
        "reader", faults=f"read API hammered during {len(stats)} scenario(s)", reader=total
    )
    result.numbers["during"] = [r.name for r in results if r.reader is not None]
    result.checks["ran during at least one scenario"] = bool(stats)
    return result.finish()


def _status(result: ScenarioResult) -> str:
    if result.skipped:
        return f"[yellow]skipped[/yellow] ({result.skipped})"
    return "[green]passed[/green]" if result.passed else "[red]FAILED[/red]"


def table(results: list[ScenarioResult]) -> Table:
    t = Table(title="fault injection: every count in lost .. dead must be 0", show_lines=False)
    for col in ("scenario", "events", "lost", "dup", "wrong win", "wrong late", "dead lost/extra",
                "reader req", "reader err", "refused (down)", "p99 ms", "result"):  # fmt: skip
        t.add_column(col, overflow="fold", no_wrap=col in ("scenario", "events", "result"))
    for r in results:
        v, rd = r.verdict, r.reader
        t.add_row(
            r.name, f"{r.events:,}" if r.events else "",
            *(_n(getattr(v, f)) if v else "-" for f in ("lost", "duplicated", "wrong_windows", "wrong_late")),
            f"{_n(v.dead_lost)}/{_n(v.dead_extra)}" if v else "-",
            f"{rd.requests:,}" if rd else "-", _n(rd.errors + rd.count_decreases) if rd else "-",
            f"{rd.refused_while_down:,}" if rd else "-", f"{rd.p99_ms}" if rd and rd.p99_ms is not None else "-",
            _status(r),
        )  # fmt: skip
    return t


def _n(value: int) -> str:
    return f"[red]{value}[/red]" if value else "0"


def write_report(results: list[ScenarioResult], opts: FaultOptions, path: Path) -> dict[str, Any]:
    doc = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "quick": opts.quick, "events_override": opts.events, "seed": opts.seed,
        "passed": all(r.passed for r in results),
        "scenarios": [r.to_dict() for r in results],
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str))
    return doc

"""`sensorstream status`: pipeline health on one screen, and an exit code scripts can use.

Exit codes: 0 healthy, 2 broker down, 3 stream stalled (records wait in Kafka but no batch for
STALE_AFTER), 4 store unreachable (no read API answering and the file cannot be read).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sensorstream.config import Settings

HEALTHY, BROKER_DOWN, STALLED, STORE_DOWN = 0, 2, 3, 4


@dataclass
class Health:
    code: int = HEALTHY
    problems: list[str] = field(default_factory=list)
    broker: dict[str, Any] = field(default_factory=dict)
    last_batch: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)
    lag: dict[int, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, code: int, problem: str) -> None:
        self.problems.append(problem)
        if self.code == HEALTHY:
            self.code = code


def check(settings: Settings) -> Health:
    from confluent_kafka import KafkaException

    from sensorstream.monitor.lag import TopicLag
    from sensorstream.store.client import StoreClient, StoreUnavailableError

    health = Health()
    lag_probe = None
    try:
        lag_probe = TopicLag(settings)
        highs = lag_probe.high_watermarks(timeout=3)
        health.broker = {
            "bootstrap_servers": settings.bootstrap_servers,
            "up": True,
            "partitions": len(highs),
        }
    except KafkaException as exc:
        health.broker = {"bootstrap_servers": settings.bootstrap_servers, "up": False}
        health.fail(BROKER_DOWN, f"Kafka at {settings.bootstrap_servers} does not answer: {exc}")
        highs = {}
    try:
        with StoreClient(settings, timeout=3) as client:
            batch = client.query("last_batch")
            health.last_batch = _first_row(batch)
            counts = client.query("table_counts")
            health.tables = (
                {str(r["table_name"]): int(r["rows"]) for r in counts.to_dict("records")}
                if len(counts)
                else {}
            )
            health.errors = client.query("dead_letter_reasons", limit=5).to_dict("records")
            offsets = client.sql("SELECT end_offsets FROM sink_commits ORDER BY committed_at DESC LIMIT 1")
    except StoreUnavailableError as exc:
        health.fail(STORE_DOWN, str(exc))
        offsets = None
    if highs and lag_probe is not None:
        done = (
            json.loads(offsets.iloc[0, 0])
            if offsets is not None and len(offsets) and offsets.iloc[0, 0]
            else {}
        )
        health.lag = lag_probe.lag(done)
    if lag_probe is not None:
        lag_probe.close()
    waiting = sum(health.lag.values())
    age = health.last_batch.get("age_seconds")
    if waiting and (age is None or age > settings.stale_after):
        since = "no batch yet" if age is None else f"last batch {age:.0f}s ago"
        health.fail(STALLED, f"{waiting} records wait in Kafka and the stream is not taking them ({since})")
    return health


def _first_row(df) -> dict[str, Any]:
    return {} if df is None or not len(df) else {k: _plain(v) for k, v in df.iloc[0].to_dict().items()}


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


def render(health: Health, console) -> None:
    from rich.table import Table

    state = {HEALTHY: "[green]healthy[/green]", BROKER_DOWN: "[red]broker down[/red]",
             STALLED: "[red]stream stalled[/red]", STORE_DOWN: "[red]store unreachable[/red]"}[health.code]  # fmt: skip
    console.print(f"sensorstream: {state}  ({time.strftime('%H:%M:%S')})")
    for problem in health.problems:
        console.print(f"  [yellow]![/yellow] {problem}")
    table = Table("what", "value", show_header=False)
    table.add_row("broker", json.dumps(health.broker))
    table.add_row("lag per partition", json.dumps(health.lag))
    for key in ("batch_id", "age_seconds", "input_rows", "new_readings", "late_rows", "dead_letters",
                "batch_duration_ms", "latency_p50_ms", "latency_p95_ms", "watermark"):  # fmt: skip
        if key in health.last_batch:
            table.add_row(f"last batch {key}", str(health.last_batch[key]))
    for name, rows in health.tables.items():
        table.add_row(f"rows in {name}", f"{rows:,}")
    for err in health.errors:
        table.add_row("dead-letter reason", json.dumps({k: _plain(v) for k, v in err.items()}, default=str))
    console.print(table)

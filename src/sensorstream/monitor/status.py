"""`sensorstream status`: pipeline health on one screen, and an exit code scripts can use.

Exit codes: 0 healthy, 2 broker down, 3 stream stalled (records wait in Kafka but no batch for
STALE_AFTER), 4 store unreachable (no read API answering and the file cannot be read). The level
comes from :func:`sensorstream.monitor.health.classify`, as on the dashboard.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sensorstream.config import Settings
from sensorstream.monitor.health import EXIT_CODES, Level, classify, is_stalled

HEALTHY = 0
# What the first line says for the levels a script must act on; every other level is healthy.
_TROUBLE = {
    Level.BROKER_DOWN: "broker down",
    Level.STALLED: "stream stalled",
    Level.DOWN: "store unreachable",
}


@dataclass
class Health:
    code: int = HEALTHY
    level: Level = Level.OK
    problems: list[str] = field(default_factory=list)
    broker: dict[str, Any] = field(default_factory=dict)
    last_batch: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)
    lag: dict[int, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.problems.append(problem)


def check(settings: Settings) -> Health:
    from confluent_kafka import KafkaException

    from sensorstream.kafka.topics import all_refuse, unreachable
    from sensorstream.monitor.lag import LAST_END_OFFSETS_SQL, TopicLag
    from sensorstream.serve.client import QueryError, StoreClient, StoreUnavailableError

    health = Health()
    lag_probe = None
    store: str | None = None
    highs: dict[int, int] = {}
    # Nothing listening is known at once; anything else gets the consumer's 3 s to answer.
    down = "connection refused" if all_refuse(settings.bootstrap_servers) else None
    if down is None:
        try:
            lag_probe = TopicLag(settings)
            highs = lag_probe.high_watermarks(timeout=3)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            down = error.str() if error is not None else str(exc)
    health.broker = {"bootstrap_servers": settings.bootstrap_servers, "up": down is None}
    if down is None:
        health.broker["partitions"] = len(highs)
    else:
        health.fail(unreachable(settings.bootstrap_servers, down))
    try:
        with StoreClient(settings, timeout=3) as client:
            batch = client.query("last_batch")
            store = client.mode
            health.last_batch = _first_row(batch)
            counts = client.query("table_counts")
            health.tables = (
                {str(r["table_name"]): int(r["rows"]) for r in counts.to_dict("records")}
                if len(counts)
                else {}
            )
            health.errors = client.query("dead_letter_reasons", limit=5).to_dict("records")
            offsets = client.sql(LAST_END_OFFSETS_SQL)
    except (StoreUnavailableError, QueryError) as exc:
        # Down, refusing (a Host it does not allow) or busy: the store is unreachable for status when
        # its first read fails (``store`` stays None); a later one failing is listed all the same.
        health.fail(f"refused: {exc}" if isinstance(exc, QueryError) else str(exc))
        offsets = None
    if highs and lag_probe is not None:
        health.lag = lag_probe.lag(offsets.iloc[0, 0] if offsets is not None and len(offsets) else None)
    if lag_probe is not None:
        lag_probe.close()
    waiting = sum(health.lag.values())
    age = health.last_batch.get("age_seconds")
    if is_stalled(waiting, age, settings.stale_after):
        since = "no batch yet" if age is None else f"last batch {age:.0f}s ago"
        health.fail(
            f"{waiting} records wait in Kafka and the stream is not taking them ({since}): check that "
            "`sensorstream stream` runs, and its log"
        )
    health.level = classify(
        store=store, age=age, stale_after=settings.stale_after, waiting=waiting,
        broker_up=health.broker.get("up"),
    )  # fmt: skip
    health.code = EXIT_CODES.get(health.level, HEALTHY)
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
    """The report (``health.problems`` are not in it: ``status`` says each on stderr, one sentence each)."""
    from rich.table import Table

    trouble = _TROUBLE.get(health.level)
    state = f"[red]{trouble}[/red]" if trouble else "[green]healthy[/green]"
    console.print(f"sensorstream: {state}  ({time.strftime('%H:%M:%S')})")
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

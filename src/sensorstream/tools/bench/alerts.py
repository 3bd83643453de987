"""``sensorstream bench alerts``: do the anomaly rules stay quiet, and do they catch real faults?

Two runs of the simulator through the real sink (``BatchMerger`` on a real DuckDB file, one
batch per second of event time, as the job would deliver them), with the rules and settings a
user runs:

* **clean**: no spikes, no stuck spells, nothing injected. Every anomaly is a false alarm.
* **faults**: the same signals, plus one known fault per sensor (spike, drift or stuck in turn),
  spread over the run after the warm-up. A fault is *caught* when the sensor gets an anomaly
  within one window of the fault's first reading; an anomaly of a sensor outside its fault
  (from its start to one window after its end) is a false alarm.

No Kafka and no Spark: what is measured is the rules, not the transport, so ten minutes of a
20-sensor plant take seconds and the same figures come out on every machine.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sensorstream.config import Settings
from sensorstream.produce.simulator import FAULT_KINDS, Fault, Injected, Simulator
from sensorstream.sink.batch import build_batch, window_start
from sensorstream.sink.merge import BatchMerger
from sensorstream.store.db import connect


@dataclass
class AlertRun:
    """What one run of the simulator through the rules gave."""

    mode: str  # "clean" or "faults"
    sensors: int
    rate: float
    minutes: float
    readings: int = 0
    anomalies: dict[str, int] = field(default_factory=dict)  # per rule
    false_alarms: int = 0
    false_alarm_sensors: int = 0
    faults: dict[str, int] = field(default_factory=dict)  # injected, per kind
    caught: dict[str, int] = field(default_factory=dict)  # caught within one window, per kind
    slowest_catch_s: dict[str, float] = field(default_factory=dict)  # per kind
    missed: list[str] = field(default_factory=list)

    @property
    def all_caught(self) -> bool:
        return self.caught == self.faults


def plan_faults(sensors: int, minutes: float, warm_up_s: float, window_s: float) -> tuple[Fault, ...]:
    """One fault per sensor, the kinds in turn, starting between the warm-up and the last windows."""
    first, last = warm_up_s, minutes * 60 - 2 * window_s - 60
    if last <= first:
        raise ValueError(f"{minutes} minutes leave no room for faults after a {warm_up_s:.0f} s warm-up")
    step = (last - first) / max(1, sensors - 1)
    return tuple(
        Fault(sensor=i, kind=FAULT_KINDS[i % len(FAULT_KINDS)], at=first + i * step, seconds=60.0)
        for i in range(sensors)
    )


def run_rules(
    settings: Settings,
    *,
    sensors: int,
    rate: float,
    minutes: float,
    faults: bool,
    seed: int = 0,
    batch_seconds: float | None = None,
) -> AlertRun:
    """Simulate ``minutes`` at ``rate`` readings/s, merge them in batches of ``batch_seconds`` of
    event time (default: the trigger interval, as the job would), and score the anomalies."""
    batch_s = batch_seconds or settings.trigger
    interval = 1.0 / rate
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes + 5)
    # The baseline needs ANOMALY_WARMUP readings of each sensor, then some to settle.
    warm_up_s = 3 * settings.anomaly_warmup * sensors * interval + 30
    plan = plan_faults(sensors, minutes, warm_up_s, settings.window) if faults else ()
    sim = Simulator(sensors, start, interval, seed, settings.valid_ranges, natural=False, faults=plan)
    slide = settings.window_step
    run = AlertRun("faults" if faults else "clean", sensors, rate, minutes)
    with tempfile.TemporaryDirectory(prefix="sensorstream-alerts-") as tmp:
        s = settings.model_copy(update={"db": Path(tmp) / "alerts.duckdb"})
        con = connect(s.db)
        try:
            merger = BatchMerger(con, s, query_name="bench-alerts")
            rows: list[dict[str, Any]] = []
            second = 0
            for offset, reading in enumerate(sim.readings(round(minutes * 60 * rate))):
                due = int((reading.event_time - start).total_seconds() // batch_s)
                if due > second and rows:
                    merger.merge(second, build_batch(rows))
                    rows, second = [], due
                rows.append({**reading.event, "event_time": reading.event_time, "kafka_topic": "bench",
                             "kafka_partition": 0, "kafka_offset": offset, "kafka_timestamp": reading.event_time,
                             "window_start": window_start(reading.event_time, slide)})  # fmt: skip
                run.readings += 1
            if rows:
                merger.merge(second, build_batch(rows))
            found = con.execute(
                "SELECT sensor_id, rule, event_time FROM anomalies ORDER BY event_time"
            ).fetchall()
        finally:
            con.close()
    _score(run, found, sim.injected, timedelta(seconds=settings.window))
    return run


def _score(
    run: AlertRun, found: list[tuple[str, str, datetime]], injected: list[Injected], window: timedelta
) -> None:
    run.anomalies = dict(Counter(rule for _, rule, _ in found))
    run.faults = dict(Counter(f.kind for f in injected))
    run.caught = {kind: 0 for kind in run.faults}
    by_sensor: dict[str, list[datetime]] = {}
    for sensor_id, _, at in found:
        by_sensor.setdefault(sensor_id, []).append(at)
    for fault in injected:
        hits = [t for t in by_sensor.get(fault.sensor_id, []) if fault.start <= t <= fault.start + window]
        if hits:
            run.caught[fault.kind] += 1
            delay = (min(hits) - fault.start).total_seconds()
            run.slowest_catch_s[fault.kind] = max(run.slowest_catch_s.get(fault.kind, 0.0), delay)
        else:
            run.missed.append(f"{fault.kind} on {fault.sensor_id} at {fault.start:%H:%M:%S}")
    spans = {(f.sensor_id, f.start, f.end + window) for f in injected}
    false = [
        (sensor_id, at)
        for sensor_id, _, at in found
        if not any(s == sensor_id and lo <= at <= hi for s, lo, hi in spans)
    ]
    run.false_alarms = len(false)
    run.false_alarm_sensors = len({s for s, _ in false})


def run_alerts_bench(
    settings: Settings, *, sensors: int, rate: float, minutes: float, seed: int, report: Path
) -> list[AlertRun]:
    console = Console()
    runs = [
        run_rules(settings, sensors=sensors, rate=rate, minutes=minutes, faults=faults, seed=seed)
        for faults in (False, True)
    ]
    table = Table(title=f"anomaly rules: {sensors} sensors, {rate:g} readings/s, {minutes:g} minutes each")
    for col in ("run", "readings", "anomalies by rule", "false alarms", "faults caught", "slowest catch"):
        table.add_column(col)
    for r in runs:
        caught = ", ".join(f"{k} {r.caught.get(k, 0)}/{n}" for k, n in r.faults.items()) or "-"
        slowest = ", ".join(f"{k} {v:.1f} s" for k, v in r.slowest_catch_s.items()) or "-"
        rules = ", ".join(f"{k} {v}" for k, v in sorted(r.anomalies.items())) or "none"
        table.add_row(r.mode, f"{r.readings:,}", rules, f"{r.false_alarms} ({r.false_alarm_sensors} sensors)",
                      caught, slowest)  # fmt: skip
    console.print(table)
    for r in runs:
        for miss in r.missed:
            console.print(f"[red]missed[/red] {miss}")
    verdict = all(r.false_alarms == 0 for r in runs) and runs[1].all_caught
    console.print(
        "verdict: " + ("[green]quiet when clean, every fault caught within one window[/green]" if verdict
                       else "[red]not met (see above)[/red]")
    )  # fmt: skip
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    return runs

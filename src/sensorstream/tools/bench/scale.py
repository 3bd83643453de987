"""Scaling curve: how the job's drain throughput moves with cores, Kafka partitions and sensors.

One point per setting, each changed alone from a baseline (``local[2]``, 3 partitions, 100 sensors):

- cores: ``local[1]`` vs ``local[2]``;
- partitions: 1, 3, 6 (Spark's Kafka source reads one task per partition);
- sensors: 100, 10 K, 100 K keys (windows touched per batch, so the sink's merge size).

Each point is ``sensorstream bench stream --rates ""`` (the drain alone) in its own process: a
SparkContext cannot change its master in place, and a fresh JVM per point keeps one point's JIT
and caches out of the next one's numbers. All points share one broker, each with its own topic.
The figure compared is the drain rate after the first batch (which also pays for the JVM's warm-up);
the overall rate is reported beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sensorstream.config import Settings, settings_env
from sensorstream.tools.bench.kafka import bench_broker
from sensorstream.tools.bench.plots import plot_scale

console = Console(stderr=True)
# Outside a terminal (make, CI logs, a pipe) rich would fold the table to 80 columns.
wide = console if console.is_terminal else Console(stderr=True, width=160)

BASELINE = {"cores": "local[2]", "partitions": 3, "sensors": 100}
AXES: dict[str, list[Any]] = {
    "cores": ["local[1]", "local[2]"],
    "partitions": [1, 3, 6],
    "sensors": [100, 10_000, 100_000],
}


def scale_points(axes: dict[str, list[Any]] = AXES) -> list[dict[str, Any]]:
    """Every point to run: one axis changed from the baseline at a time (the baseline runs once)."""
    points: list[dict[str, Any]] = []
    for axis, values in axes.items():
        for value in values:
            setting = {**BASELINE, axis: value}
            points.append(
                {"axis": axis, "label": f"{value:,}" if isinstance(value, int) else value, **setting}
            )
    return points


def _run_point(
    point: dict[str, Any], settings: Settings, bootstrap: str, events: int, work: Path
) -> dict[str, Any]:
    report = work / f"{point['axis']}-{point['label']}.json".replace(",", "")
    env = settings_env(
        settings.model_copy(update={"spark_master": point["cores"], "partitions": point["partitions"]})
    )
    log = report.with_suffix(".log")
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(
            [sys.executable, "-m", "sensorstream", "bench", "stream", "--rates", "", "--events", str(events),
             "--sensors", str(point["sensors"]), "--bootstrap-servers", bootstrap, "--report", str(report)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        ).returncode  # fmt: skip
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"scale point {point['axis']}={point['label']} failed (exit {code}):\n{tail}")
    child = json.loads(report.read_text())
    ran = {"cores": child["settings"]["spark_master"], "partitions": child["settings"]["partitions"],
           "sensors": child["sensors"]}  # fmt: skip
    if ran != {k: point[k] for k in ran}:  # e.g. an env file overriding ours: the point would be a lie
        raise RuntimeError(f"scale point {point['axis']}={point['label']} ran with {ran}, not {point}")
    drain = child["drain"]
    # Batches after the first: a fresh JVM's first batch pays for warm-up, which is not scaling.
    return {**point, "events_per_second": drain["steady_events_per_second"] or drain["events_per_second"],
            "overall_events_per_second": drain["events_per_second"], "seconds": drain["seconds"],
            "spark_ms": drain["stages"]["spark_ms"], "sink_ms": drain["stages"]["sink_ms"],
            "batches": int(drain["stages"]["batches"]), "wall_seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def run_scale_bench(
    settings: Settings, *, bootstrap_servers: str | None = None, events: int = 1_200_000,
    axes: dict[str, list[Any]] = AXES, report: Path = Path("reports/bench-scale.json"),
) -> dict[str, Any]:  # fmt: skip
    points = scale_points(axes)
    results: list[dict[str, Any]] = []
    done: dict[tuple, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="sensorstream-scale-") as tmp,
        bench_broker(settings, bootstrap_servers, None) as bootstrap,
    ):
        for point in points:
            key = (point["cores"], point["partitions"], point["sensors"])
            if key not in done:  # the baseline appears on every axis; measure it once
                console.print(f"scale: {point['axis']} = {point['label']} ...")
                done[key] = _run_point(point, settings, bootstrap, events, Path(tmp))
                console.print(f"  {done[key]['events_per_second']:,} events/s")
            results.append({**done[key], "axis": point["axis"], "label": point["label"]})
    result = {"events": events, "baseline": BASELINE, "shuffle_partitions": settings.shuffle_partitions,
              "trigger_s": settings.trigger, "max_offsets_per_trigger": settings.max_offsets_per_trigger,
              "cpus": os.cpu_count(), "points": results}  # fmt: skip
    report.parent.mkdir(parents=True, exist_ok=True)
    result["plot"] = str(plot_scale(result, report.parent / "scale.png"))
    report.write_text(json.dumps(result, indent=2))
    _print(result)
    return result


def _print(result: dict[str, Any]) -> None:
    table = Table("axis", "value", "events/s after batch 1", "events/s overall", "drain s", "batches", "spark ms/batch", "sink ms/batch",
                  title=f"drain throughput, {result['events']:,} events per point (baseline {result['baseline']})")  # fmt: skip
    for p in result["points"]:
        table.add_row(p["axis"], p["label"], f"{p['events_per_second']:,}", f"{p['overall_events_per_second']:,}", f"{p['seconds']:.1f}", str(p["batches"]),
                      f"{p['spark_ms']:,.0f}", f"{p['sink_ms']:,.0f}")  # fmt: skip
    wide.print(table)
    console.print(f"plot: {result['plot']}")

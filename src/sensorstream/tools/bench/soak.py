"""Steady-state benchmark: the cost of a batch on a full store, and hours of running in minutes.

Three parts, each on its own DuckDB file (and a throwaway broker unless ``--bootstrap-servers``):

1. **e2e on a full store**: the store is pre-filled in bulk with N readings (0, 10 M, 50 M) spread
   over the day before now, with their windows and a ledger row, as a day of running leaves it.
   Then the real job runs at a fixed rate (default 5 K events/s) and the event->commit p50/p99 of
   every event is measured, as in ``bench stream``.
2. **sink on a full store**: on the same file, the same sequence of real 20 K-event batches
   (1,000 sensors; 1 % copies of the previous batch, 0.5 % out of order within the lateness,
   0.1 % late, and 0.05 % copies of readings from hours ago) goes through the stream's own
   ``BatchMerger``: ms per batch, median and p95. The goal is N = 50 M within 1.3x of N = 0.
3. **soak**: the job runs for ``--minutes`` at ``--rate`` with a short retention (5 minutes), so
   the store reaches the size at which retention deletes as much as arrives. Every 10 s: consumer
   lag, batch duration, Python and JVM RSS, DuckDB file size and rows per table; per minute: the
   lag trend and the latency p99. Steady state = lag trend within 2 % of the rate, RSS and file
   size flat over the second half. Drawn in ``reports/soak.png``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from sensorstream.config import Settings
from sensorstream.kafka.topics import create_topic
from sensorstream.monitor.lag import LAST_END_OFFSETS_SQL
from sensorstream.sink.merge import BatchMerger
from sensorstream.store.client import StoreClient
from sensorstream.store.db import connect
from sensorstream.store.migrations import TABLES
from sensorstream.store.retention import apply_retention
from sensorstream.tools.bench.kafka import bench_broker
from sensorstream.tools.bench.load import load_process
from sensorstream.tools.bench.stream import (
    lag_growth,
    latency_figures,
    producer_process,
    run_settings,
    warm_up,
)
from sensorstream.tools.synthetic import as_records, make_batch, old_copies, prefill

console = Console(stderr=True)
wide = console if console.is_terminal else Console(stderr=True, width=160)


@dataclass
class SinkFigures:
    median_ms: float
    p95_ms: float
    duplicates: int
    late: int


def sink_batches(
    con: duckdb.DuckDBPyConnection, settings: Settings, batches: int, events: int, sensors: int
) -> SinkFigures:
    """Merge ``batches`` generated batches after the store's newest event; the sink's ms per batch."""  # fmt: skip
    gen = duckdb.connect()
    gen.execute("SET TimeZone = 'UTC'")
    newest = con.execute("SELECT coalesce(max(event_time), now()) FROM readings").fetchone()[0]
    merger = BatchMerger(con, settings, query_name=f"soak/{uuid.uuid4().hex[:6]}")
    timings, dups, late = [], 0, 0
    for i in range(batches):
        batch = make_batch(gen, i, newest + timedelta(seconds=1 + i), events=events, sensors=sensors,
                           window_s=int(settings.window), offset=i * events)  # fmt: skip
        # 0.05 % copies of readings stored hours ago (none on an empty store).
        old = old_copies(con, newest - timedelta(hours=1 + i % 20), events // 2000, 10**9 + i * events)
        batch = pa.concat_tables([batch, old.cast(batch.schema)])
        # As the stream hands it over: raw records, so the figure includes the sink's parse.
        result = merger.merge_records(i, as_records(gen, batch))
        timings.append(result.sink_ms)
        dups += result.duplicate_rows
        late += result.late_rows
    gen.close()
    warm = timings[2:] or timings  # the first batches also warm DuckDB's caches
    return SinkFigures(
        median_ms=round(statistics.median(warm), 1),
        p95_ms=round(statistics.quantiles(warm, n=20)[-1] if len(warm) > 1 else warm[0], 1),
        duplicates=dups,
        late=late,
    )


# --- process figures -----------------------------------------------------------------------------
def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def jvm_pid(runtime: Any) -> int | None:
    """The Spark driver JVM that PySpark launched (a child of this process)."""
    try:
        return runtime.job.spark.sparkContext._gateway.proc.pid
    except AttributeError:
        return None


def file_mb(db: Path) -> float:
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + ".wal")) if p.exists()) / 2**20


def table_rows(client: StoreClient) -> dict[str, int]:
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in TABLES)
    df = client.sql(sql)
    return {str(t): int(n) for t, n in zip(df["t"], df["n"], strict=True)}


# --- the parts -----------------------------------------------------------------------------------
def _num(value: Any) -> float | None:
    """A figure from a one-row query as a float; SQL NULL and NaN (no rows) become None."""
    return None if value is None or value != value else float(value)


def _new_topic(settings: Settings, bootstrap: str, work: Path, prefix: str, **over: Any) -> Settings:
    topic = f"{prefix}-{uuid.uuid4().hex[:6]}"
    create_topic({"bootstrap.servers": bootstrap}, topic, settings.partitions)
    return run_settings(settings, bootstrap, topic, work, **over)


@contextmanager
def _running_job(
    s: Settings, sensors: int, rate: float, *, bulk: bool = False
) -> Iterator[tuple[Any, StoreClient]]:
    """The real job (runtime) and a client of its read API, past its first (warm-up) batches.

    ``bulk``: warm up with the bulk load (the soak's producer) rather than the simulator.
    """
    from sensorstream.writer.runtime import StreamRuntime

    with (
        StreamRuntime(s) as runtime,
        StoreClient(s, api_url=runtime.store_service.api.url) as client,
    ):
        time.sleep(8)  # first (empty) batches, not measured
        if bulk:
            load_process(s, rate, 20.0, sensors).wait(timeout=140)
            runtime.job.wait_idle(timeout=300)
        else:
            warm_up(s, runtime, sensors, rate)
        yield runtime, client


def full_store_point(
    settings: Settings,
    bootstrap: str,
    work: Path,
    rows: int,
    *,
    rate: float,
    seconds: float,
    batches: int,
    batch_events: int,
    sensors: int,
) -> dict[str, Any]:
    """Parts 1 and 2 for one pre-fill size."""  # fmt: skip
    s = _new_topic(settings, bootstrap, work, f"soak-{rows}")
    con = connect(s.db)
    fill_s = prefill(con, rows, datetime.now(UTC) - timedelta(seconds=90), sensors=sensors,
                     window_s=int(s.window), lateness_s=int(s.allowed_lateness))  # fmt: skip
    con.close()
    point: dict[str, Any] = {"prefilled_readings": rows, "prefill_seconds": round(fill_s, 1)}
    with _running_job(s, sensors, rate) as (runtime, client):
        before = int(client.sql("SELECT coalesce(max(batch_id), -1) AS b FROM pipeline_metrics").iloc[0, 0])
        producer_process(s, rate, seconds, sensors, seed=7).wait(timeout=seconds + 120)
        runtime.job.wait_idle(timeout=600)
        point["e2e"] = {"rate": rate, **latency_figures(client, before)}
        sink = client.sql("SELECT median(sink_ms) AS m FROM pipeline_metrics WHERE batch_id > ?", [before])
        point["e2e"]["sink_ms"] = _num(sink.iloc[0, 0])
    con = connect(s.db, threads=s.db_threads)  # as the writer's process opens it
    try:
        point["sink"] = sink_batches(con, s, batches, batch_events, sensors).__dict__
        point["store_readings"] = con.execute("SELECT count(*) FROM readings").fetchone()[0]
        # Retention's speed on this store: a 12-hour horizon deletes about half of the pre-fill.
        kept = apply_retention(con, 12 * 3600)
        point["retention"] = {"deleted": kept.deleted["readings"], "seconds": round(kept.seconds, 2),
                              "rows_per_second": round(kept.rows_per_second),
                              "max_chunk_ms": round(kept.max_chunk_ms, 1), "chunks": kept.chunks}  # fmt: skip
    finally:
        con.close()
    point["file_mb"] = round(file_mb(s.db), 1)
    console.print(f"pre-filled {rows:,}: {json.dumps(point, default=str)}")
    return point


def soak(
    settings: Settings,
    bootstrap: str,
    work: Path,
    *,
    rate: float,
    minutes: float,
    sensors: int,
    retention: float,
) -> dict[str, Any]:
    """Part 3: the job at ``rate`` for ``minutes`` with a short retention; samples every 10 s."""  # fmt: skip
    s = _new_topic(settings, bootstrap, work, "soak-run", retention=retention, retention_interval=20.0,
                   window_retention=2 * retention, metrics_retention=2 * retention)  # fmt: skip
    samples: list[dict[str, Any]] = []
    with _running_job(s, sensors, rate, bulk=True) as (runtime, client):
        t0 = time.time()
        # The bulk load, not the simulator: the simulator tops out at 11-15 K events/s beside the job.
        proc = load_process(s, rate, minutes * 60, sensors)
        while proc.poll() is None:
            time.sleep(10)
            last = client.sql(
                "SELECT arg_max(batch_duration_ms, batch_id) AS ms, "
                "quantile_cont(latency_max_ms, 0.99) FILTER (committed_at > now() - INTERVAL 10 SECOND) AS p99 "
                "FROM pipeline_metrics"
            ).iloc[0]
            done = client.sql(LAST_END_OFFSETS_SQL).iloc[0, 0]
            sample = {
                "t": round(time.time() - t0, 1),
                "consumer_lag": sum(runtime.monitor.lag.lag(done).values()),
                "batch_ms": _num(last["ms"]),
                "batch_latency_max_p99_ms": _num(last["p99"]),
                "python_rss_mb": rss_mb(os.getpid()),
                "jvm_rss_mb": rss_mb(jvm_pid(runtime) or -1),
                "file_mb": round(file_mb(s.db), 1),
                "rows": table_rows(client),
                "load1": os.getloadavg()[0],
            }
            samples.append(sample)
            console.print(
                f"soak t={sample['t']:.0f}s: {json.dumps({k: v for k, v in sample.items() if k != 'rows'})}"
            )
        runtime.job.wait_idle(timeout=600)
    return {"rate": rate, "minutes": minutes, "retention_s": retention, "samples": samples,
            "minutes_summary": per_minute(samples, rate), "verdict": verdict(samples, rate)}  # fmt: skip


def per_minute(samples: list[dict[str, Any]], rate: float) -> list[dict[str, Any]]:
    """Per minute: lag trend (events/s), median batch ms, worst p99 of per-batch max latency, sizes."""
    out = []
    minutes = int(max((s["t"] for s in samples), default=0) // 60) + 1
    for m in range(minutes):
        part = [s for s in samples if m * 60 <= s["t"] < (m + 1) * 60]
        if not part:
            continue
        batch_ms = [s["batch_ms"] for s in part if s["batch_ms"] is not None]
        p99 = [s["batch_latency_max_p99_ms"] for s in part if s["batch_latency_max_p99_ms"] is not None]
        trend = lag_growth(part)
        out.append({
            "minute": m + 1, "lag_trend_per_s": round(trend),
            "lag_trend_pct_of_rate": round(100 * trend / rate, 2) if rate else None,
            "batch_ms_median": round(statistics.median(batch_ms)) if batch_ms else None,
            "latency_p99_ms": round(max(p99)) if p99 else None,
            "python_rss_mb": round(part[-1]["python_rss_mb"] or 0), "jvm_rss_mb": round(part[-1]["jvm_rss_mb"] or 0),
            "file_mb": part[-1]["file_mb"], "readings": part[-1]["rows"].get("readings"),
        })  # fmt: skip
    return out


def verdict(samples: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    """Steady state over the second half: flat lag (<= 2 % of the rate), RSS and file size flat."""
    half = [s for s in samples if s["t"] >= samples[-1]["t"] / 2] if samples else []

    def growth(key: str) -> float | None:
        pts = [(s["t"], s[key]) for s in half if s.get(key) is not None]
        if len(pts) < 3:
            return None
        return statistics.linear_regression(*zip(*pts, strict=True)).slope * 60  # per minute

    lag = lag_growth(half)
    return {
        "lag_trend_per_s": round(lag), "lag_flat": lag <= 0.02 * rate,
        "file_mb_per_min": growth("file_mb"), "python_rss_mb_per_min": growth("python_rss_mb"),
        "jvm_rss_mb_per_min": growth("jvm_rss_mb"),
    }  # fmt: skip


def plot_soak(result: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["soak"]["samples"]
    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    axes[0].plot(t, [s["consumer_lag"] for s in samples], label="consumer lag (events)")
    axes[0].set_ylabel("lag (events)")
    axes[1].plot(t, [s["batch_ms"] for s in samples], label="batch duration (ms)")
    axes[1].plot(
        t, [s["batch_latency_max_p99_ms"] for s in samples], label="event->commit, batch max, p99 (ms)"
    )
    axes[1].set_ylabel("ms")
    axes[2].plot(t, [s["python_rss_mb"] for s in samples], label="Python RSS (MB)")
    axes[2].plot(t, [s["jvm_rss_mb"] for s in samples], label="JVM RSS (MB)")
    axes[2].plot(t, [s["file_mb"] for s in samples], label="DuckDB file + WAL (MB)")
    axes[2].set_ylabel("MB")
    for table in ("readings", "window_stats", "pipeline_metrics"):
        axes[3].plot(t, [s["rows"].get(table) for s in samples], label=table)
    axes[3].set_ylabel("rows")
    axes[3].set_xlabel("minutes")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    soak_ = result["soak"]
    fig.suptitle(
        f"soak: {soak_['rate']:,.0f} events/s for {soak_['minutes']} min, retention {soak_['retention_s']:.0f} s"
    )
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "soak.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run_soak_bench(settings: Settings, *, bootstrap_servers: str | None = None,
                   prefills: tuple[int, ...] = (0, 10_000_000, 50_000_000), e2e_rate: float = 5_000,
                   e2e_seconds: float = 60, batches: int = 30, batch_events: int = 20_000, sensors: int = 1000,
                   rate: float = 20_000, minutes: float = 20, retention: float = 300,
                   report: Path = Path("reports/bench-soak.json")) -> dict[str, Any]:  # fmt: skip
    result: dict[str, Any] = {"cpus": os.cpu_count(), "points": [], "soak": None}
    with (
        tempfile.TemporaryDirectory(prefix="sensorstream-soak-") as tmp,
        bench_broker(settings, bootstrap_servers, None) as bootstrap,
    ):
        for rows in prefills:
            result["points"].append(
                full_store_point(settings, bootstrap, Path(tmp) / f"fill-{rows}", rows, rate=e2e_rate,
                                 seconds=e2e_seconds, batches=batches, batch_events=batch_events, sensors=sensors)
            )  # fmt: skip
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(json.dumps(result, indent=2, default=str))
        if minutes > 0:
            result["soak"] = soak(settings, bootstrap, Path(tmp) / "soak", rate=rate, minutes=minutes,
                                  sensors=sensors, retention=retention)  # fmt: skip
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2, default=str))
    if result["soak"]:
        result["plot"] = str(plot_soak(result, report.parent))
        report.write_text(json.dumps(result, indent=2, default=str))
    _print(result)
    return result


def _print(result: dict[str, Any]) -> None:
    table = Table("readings stored", "sink ms/batch (median)", "p95", "x of empty", "e2e p50 ms", "e2e p99 ms",
                  "dups found", "late", "retention rows/s", "longest delete ms",
                  title="the same batches on a fuller store")  # fmt: skip
    base = result["points"][0]["sink"]["median_ms"] if result["points"] else None
    for p in result["points"]:
        sink, e2e = p["sink"], p.get("e2e", {})
        table.add_row(f"{p['store_readings']:,}", f"{sink['median_ms']:,.0f}", f"{sink['p95_ms']:,.0f}",
                      f"{sink['median_ms'] / base:.2f}" if base else "-",
                      f"{e2e.get('p50_ms') or 0:,.0f}", f"{e2e.get('p99_ms') or 0:,.0f}",
                      f"{sink['duplicates']:,}", f"{sink['late']:,}",
                      f"{p['retention']['rows_per_second']:,}", f"{p['retention']['max_chunk_ms']:,.0f}")  # fmt: skip
    wide.print(table)
    if result.get("soak"):
        soak_ = result["soak"]
        minutes = Table("min", "lag trend/s", "% of rate", "batch ms", "p99 ms", "py RSS MB", "JVM RSS MB",
                        "file MB", "readings", title=f"soak at {soak_['rate']:,.0f} events/s")  # fmt: skip
        for m in soak_["minutes_summary"]:
            minutes.add_row(*(str(m[k]) for k in ("minute", "lag_trend_per_s", "lag_trend_pct_of_rate",
                              "batch_ms_median", "latency_p99_ms", "python_rss_mb", "jvm_rss_mb", "file_mb",
                              "readings")))  # fmt: skip
        wide.print(minutes)
        console.print(f"verdict: {json.dumps(soak_['verdict'])}")
    if result.get("plot"):
        console.print(f"plot: {result['plot']}")

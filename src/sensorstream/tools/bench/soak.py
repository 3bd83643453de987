"""Steady-state benchmark: the cost of a batch on a full store, and hours of running in minutes.

Three parts, each on its own DuckDB file (and a throwaway broker unless ``--bootstrap-servers``):

1. **e2e on a full store**: the store is pre-filled in bulk with N readings (0, 10 M, 50 M) spread
   over the day before now, with their windows and a ledger row, as a day of running leaves it.
   Then the real job runs at a fixed rate (default 5 K events/s) and the event->commit p50/p99 of
   every event is measured, as in ``bench stream``.
2. **sink on a full store**: on the same file, the same sequence of real 20 K-event batches
   (1,000 sensors; 1 % copies of the previous batch, 0.5 % out of order within the lateness,
   0.1 % late, and 0.05 % copies of readings from hours ago) goes through the stream's own
   ``BatchMerger``: ms per batch, median and p95. A full store should cost a batch little more
   than an empty one: N = 50 M within 1.3x of N = 0.
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
from collections.abc import Callable, Iterator
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
from sensorstream.serve.client import StoreClient
from sensorstream.sink.merge import BatchMerger
from sensorstream.store.db import connect
from sensorstream.store.migrations import TABLES
from sensorstream.store.retention import apply_retention
from sensorstream.tools.bench.kafka import bench_broker
from sensorstream.tools.bench.load import BulkLoad, load_process
from sensorstream.tools.bench.plots import plot_soak
from sensorstream.tools.bench.stream import (
    COMMITTED_AFTER,
    lag_growth,
    last_commit,
    latency_figures,
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
    s: Settings, sensors: int, rate: float, *, warm: bool = True
) -> Iterator[tuple[Any, StoreClient]]:
    """The real job (runtime) and a client of its read API, past its first (warm-up) batches;
    ``warm=False``: at once (a drain measures the job from its first batch)."""
    from sensorstream.writer.main import StreamRuntime

    with (
        StreamRuntime(s) as runtime,
        StoreClient(s, api_url=runtime.store_service.api.url) as client,
    ):
        if warm:
            time.sleep(8)  # first (empty) batches, not measured
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
        before = last_commit(client)
        load_process(s, rate, seconds, sensors).wait(timeout=seconds + 120)
        runtime.job.wait_idle(timeout=600)
        point["e2e"] = {"rate": rate, **latency_figures(client, before)}
        sink = client.sql(
            f"SELECT median(sink_ms) AS m FROM pipeline_metrics WHERE {COMMITTED_AFTER}", [before]
        )
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


@dataclass
class LongRun:
    """A run of minutes on a short retention (the soak, the drain): the store holds ``retention``
    of events at ``rate``, and retention deletes as much as arrives."""

    bootstrap: str
    work: Path
    rate: float
    minutes: float
    sensors: int
    retention: float

    def settings(self, base: Settings, prefix: str) -> Settings:
        return _new_topic(base, self.bootstrap, self.work / prefix, prefix, retention=self.retention,
                          retention_interval=20.0, window_retention=2 * self.retention,
                          metrics_retention=2 * self.retention)  # fmt: skip


def soak(settings: Settings, run: LongRun) -> dict[str, Any]:
    """Part 3: the job at ``rate`` for ``minutes`` with a short retention; samples every 10 s."""
    s = run.settings(settings, "soak-run")
    rate, minutes, sensors, retention = run.rate, run.minutes, run.sensors, run.retention
    with _running_job(s, sensors, rate) as (runtime, client):
        t0 = time.time()
        proc = load_process(s, rate, minutes * 60, sensors)
        samples = _sample_until(runtime, client, s, t0, lambda _last: proc.poll() is not None)
        runtime.job.wait_idle(timeout=600)
    return {"rate": rate, "minutes": minutes, "retention_s": retention, "samples": samples,
            "minutes_summary": per_minute(samples, rate), "verdict": verdict(samples, rate)}  # fmt: skip


def drain(settings: Settings, run: LongRun) -> dict[str, Any]:
    """Part 4: the job's own sustained rate, with no producer on its cores.

    On two cores the soak's load and the broker's intake take ~0.5 of a core beside the job. Here
    ``rate * minutes * 60`` events, on an event-time schedule at ``rate``, are in the topic before
    the job starts; the job then drains them with the soak's short retention, so the store holds
    ``retention`` of events at that rate, as it would at steady state. Per minute: events
    committed per second (the lag's fall), batch time, RSS, file size and rows per table.
    """
    s = run.settings(settings, "soak-drain")
    rate, minutes, sensors, retention = run.rate, run.minutes, run.sensors, run.retention
    load = BulkLoad(s.kafka_client_config, s.topic, rate, sensors)
    started = time.monotonic()
    try:
        undelivered = load.run(minutes * 60, paced=False)
    finally:
        load.close()
    produced = {"events": load.producer.sent, "undelivered": undelivered,
                "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    console.print(f"drain: backlog {json.dumps(produced)}")
    with _running_job(s, sensors, rate, warm=False) as (runtime, client):
        t0 = time.time()
        samples = _sample_until(
            runtime, client, s, t0, lambda last: last is not None and last["consumer_lag"] == 0
        )
        seconds = time.time() - t0
    minutes_ = per_minute(samples, rate)
    # Minute 1 holds the job's start (the JVM's first batches); the last one its partial end.
    steady = [-m["lag_trend_per_s"] for m in minutes_[1:-1]]
    return {"rate": rate, "backlog": produced, "retention_s": retention, "seconds": round(seconds, 1),
            "events_per_s_overall": round(load.producer.sent / seconds),
            "events_per_s_per_minute": steady, "events_per_s_min": min(steady, default=None),
            "samples": samples, "minutes_summary": minutes_}  # fmt: skip


def _lag(runtime: Any, client: StoreClient) -> int:
    """Events in the topic not yet committed (all of them before the first batch commits)."""
    done = client.sql(LAST_END_OFFSETS_SQL)
    return sum(runtime.monitor.lag.lag(done.iloc[0, 0] if len(done) else None).values())


def _sample_until(
    runtime: Any, client: StoreClient, s: Settings, t0: float, done: Callable[[dict[str, Any] | None], bool]
) -> list[dict[str, Any]]:
    """Every 10 s until ``done(last sample)``: lag, the last batch, the event->commit p50/p99 of
    every event committed since the previous sample, RSS, file size and rows per table."""
    samples: list[dict[str, Any]] = []
    since = last_commit(client)  # the warm-up's batches are not the run's
    while not done(samples[-1] if samples else None):
        time.sleep(10)
        last = client.sql(
            "SELECT arg_max(batch_duration_ms, committed_at) AS ms, epoch_us(max(committed_at)) AS committed_us, "
            "quantile_cont(latency_max_ms, 0.99) FILTER (committed_at > now() - INTERVAL 10 SECOND) AS p99 "
            "FROM pipeline_metrics"
        ).iloc[0]
        newest = _num(last["committed_us"])
        upto = since if newest is None else int(newest)
        events = latency_figures(client, since, upto) if upto > since else {}
        since = upto
        sample = {
            "t": round(time.time() - t0, 1),
            "consumer_lag": _lag(runtime, client),
            "batch_ms": _num(last["ms"]),
            "batch_latency_max_p99_ms": _num(last["p99"]),
            "latency_p50_ms": events.get("p50_ms"),
            "latency_p99_ms": events.get("p99_ms"),
            "python_rss_mb": rss_mb(os.getpid()),
            "jvm_rss_mb": rss_mb(jvm_pid(runtime) or -1),
            "file_mb": round(file_mb(s.db), 1),
            "rows": table_rows(client),
            "load1": os.getloadavg()[0],
        }
        samples.append(sample)
        console.print(f"t={sample['t']:.0f}s: {json.dumps({k: v for k, v in sample.items() if k != 'rows'})}")
    return samples


def per_minute(samples: list[dict[str, Any]], rate: float) -> list[dict[str, Any]]:
    """Per minute: lag trend (events/s), median batch ms, event->commit p99 (every event; and of
    each batch's oldest), sizes."""
    out = []
    minutes = int(max((s["t"] for s in samples), default=0) // 60) + 1
    for m in range(minutes):
        part = [s for s in samples if m * 60 <= s["t"] < (m + 1) * 60]
        if not part:
            continue
        batch_ms = [s["batch_ms"] for s in part if s["batch_ms"] is not None]
        batch_p99 = [s["batch_latency_max_p99_ms"] for s in part if s["batch_latency_max_p99_ms"] is not None]
        # Each sample's p99 covers the events committed in its 10 s; at most 1 % of the minute's
        # events are above the largest of them, so that is an upper bound of the minute's p99.
        p99 = [s["latency_p99_ms"] for s in part if s.get("latency_p99_ms") is not None]
        trend = lag_growth(part)
        out.append({
            "minute": m + 1, "lag_trend_per_s": round(trend),
            "lag_trend_pct_of_rate": round(100 * trend / rate, 2) if rate else None,
            "batch_ms_median": round(statistics.median(batch_ms)) if batch_ms else None,
            "latency_p99_ms": round(max(p99)) if p99 else None,
            "batch_latency_max_p99_ms": round(max(batch_p99)) if batch_p99 else None,
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


def run_soak_bench(settings: Settings, *, bootstrap_servers: str | None = None,
                   prefills: tuple[int, ...] = (0, 10_000_000, 50_000_000), e2e_rate: float = 5_000,
                   e2e_seconds: float = 60, batches: int = 30, batch_events: int = 20_000, sensors: int = 1000,
                   rate: float = 40_000, minutes: float = 20, retention: float = 300,
                   drain_rate: float = 50_000, drain_minutes: float = 8,
                   report: Path = Path("reports/bench-soak.json")) -> dict[str, Any]:  # fmt: skip
    result: dict[str, Any] = {"cpus": os.cpu_count(), "points": [], "soak": None, "drain": None}
    with (
        tempfile.TemporaryDirectory(prefix="sensorstream-soak-") as tmp,
        bench_broker(settings, bootstrap_servers, None) as bootstrap,
    ):
        for rows in prefills:
            result["points"].append(
                full_store_point(settings, bootstrap, Path(tmp) / f"fill-{rows}", rows, rate=e2e_rate,
                                 seconds=e2e_seconds, batches=batches, batch_events=batch_events, sensors=sensors)
            )  # fmt: skip
            _save(report, result)
        if minutes > 0:
            result["soak"] = soak(settings, LongRun(bootstrap, Path(tmp), rate, minutes, sensors, retention))
            _save(report, result)
        if drain_minutes > 0:
            run = LongRun(bootstrap, Path(tmp), drain_rate, drain_minutes, sensors, retention)
            result["drain"] = drain(settings, run)
    _save(report, result)
    if result["soak"]:
        result["plot"] = str(
            plot_soak(
                result["soak"],
                report.parent / "soak.png",
                f"soak: {result['soak']['rate']:,.0f} events/s for {minutes:g} min",
            )
        )
    if result["drain"]:
        result["drain_plot"] = str(plot_soak(result["drain"], report.parent / "soak-drain.png",
                                             f"drain: {result['drain']['backlog']['events']:,} events "
                                             f"on a {drain_rate:,.0f} events/s schedule"))  # fmt: skip
    _save(report, result)
    _print(result)
    return result


def _save(report: Path, result: dict[str, Any]) -> None:
    """Each part's figures as soon as it ends (a soak-only run once lost its 20 minutes of samples
    to a folder that only the pre-fill part created)."""
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2, default=str))


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
        minutes = Table("min", "lag trend/s", "% of rate", "batch ms", "p99 ms", "oldest p99", "py RSS MB", "JVM RSS MB",
                        "file MB", "readings", title=f"soak at {soak_['rate']:,.0f} events/s")  # fmt: skip
        for m in soak_["minutes_summary"]:
            minutes.add_row(*(str(m[k]) for k in ("minute", "lag_trend_per_s", "lag_trend_pct_of_rate",
                              "batch_ms_median", "latency_p99_ms", "batch_latency_max_p99_ms", "python_rss_mb", "jvm_rss_mb", "file_mb",
                              "readings")))  # fmt: skip
        wide.print(minutes)
        console.print(f"verdict: {json.dumps(soak_['verdict'])}")
    if result.get("drain"):
        d = result["drain"]
        minutes = Table("min", "events/s", "batch ms", "py RSS MB", "JVM RSS MB", "file MB", "readings",
                        title=f"drain of {d['backlog']['events']:,} events, no producer on the cores")  # fmt: skip
        for m in d["minutes_summary"]:
            minutes.add_row(str(m["minute"]), str(-m["lag_trend_per_s"]), *(str(m[k]) for k in (
                "batch_ms_median", "python_rss_mb", "jvm_rss_mb", "file_mb", "readings")))  # fmt: skip
        wide.print(minutes)
        console.print(f"drain: {d['events_per_s_overall']:,} events/s overall, per steady minute "
                      f"{d['events_per_s_per_minute']}")  # fmt: skip
    for key in ("plot", "drain_plot"):
        if result.get(key):
            console.print(f"plot: {result[key]}")

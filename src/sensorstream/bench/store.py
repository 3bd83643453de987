"""Store benchmark: the writer commits a batch every 100 ms into >= 1 M readings while another
process hammers the read API. Reports query latency, staleness and the writer's batch stall.

:class:`FakeBatchWriter` stands in for the Spark sink (no Kafka, no Spark): each batch writes
readings, upserts the touched windows with absolute values, and records late events, dead
letters, anomalies, pipeline_metrics and its sink_commits ledger row in one transaction under
``writer_lock``, as the real sink does. The store tests use it too.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import socket
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx

from sensorstream.config import Settings
from sensorstream.store.db import connect, write_transaction

SENSOR_TYPES = ("temperature", "humidity", "pressure", "vibration")
SITES = ("plant-a", "plant-b")
QUERY_NAME = "fake-sink"

_READINGS_SQL = """
INSERT INTO readings
SELECT 'b' || $batch || '-' || i AS event_id,
       'sensor-' || lpad(CAST(i % $sensors AS VARCHAR), 4, '0') AS sensor_id,
       $t0 + to_microseconds(CAST(i * $step_us AS BIGINT)) AS event_time,
       20 + 5 * sin(i / 7.0) + (i % 13) / 10.0 AS value,
       ($types)[1 + i % $sensors % len($types)] AS sensor_type,
       'u' AS unit,
       ($sites)[1 + i % $sensors % len($sites)] AS site,
       time_bucket(to_seconds($window), $t0 + to_microseconds(CAST(i * $step_us AS BIGINT))) AS window_start,
       false, i % 3, $offset + i, NULL, $batch, now()
FROM range($n) r(i)
"""
# Absolute values per touched window (never added on top): what a replayed batch must reproduce.
_WINDOWS_SQL = """
INSERT OR REPLACE INTO window_stats (sensor_id, window_start, window_end, sensor_type, site, reading_count,
    avg_value, min_value, max_value, stddev_value, is_final, updated_at)
SELECT sensor_id, window_start, window_start + to_seconds($window), any_value(sensor_type), any_value(site),
       count(*), avg(value), min(value), max(value), stddev_samp(value),
       window_start + to_seconds($window) <= $watermark, now()
FROM readings
WHERE window_start >= $from_window
GROUP BY sensor_id, window_start
"""


@dataclass
class FakeBatchWriter:
    """Writes synthetic micro-batches on the writer's connection; one transaction each."""

    con: duckdb.DuckDBPyConnection
    sensors: int = 20
    rows_per_batch: int = 100
    window: float = 60.0
    lateness: float = 30.0
    event_seconds_per_batch: float = 1.0  # event time each batch covers
    start: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    batch_id: int = 0
    offset: int = 0
    stats: list[dict[str, float]] = field(default_factory=list)

    event_time: datetime = field(init=False)  # where the next batch's events start

    def __post_init__(self) -> None:
        self.event_time = self.start

    def _readings(self, cur: duckdb.DuckDBPyConnection, n: int, seconds: float) -> None:
        cur.execute(
            _READINGS_SQL,
            {
                "batch": self.batch_id, "sensors": self.sensors, "t0": self.event_time,
                "step_us": seconds * 1e6 / max(n, 1), "types": list(SENSOR_TYPES), "sites": list(SITES),
                "window": int(self.window), "offset": self.offset, "n": n,
            },
        )  # fmt: skip
        self.offset += n

    def prefill(self, rows: int, chunk: int = 250_000) -> None:
        """Bulk history (e.g. 1 M readings) in big batches, so a benchmark starts on a large table."""
        per_row = self.event_seconds_per_batch / self.rows_per_batch
        while rows > 0:
            n = min(rows, chunk)
            self.write_batch(rows=n, seconds=n * per_row)
            rows -= n

    def write_batch(self, rows: int | None = None, seconds: float | None = None) -> dict[str, float]:
        """One micro-batch in one transaction; returns its timings (lock wait, held, total)."""
        n = self.rows_per_batch if rows is None else rows
        span = self.event_seconds_per_batch if seconds is None else seconds
        t0 = time.perf_counter()
        first_window = _floor(self.event_time, self.window)
        max_event = self.event_time + timedelta(seconds=span)
        watermark = max_event - timedelta(seconds=self.lateness)
        with write_transaction(self.con, f"fake batch {self.batch_id}") as tx:
            cur = tx.cur
            self._readings(cur, n, span)
            cur.execute(
                _WINDOWS_SQL,
                {"window": int(self.window), "watermark": watermark, "from_window": first_window},
            )
            cur.execute(
                "UPDATE window_stats SET is_final = true WHERE NOT is_final AND window_end <= $w",
                {"w": watermark},
            )
            b = self.batch_id
            cur.execute(
                "INSERT INTO late_events VALUES (?, 'sensor-0000', ?, 1.0, ?, ?, 0, ?, ?, now())",
                [f"late-{b}", watermark - timedelta(minutes=5), _floor(watermark - timedelta(minutes=5), self.window),
                 watermark, self.offset, b],
            )  # fmt: skip
            raw = b"\xff\xfe not utf-8" if b % 2 else b'{"event_id": "x"}'
            error = "not_utf8" if b % 2 else "missing_field:sensor_id"
            cur.execute(
                "INSERT INTO dead_letters VALUES ('sensor-data', 0, ?, NULL, ?, ?, ?, now())",
                [self.offset + 1, raw, error, b],
            )
            anomalies = 1 if b % 5 == 0 else 0
            if anomalies:
                cur.execute(
                    "INSERT INTO anomalies VALUES (?, 'sensor-0001', 'humidity', ?, 99.0, ?, 4.5, ?, now())",
                    [f"anom-{b}", max_event, "threshold" if b % 10 else "zscore", b],
                )
            elapsed_ms = (time.perf_counter() - t0) * 1000
            cur.execute(
                "INSERT INTO pipeline_metrics (batch_id, query_name, committed_at, input_rows, valid_rows, "
                "new_readings, duplicate_rows, late_rows, dead_letters, anomalies, windows_updated, "
                "windows_finalized, batch_duration_ms, sink_ms, rows_per_second, watermark, max_event_time) "
                "VALUES (?, ?, now(), ?, ?, ?, 0, 1, 1, ?, ?, 0, ?, ?, ?, ?, ?)",
                [b, QUERY_NAME, n + 2, n, n, anomalies, self.sensors, elapsed_ms, elapsed_ms,
                 n / max(elapsed_ms / 1000, 1e-6), watermark, max_event],
            )  # fmt: skip
            cur.execute(
                "INSERT INTO sink_commits VALUES (?, ?, now(), ?, ?, ?)",
                [QUERY_NAME, b, watermark, max_event, json.dumps({"0": self.offset})],
            )
        self.batch_id += 1
        self.offset += 2
        self.event_time = max_event
        stat = {
            "batch_id": b,
            "lock_wait_ms": tx.lock_wait_s * 1000,
            "held_ms": tx.held_s * 1000,
            "total_ms": (time.perf_counter() - t0) * 1000,
            "committed_at": time.time(),
        }
        self.stats.append(stat)
        return stat


def _floor(ts: datetime, window: float) -> datetime:
    epoch = ts.timestamp()
    return datetime.fromtimestamp(epoch - epoch % window, UTC)


def free_port(low: int = 43000, high: int = 43099, host: str = "127.0.0.1") -> int:
    """A port in our range that nothing listens on right now."""
    for port in range(low, high + 1):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}..{high}")


# --- the reader side (runs in another process) -----------------------------------------------------
DEFAULT_MIX: tuple[tuple[str, dict[str, Any]], ...] = (
    ("last_batch", {}),
    ("sensors", {}),
    ("last_batch", {}),
    ("latest_windows", {"limit": 100, "since": 5}),
    ("last_batch", {}),
    ("sensor_series", {"sensor_id": "sensor-0001", "limit": 120}),
    ("last_batch", {}),
    ("table_counts", {}),
    ("last_batch", {}),
    ("totals", {}),
)


def read_loop(
    api_url: str,
    *,
    reads: int | None = None,
    seconds: float | None = None,
    mix: Sequence[tuple[str, Mapping[str, Any]]] = DEFAULT_MIX,
) -> dict[str, Any]:
    """Hammer the read API: latencies per query, errors, table counts seen, when each batch appeared.

    Stops after ``reads`` requests or ``seconds``, whichever comes first.
    """
    latencies: dict[str, list[float]] = {}
    errors: list[str] = []
    counts: list[dict[str, int]] = []
    first_seen: dict[int, float] = {}
    deadline = time.monotonic() + (seconds if seconds is not None else 1e9)
    done = 0
    with httpx.Client(base_url=api_url, timeout=10.0, trust_env=False) as http:
        while (reads is None or done < reads) and time.monotonic() < deadline:
            name, params = mix[done % len(mix)]
            done += 1
            t0 = time.perf_counter()
            try:
                response = http.get(f"/query/{name}", params=dict(params))
                seen_at = time.time()
                response.raise_for_status()
                body = response.json()
            except Exception as exc:
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            latencies.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
            if name == "table_counts":
                counts.append({table: rows for table, rows in body["rows"]})
            elif name == "last_batch" and body["rows"]:
                first_seen.setdefault(body["rows"][0][0], seen_at)
    return {
        "reads": done,
        "latencies_ms": latencies,
        "errors": errors,
        "counts": counts,
        "first_seen": first_seen,
    }


def _reader_process(api_url: str, reads: int | None, seconds: float | None, mix: Any, out: Any) -> None:
    out.put("ready")
    out.put(read_loop(api_url, reads=reads, seconds=seconds, mix=mix))


def start_reader(
    api_url: str,
    *,
    reads: int | None = None,
    seconds: float | None = None,
    mix: Sequence[tuple[str, Mapping[str, Any]]] = DEFAULT_MIX,
) -> tuple[mp.process.BaseProcess, Any]:
    """:func:`read_loop` in a separate (spawned) process; ``queue.get()`` returns its result."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited DuckDB handles or threads
    out = ctx.Queue()
    proc = ctx.Process(target=_reader_process, args=(api_url, reads, seconds, list(mix), out), daemon=True)
    proc.start()
    return proc, out


# --- the benchmark -----------------------------------------------------------------------------------
def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(_pct(values, 50), 2),
        "p99": round(_pct(values, 99), 2),
        "max": round(max(values), 2) if values else float("nan"),
    }


def _write_for(
    writer: FakeBatchWriter, seconds: float, every: float, stop: threading.Event | None = None
) -> list[dict]:
    """Commit a batch every ``every`` seconds (on a fixed schedule); per-batch timings and lateness."""
    stats = []
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds and not (stop and stop.is_set()):
        scheduled = start + n * every
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        stat = writer.write_batch()
        stat["behind_schedule_ms"] = max(0.0, (time.perf_counter() - scheduled) * 1000 - stat["total_ms"])
        stats.append(stat)
        n += 1
    return stats


def _phase(
    writer: FakeBatchWriter, api_url: str, seconds: float, every: float, side_job: Any = None
) -> dict[str, Any]:
    """Writer on its schedule while a reader process hammers the API (and ``side_job`` runs)."""
    proc, out = start_reader(api_url, seconds=seconds)
    if out.get(timeout=60) != "ready":  # the spawned interpreter takes a second or two to import
        raise RuntimeError("reader process did not start")
    side: dict[str, Any] = {}
    helper = threading.Thread(target=lambda: side.update(side_job() if side_job else {}), name="bench-side")
    helper.start()
    stats = _write_for(writer, seconds, every)
    reader = out.get(timeout=seconds + 60)
    proc.join(10)
    helper.join()
    committed = {s["batch_id"]: s["committed_at"] for s in stats}
    staleness = [
        max(0.0, (seen - committed[b]) * 1000) for b, seen in reader["first_seen"].items() if b in committed
    ]
    latencies = [v for values in reader["latencies_ms"].values() for v in values]
    return {
        "reader": {
            "reads": reader["reads"],
            "reads_per_s": round(reader["reads"] / seconds, 1),
            "errors": len(reader["errors"]),
            "first_errors": reader["errors"][:3],
            "latency_ms_all": _summary(latencies),
            "latency_ms": {name: _summary(v) for name, v in sorted(reader["latencies_ms"].items())},
        },
        "staleness_ms": _summary(staleness),
        "writer": _batch_summary(stats),
        **side,
    }


def run_store_bench(
    settings: Settings,
    *,
    rows: int = 1_000_000,
    seconds: float = 20.0,
    baseline_seconds: float = 5.0,
    every: float = 0.1,
    retention_fraction: float = 0.05,
    housekeeping_seconds: float = 10.0,
) -> dict[str, Any]:
    """Writer every ``every`` s into >= ``rows`` readings while another process hammers the API.

    Phases, each printed and returned:

    1. ``writer_alone``: ``baseline_seconds`` of batches, no readers;
    2. ``with_readers``: ``seconds`` of batches while a reader process runs the dashboard's
       query mix over HTTP as fast as it can (latency, staleness, the writer's stall);
    3. ``with_housekeeping``: the same plus one snapshot and one retention pass deleting the
       oldest ``retention_fraction`` of readings.

    Uses a scratch file ``<data_dir>/bench-store.duckdb`` (replaced) and ``settings.api_port``.
    """
    from sensorstream.store.api import ReadApi
    from sensorstream.store.retention import apply_retention
    from sensorstream.store.snapshot import write_snapshot

    db = Path(settings.data_dir) / "bench-store.duckdb"
    db.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (db, db.with_name(db.name + ".wal")):
        leftover.unlink(missing_ok=True)
    con = connect(db)
    writer = FakeBatchWriter(con, sensors=50, rows_per_batch=100)
    t0 = time.perf_counter()
    writer.prefill(rows)
    con.execute("CHECKPOINT")
    report: dict[str, Any] = {"rows_prefilled": rows, "prefill_s": round(time.perf_counter() - t0, 2)}
    report["every_ms"] = every * 1000
    span = rows / writer.rows_per_batch * writer.event_seconds_per_batch  # event seconds prefilled

    def housekeeping() -> dict[str, Any]:
        snap = write_snapshot(con, Path(settings.data_dir) / "bench-snapshot.duckdb")
        kept = apply_retention(con, span * (1 - retention_fraction))
        return {
            "snapshot": {"seconds": round(snap.seconds, 3), "rows": sum(snap.rows.values()), "bytes": snap.bytes},
            "retention": {
                "seconds": round(kept.seconds, 2), "deleted": kept.deleted["readings"],
                "chunks": kept.chunks, "max_chunk_ms": round(kept.max_chunk_ms, 1),
            },
        }  # fmt: skip

    report["writer_alone"] = {"writer": _batch_summary(_write_for(writer, baseline_seconds, every))}
    api = ReadApi(con, settings).start()
    try:
        report["with_readers"] = _phase(writer, api.url, seconds, every)
        report["with_housekeeping"] = _phase(writer, api.url, housekeeping_seconds, every, housekeeping)
    finally:
        api.stop()
    report["readings_at_end"] = con.execute("SELECT count(*) FROM readings").fetchone()[0]
    con.close()
    _print(report)
    return report


def _batch_summary(stats: list[dict]) -> dict[str, Any]:
    return {
        "batches": len(stats),
        "batch_ms": _summary([s["total_ms"] for s in stats]),
        "lock_wait_ms": _summary([s["lock_wait_ms"] for s in stats]),
        "behind_schedule_ms": _summary([s["behind_schedule_ms"] for s in stats]),
        "mean_batch_ms": round(statistics.fmean(s["total_ms"] for s in stats), 2) if stats else None,
    }


def _print(report: dict[str, Any]) -> None:
    print(
        f"store bench: {report['rows_prefilled']:,} readings prefilled ({report['prefill_s']} s), "
        f"{report['readings_at_end']:,} at the end; a batch every {report['every_ms']:.0f} ms"
    )
    for phase in ("writer_alone", "with_readers", "with_housekeeping"):
        data = report[phase]
        w = data["writer"]
        print(f"[{phase}]")
        print(
            f"  writer: {w['batches']} batches; batch ms p50 {w['batch_ms']['p50']} p99 {w['batch_ms']['p99']} "
            f"max {w['batch_ms']['max']}; lock wait max {w['lock_wait_ms']['max']}; "
            f"behind schedule max {w['behind_schedule_ms']['max']}"
        )
        if "reader" not in data:
            continue
        r = data["reader"]
        print(f"  reader: {r['reads']} reads ({r['reads_per_s']}/s), {r['errors']} errors")
        a = r["latency_ms_all"]
        print(f"  query latency ms (all): p50 {a['p50']}  p99 {a['p99']}  max {a['max']}")
        for name, q in r["latency_ms"].items():
            print(f"    {name:<16} p50 {q['p50']:>7}  p99 {q['p99']:>7}  max {q['max']:>7}  (n={q['n']})")
        st = data["staleness_ms"]
        print(
            f"  staleness ms (commit -> first seen by reader): p50 {st['p50']}  p99 {st['p99']}  max {st['max']}"
        )
        for key in ("snapshot", "retention"):
            if key in data:
                print(f"  {key}: {data[key]}")

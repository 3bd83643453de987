"""Store benchmark: the writer commits a batch every 100 ms into >= 1 M readings while another
process hammers the read API. Reports query latency, staleness and the writer's batch stall.
The writer is :class:`sensorstream.tools.synthetic.FakeBatchWriter` (no Kafka, no Spark).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sensorstream.config import Settings
from sensorstream.store.db import connect
from sensorstream.tools.reader import ReaderProcess
from sensorstream.tools.synthetic import FakeBatchWriter


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
    writer: FakeBatchWriter, api_url: str, seconds: float, every: float, side_job: Any = None, *, work: Path
) -> dict[str, Any]:
    """Writer on its schedule while a reader process hammers the API (and ``side_job`` runs)."""
    reader_proc = ReaderProcess(
        api_url,
        work / f"reader-{time.time_ns()}.json",
        "--mix",
        "bench",
        "--seconds",
        str(seconds),
        "--pause",
        "0",
    )
    reader_proc.wait_ready()  # a fresh interpreter takes a second or two to import
    side: dict[str, Any] = {}
    helper = threading.Thread(target=lambda: side.update(side_job() if side_job else {}), name="bench-side")
    helper.start()
    stats = _write_for(writer, seconds, every)
    reader = reader_proc.wait(timeout=60)
    helper.join()
    committed = {s["batch_id"]: s["committed_at"] for s in stats}
    staleness = [
        max(0.0, (seen - committed[int(b)]) * 1000)
        for b, seen in reader["first_seen"].items()
        if int(b) in committed
    ]
    latencies = [v for values in reader["latencies_ms"].values() for v in values]
    return {
        "reader": {
            "reads": reader["reads"],
            "reads_per_s": round(reader["reads"] / seconds, 1),
            "errors": len(reader["failures"]),
            "busy_429": reader["busy"],
            "first_errors": reader["failures"][:3],
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
    from sensorstream.serve.api import ReadApi
    from sensorstream.store.retention import apply_retention
    from sensorstream.store.snapshot import write_snapshot

    db = Path(settings.data_dir) / "bench-store.duckdb"
    db.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (db, db.with_name(db.name + ".wal")):
        leftover.unlink(missing_ok=True)
    con = connect(db, threads=settings.db_threads)  # as the writer's process opens it
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
        report["with_readers"] = _phase(writer, api.url, seconds, every, work=db.parent)
        report["with_housekeeping"] = _phase(
            writer, api.url, housekeeping_seconds, every, housekeeping, work=db.parent
        )
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

"""The one reader that hammers the store's read API from another process (benchmarks and faults).

It talks HTTP only and never opens the DuckDB file: ``StoreClient`` would fall back to a
read-only open of the file when the API does not answer, and a reader holding the file while a
killed job restarts would make that restart fail with a lock error.

What it records, per request: the latency of every answer (by request name), every failure with
its time and kind (so a fault run can tell refusals while the job was down, expected, from errors
while it was up, bugs), 429s apart (every read slot taken: the API's defined answer, not an
error), each ``table_counts`` answer (one MVCC snapshot: must show whole batches only), the time
each batch id was first seen (the store benchmark's commit-to-visible delay), and whether the
number of readings ever went down (a reader must only ever see committed batches).

Run: ``python -m sensorstream.tools.reader URL OUT.json [--mix faults|bench|table_counts]
[--reads N] [--seconds S]``; it stops at those limits or on SIGTERM, and writes OUT.json.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


@dataclass(frozen=True)
class Request:
    name: str
    path: str
    method: str = "GET"
    params: dict[str, Any] | None = None
    body: dict[str, Any] | None = None


def named(name: str, **params: Any) -> Request:
    """A named query, ``GET /query/<name>``."""
    return Request(name, f"/query/{name}", params=params or None)


MIXES: dict[str, tuple[Request, ...]] = {
    # Fault runs: the API's main paths, ad-hoc SQL included; `count` must never go down.
    "faults": (
        Request("health", "/health"),
        named("table_counts"),
        named("latest_windows"),
        Request("count", "/sql", "POST", body={"sql": "SELECT count(*) FROM readings"}),
        named("totals"),
    ),
    # The store benchmark: the dashboard's queries, with `last_batch` often to see batches appear.
    "bench": (
        named("last_batch"),
        named("sensors"),
        named("last_batch"),
        named("latest_windows", limit=100, since=5),
        named("last_batch"),
        named("sensor_series", sensor_id="sensor-0001", limit=120),
        named("last_batch"),
        named("table_counts"),
        named("last_batch"),
        named("totals"),
    ),
    "table_counts": (named("table_counts"),),
}


def read_loop(
    url: str,
    mix: Sequence[Request],
    *,
    reads: int | None = None,
    seconds: float | None = None,
    stop: threading.Event | None = None,
    pause: float = 0.0,
) -> dict[str, Any]:
    """Send ``mix`` round and round until ``reads`` requests, ``seconds`` or ``stop``."""
    stop = stop or threading.Event()
    deadline = time.monotonic() + (seconds if seconds is not None else 1e12)
    latencies: dict[str, list[float]] = {}
    failures: list[tuple[float, str, str]] = []
    counts: list[dict[str, int]] = []
    first_seen: dict[int, float] = {}
    last_count, decreases, busy, done = -1, 0, 0, 0
    # A short connect timeout: a refused connection is immediate, a hung one is an error.
    with httpx.Client(base_url=url, timeout=httpx.Timeout(10.0, connect=1.0), trust_env=False) as client:
        while not stop.is_set() and (reads is None or done < reads) and time.monotonic() < deadline:
            req = mix[done % len(mix)]
            done += 1
            t0 = time.perf_counter()
            try:
                r = client.request(req.method, req.path, params=req.params, json=req.body)
                seen_at = time.time()
            except httpx.ConnectError:
                failures.append((time.time(), "refused", req.name))
                stop.wait(0.05)  # nothing listens; do not spin
                continue
            except httpx.HTTPError as exc:
                failures.append((time.time(), type(exc).__name__, req.name))
                continue
            if r.status_code == 429:
                busy += 1
            elif r.status_code != 200:
                failures.append((time.time(), f"http_{r.status_code}", req.name))
            else:
                latencies.setdefault(req.name, []).append((time.perf_counter() - t0) * 1000)
                rows = r.json().get("rows") or []
                count = None
                if req.name == "table_counts":
                    counts.append({table: n for table, n in rows})
                    count = counts[-1].get("readings")
                elif req.name == "count" and rows:
                    count = rows[0][0]
                elif req.name == "last_batch" and rows:
                    first_seen.setdefault(rows[0][0], seen_at)
                if count is not None:
                    decreases += count < last_count
                    last_count = max(last_count, count)
            if pause:
                stop.wait(pause)
    return {
        "reads": done,
        "latencies_ms": latencies,
        "failures": failures,
        "busy": busy,
        "count_decreases": decreases,
        "counts": counts,
        "first_seen": first_seen,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--mix", choices=sorted(MIXES), default="faults")
    parser.add_argument("--reads", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--pause", type=float, default=0.005)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ready_marker(args.out).touch()  # imports done: the caller may start what it measures
    doc = read_loop(
        args.url, MIXES[args.mix], reads=args.reads, seconds=args.seconds, stop=stop, pause=args.pause
    )
    args.out.write_text(json.dumps(doc))


def ready_marker(out: Path) -> Path:
    return out.with_name(out.name + ".ready")


# --- the caller's side -------------------------------------------------------------------------------
@dataclass
class ReaderStats:
    """A fault run's verdict on what the reader saw, failures classified by when the job was down."""

    requests: int = 0
    ok: int = 0
    errors: int = 0  # failures while the job was up: must be 0
    refused_while_down: int = 0  # the job was killed or restarting: expected
    failed_while_down: int = 0  # other failures inside a down interval (a request cut by the kill)
    count_decreases: int = 0  # readings count went down between two reads: must be 0
    busy: int = 0  # answered 429: every read slot was taken (by a hostile reader); not an error
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def ok_verdict(self) -> bool:
        return self.errors == 0 and self.count_decreases == 0 and self.ok > 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "passed": self.ok_verdict}


class ReaderProcess:
    """A reader in its own interpreter (no inherited DuckDB handles or threads).

    ``module`` runs another reader with the same command line (``URL OUT ...``), e.g. the hostile
    one; ``args`` go after ``URL OUT``.
    """

    def __init__(self, url: str, out: Path, *args: str, module: str = __name__) -> None:
        self.out = out
        ready_marker(out).unlink(missing_ok=True)
        self.log = out.with_name(out.name + ".log")  # a file, not a pipe: a full pipe would block it
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, url, str(out), *args],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the reader has imported everything and sends its first request."""
        deadline = time.monotonic() + timeout
        while not ready_marker(self.out).exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the reader did not start: {self._stderr()}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def wait(self, timeout: float) -> dict[str, Any]:
        """Wait for a reader with ``--reads``/``--seconds`` to end by itself, and read its report."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"the reader ({self.proc.args[2]}) did not finish in {timeout:g} s") from None
        return self._report()

    def finish(self, timeout: float) -> dict[str, Any]:
        """SIGTERM, wait for the process to write its report, and read it."""
        self.proc.terminate()
        return self.wait(timeout)

    def _report(self) -> dict[str, Any]:
        if not self.out.exists():
            raise RuntimeError(f"the reader wrote no report: {self._stderr()}")
        return json.loads(self.out.read_text())

    def _stderr(self) -> str:
        text = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        return text or f"exit code {self.proc.returncode}"

    def stop(self, down: list[tuple[float, float]], grace: float = 0.5) -> ReaderStats:
        """``down``: (from, to) epoch intervals when the job was not serving (killed, starting)."""
        doc = self.finish(30)
        lat = sorted(v for values in doc["latencies_ms"].values() for v in values)
        stats = ReaderStats(
            requests=len(lat) + len(doc["failures"]) + doc["busy"],
            ok=len(lat),
            count_decreases=doc["count_decreases"],
            busy=doc["busy"],
        )
        for when, kind, *_ in doc["failures"]:
            inside = any(a - grace <= when <= b + grace for a, b in down)
            if inside and kind == "refused":
                stats.refused_while_down += 1
            elif inside:
                stats.failed_while_down += 1
            else:
                stats.errors += 1
                stats.error_kinds[kind] = stats.error_kinds.get(kind, 0) + 1
        if lat:
            stats.p50_ms = round(lat[len(lat) // 2], 2)
            stats.p99_ms = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2)
            stats.max_ms = round(lat[-1], 2)
        return stats


if __name__ == "__main__":
    main()

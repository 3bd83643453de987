"""A reader process that hammers the store's read API while a scenario breaks things.

It talks HTTP only, never opens the DuckDB file: ``StoreClient`` falls back to a read-only open
of the file when the API does not answer, and a reader holding the file while the killed job
restarts would make that restart fail with a lock error. Every failure is recorded with its time
and kind, so the scenario can tell refusals while the job was down (expected) from errors while
it was up (bugs). It also checks that ``count(*)`` of ``readings`` never goes down: a reader must
only ever see committed batches, and a killed batch must never be half visible.

Run: ``python -m sensorstream.faults.reader URL OUT.json`` (stops on SIGTERM and writes OUT).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REQUESTS: tuple[tuple[str, str, dict[str, Any] | None], ...] = (
    ("GET", "/health", None),
    ("GET", "/query/table_counts", None),
    ("GET", "/query/latest_windows", None),
    ("POST", "/sql", {"sql": "SELECT count(*) FROM readings"}),
    ("GET", "/query/totals", None),
)
COUNT_REQUEST = 3  # the index above whose answer must never decrease


def run(url: str, out: Path, pause: float = 0.005) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    latencies: list[float] = []
    failures: list[tuple[float, str]] = []
    last_count, decreases, busy, i = -1, 0, 0, 0
    # A short connect timeout: a refused connection is immediate, a hung one is an error.
    client = httpx.Client(base_url=url, timeout=httpx.Timeout(10.0, connect=1.0), trust_env=False)
    while not stop.is_set():
        method, path, body = REQUESTS[i % len(REQUESTS)]
        i += 1
        t0 = time.perf_counter()
        try:
            r = client.request(method, path, json=body)
            if r.status_code == 429:
                busy += 1  # the read slots are taken (a hostile reader): the API's defined answer
            elif r.status_code != 200:
                failures.append((time.time(), f"http_{r.status_code}"))
            else:
                latencies.append((time.perf_counter() - t0) * 1000)
                if (i - 1) % len(REQUESTS) == COUNT_REQUEST:
                    count = r.json()["rows"][0][0]
                    decreases += count < last_count
                    last_count = max(last_count, count)
        except httpx.ConnectError:
            failures.append((time.time(), "refused"))
            stop.wait(0.05)  # nothing listens; do not spin
        except httpx.HTTPError as exc:
            failures.append((time.time(), type(exc).__name__))
        stop.wait(pause)
    client.close()
    out.write_text(
        json.dumps(
            {"latencies_ms": latencies, "failures": failures, "count_decreases": decreases, "busy": busy}
        )
    )


@dataclass
class ReaderStats:
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


class Reader:
    """Start the reader process; ``stop(down)`` ends it and classifies failures by down intervals."""

    def __init__(self, url: str, out: Path, *args: str, module: str = "sensorstream.faults.reader") -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, url, str(out), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def finish(self, timeout: float) -> dict[str, Any]:
        """SIGTERM, wait for the process to write its report, and read it."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"the reader ({self.proc.args[2]}) did not stop") from None
        return json.loads(self.out.read_text())

    def stop(self, down: list[tuple[float, float]], grace: float = 0.5) -> ReaderStats:
        """``down``: (from, to) epoch intervals when the job was not serving (killed, starting)."""
        doc = self.finish(30)
        lat = sorted(doc["latencies_ms"])
        stats = ReaderStats(
            requests=len(lat) + len(doc["failures"]) + doc.get("busy", 0),
            ok=len(lat),
            count_decreases=doc["count_decreases"],
            busy=doc.get("busy", 0),
        )
        for when, kind in doc["failures"]:
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
    run(sys.argv[1], Path(sys.argv[2]))

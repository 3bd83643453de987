"""hostile-pg: every hostile PostgreSQL client at once against the endpoint while batches commit.

One stream job ingests a known stream at a fixed rate. After a warm-up, calm and hostile phases
alternate (calm, hostile, calm, hostile); in each hostile phase ``faults.pg_attacks`` runs in a
process of its own: silent sockets, oversized and malformed packets before authentication,
200 KB statements, huge placeholders, ``SET`` churn, sleep functions, queries after the store's
path and settings, and an ordinary heavy-ish reader. Throughout, a fresh ``psql`` connects and
queries every 0.5 s. The attackers' process runs ``SCHED_IDLE`` (``pg_attacks``):
hostile clients are on other machines, so their own CPU is not the server's to share; what they
make the endpoint and the writer do is unchanged, and they send as fast as the endpoint answers.
The producer and the psql probe keep the ordinary priority, the same in both kinds of phase.
It must show:

* the writer's batch p50 (``pipeline_metrics.batch_duration_ms`` of the batches committed in each
  kind of phase) in the hostile phases within :data:`FACTOR` of the calm ones;
* the writer's resident memory (its process, sampled every second) at most :data:`FACTOR` times
  its calm peak;
* every psql connection and query answered within :data:`PSQL_S`;
* every hostile request answered rightly (``pg_attacks``), and nothing lost: the store equals
  the expectation built from the input.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from sensorstream.tools.faults.env import StreamProc, Workspace, api_up, api_url, caught_up, wait_until
from sensorstream.tools.faults.hostile_reader import reads_spec
from sensorstream.tools.faults.scenario import (
    Background,
    FaultOptions,
    ScenarioResult,
    for_kafka,
    summary_numbers,
)
from sensorstream.tools.ports import free_port
from sensorstream.tools.reader import ReaderProcess
from sensorstream.tools.reference import Expectation, build

FACTOR = 1.2
PSQL_S = 1.0
PROBE_EVERY_S = 0.5
PASSWORD = "hostile-pg-faults"
PHASES = ("calm", "hostile", "calm", "hostile")


@dataclass
class Timeline:
    """When each phase ran (wall clock), and what was sampled during it."""

    spans: list[tuple[str, float, float]] = field(default_factory=list)
    rss: list[tuple[float, float, float | None]] = field(default_factory=list)  # t, writer MB, endpoint MB
    psql: list[tuple[float, float, str | None]] = field(default_factory=list)  # t, seconds, error
    cpu: list[tuple[float, dict[str, float]]] = field(default_factory=list)  # t, CPU seconds per process

    def phase_at(self, t: float) -> str | None:
        return next((name for name, a, b in self.spans if a <= t < b), None)


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def child_pid(parent: int, marker: bytes) -> int | None:
    """The child of ``parent`` whose command line holds ``marker``."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return None
    for pid in children:
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        except OSError:
            continue
    return None


def endpoint_pid(writer: int) -> int | None:
    """The PostgreSQL endpoint's own process among the writer's children."""
    return child_pid(writer, b"pgwire.process")


def _cpu_s(pid: int | None, task: str = "") -> float:
    """User + system CPU seconds of ``pid`` (or of its thread ``task/TID``; 0 when it is not there)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/{task}stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _idle_threads_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid``'s threads that run SCHED_IDLE: in the writer, the reads it serves."""
    total = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[38]) == 5:
                total += _cpu_s(pid, f"task/{tid}/")  # policy 5: SCHED_IDLE
    return total


def _cpu(writer: int) -> dict[str, float]:
    """CPU seconds of the processes that share the machine's cores during the run."""
    return {
        "writer": _cpu_s(writer),
        "writer_read_threads": _idle_threads_cpu_s(writer),
        "spark_jvm": _cpu_s(child_pid(writer, b"java")),
        "pg_endpoint": _cpu_s(endpoint_pid(writer)),
        "attacker": _cpu_s(child_pid(os.getpid(), b"pg_attacks")),
    }


def cores_by_phase(timeline: Timeline) -> dict[str, dict[str, float]]:
    """Cores each process used on average, per kind of phase (a process that started or ended
    between two samples counts from its first to its last)."""
    used: dict[str, dict[str, float]] = {}
    span: dict[str, float] = {}
    for (t0, a), (t1, b) in zip(timeline.cpu, timeline.cpu[1:], strict=False):
        kind = timeline.phase_at(t0)
        if kind is None or kind != timeline.phase_at(t1):
            continue
        span[kind] = span.get(kind, 0.0) + t1 - t0
        for name in b:
            delta = b[name] - a.get(name, 0.0)
            if delta >= 0 and a.get(name):
                used.setdefault(kind, {})[name] = used.get(kind, {}).get(name, 0.0) + delta
    return {k: {n: round(v / span[k], 2) for n, v in used.get(k, {}).items()} for k in span}


def probe_psql(host: str, port: int) -> tuple[float, str | None]:
    """A fresh psql connection and one query: its wall time, and why it failed if it did."""
    exe = shutil.which("psql") or "psql"
    args = [exe, "-X", "-At", "-h", host, "-p", str(port), "-U", "sensorstream", "-d", "sensorstream"]
    env = {**os.environ, "PGPASSWORD": PASSWORD, "PGCONNECT_TIMEOUT": "5"}
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            [*args, "-c", "SELECT count(*) FROM pipeline_metrics"],
            capture_output=True,
            text=True,
            env=env,
            timeout=15,
        )
        error = None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["exit"])[-1]
    except subprocess.TimeoutExpired:
        error = "no answer within 15 s"
    return time.monotonic() - t0, error


def _sample(job: StreamProc, port: int, timeline: Timeline, stop: threading.Event) -> None:
    def rss() -> None:
        while not stop.wait(1.0):
            now = time.time()
            timeline.rss.append((now, _rss_mb(job.proc.pid) or 0.0, _rss_mb(endpoint_pid(job.proc.pid))))
            timeline.cpu.append((now, _cpu(job.proc.pid)))

    threading.Thread(target=rss, daemon=True).start()
    while not stop.is_set():
        t0 = time.monotonic()
        seconds, error = probe_psql("127.0.0.1", port)
        timeline.psql.append((time.time(), round(seconds, 3), error))
        stop.wait(max(0.0, PROBE_EVERY_S - (time.monotonic() - t0)))


def batch_p50s(db: str | Path, timeline: Timeline) -> dict[str, dict[str, float | int | None]]:
    """Per kind of phase: the p50 of batch_duration_ms and sink_ms over the batches it committed."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT epoch_ms(committed_at) / 1000.0, batch_duration_ms, sink_ms FROM pipeline_metrics"
        ).fetchall()
    finally:
        con.close()
    out: dict[str, dict[str, float | int | None]] = {}
    for kind in ("calm", "hostile"):
        mine = [(b, s) for t, b, s in rows if timeline.phase_at(t) == kind]
        out[kind] = {
            "batches": len(mine),
            "batch_p50_ms": round(statistics.median(b for b, _ in mine), 1) if mine else None,
            "sink_p50_ms": round(statistics.median(s for _, s in mine if s is not None), 1) if mine else None,
        }
    return out


def _peak(values: list[float]) -> float | None:
    return round(max(values), 1) if values else None


def _within(hostile: float | None, calm: float | None) -> tuple[bool, float | None]:
    ratio = round(hostile / calm, 2) if hostile and calm else None
    return ratio is not None and ratio <= FACTOR, ratio


def run(opts: FaultOptions) -> ScenarioResult:
    rate = 1_000.0 if opts.quick else 2_000.0
    warm_s, phase_s = (4.0, 8.0) if opts.quick else (20.0, 30.0)
    phases = PHASES[:2] if opts.quick else PHASES
    seconds = warm_s + phase_s * len(phases)
    events = opts.events or int(rate * seconds)
    result = ScenarioResult(
        "hostile-pg", faults="every hostile PostgreSQL client at once, in alternate phases of the run"
    )
    with Workspace("hostile-pg", opts.settings, opts.workdir, opts.keep) as ws:
        try:
            bootstrap = opts.bootstrap or ws.kafka().bootstrap_servers
            ranges = opts.settings.valid_ranges
            spec = reads_spec(events, opts.seed, rate)
            messages = build(spec, ranges)
            expected = Expectation(messages, ranges, behind=len(messages), ahead=int(rate * 10))
            topic = ws.topic(bootstrap, f"faults-hostile-pg-{ws.dir.name[-6:]}")
            port = free_port(rng=ws.rng)
            env = ws.stream_env(bootstrap, topic, tag="job", pg_port=port, pg_password=PASSWORD)
            job = ws.start_stream(env)
            wait_until(lambda: api_up(api_url(env)), 180, "the read API", job)
            wait_until(lambda: "stream started" in job.log_tail(1000), 300, "the stream to start", job)
            timeline, stop = Timeline(), threading.Event()
            ws.on_exit(stop.set)
            sampler = threading.Thread(target=_sample, args=(job, port, timeline, stop), daemon=True)
            producer = Background(ws, for_kafka(opts.settings, bootstrap, topic), messages, rate).start()
            sampler.start()
            time.sleep(warm_s)
            attacks: list[dict[str, Any]] = []
            for i, phase in enumerate(phases):
                start = time.time()
                attacker = None
                if phase == "hostile":
                    out = ws.dir / f"pg-attacks-{i}.json"
                    attacker = ReaderProcess(
                        f"127.0.0.1:{port}",
                        out,
                        PASSWORD,
                        str(ws.dir),
                        module="sensorstream.tools.faults.pg_attacks",
                    )
                    ws.on_exit(attacker.kill)
                time.sleep(phase_s)
                if attacker is not None:
                    attacks.append(attacker.finish(60))
                timeline.spans.append((phase, start, time.time()))
            summary = producer.join(len(messages) / rate * 3 + 300)
            wait_until(lambda: caught_up(api_url(env), bootstrap, topic), 600, "the job to catch up", job)
            stop.set()
            sampler.join(20)
            result.checks["producer acked every message"] = summary.acked == len(messages)
            result.checks["stream job survived"] = job.alive
            result.checks["stream job stopped cleanly (exit 0)"] = job.terminate() == 0
            result.verdict = expected.compare(Path(env["SENSORSTREAM_DB"]))
            result.events = summary.sent
            result.numbers.update(summary_numbers(summary))
            _judge(result, timeline, batch_p50s(env["SENSORSTREAM_DB"], timeline), attacks, opts.quick)
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        ws.failed = not result.passed
    return result.finish()


def _judge(
    result: ScenarioResult,
    timeline: Timeline,
    batches: dict[str, dict[str, Any]],
    attacks: list[dict[str, Any]],
    quick: bool,
) -> None:
    """The figures, and a check (a sentence with the numbers) for each that must hold. The ratios
    are the full run's checks: the quick run's phases hold too few batches for a median."""
    rss = {
        kind: [w for t, w, _ in timeline.rss if timeline.phase_at(t) == kind] for kind in ("calm", "hostile")
    }
    endpoint = {
        kind: [e for t, _, e in timeline.rss if e is not None and timeline.phase_at(t) == kind]
        for kind in ("calm", "hostile")
    }
    calm_rss, hostile_rss = _peak(rss["calm"]), _peak(rss["hostile"])
    rss_ok, rss_ratio = _within(hostile_rss, calm_rss)
    calm_p50, hostile_p50 = batches["calm"]["batch_p50_ms"], batches["hostile"]["batch_p50_ms"]
    p50_ok, p50_ratio = _within(hostile_p50, calm_p50)
    probes = timeline.psql
    slow = [(round(s, 2), e) for _, s, e in probes if e is not None or s > PSQL_S]
    worst = round(max((s for _, s, _ in probes), default=0.0), 3)
    problems = [p for doc in attacks for p in doc.get("problems", [])]
    counts: dict[str, int] = {}
    for doc in attacks:
        for name, n in doc.get("counts", {}).items():
            counts[name] = counts.get(name, 0) + n
    result.numbers.update({
        "batches": batches, "batch_p50_ratio": p50_ratio,
        "writer_rss_peak_mb": {"calm": calm_rss, "hostile": hostile_rss}, "writer_rss_ratio": rss_ratio,
        "endpoint_rss_peak_mb": {k: _peak(v) for k, v in endpoint.items()},
        "cores_used": cores_by_phase(timeline),
        "phases": [(name, round(a, 3), round(b, 3)) for name, a, b in timeline.spans],
        "psql": {"probes": len(probes), "worst_s": worst, "slow_or_failed": slow[:20]},
        "hostile": {"requests": sum(counts.values()), "counts": counts, "problems": problems[:20]},
    })  # fmt: skip
    if not quick:
        _check_ratios(
            result, (hostile_p50, calm_p50, p50_ok, p50_ratio), (hostile_rss, calm_rss, rss_ok, rss_ratio)
        )
    result.checks[
        f"every fresh psql connection and query answered within {PSQL_S:g} s "
        f"({len(slow)} of {len(probes)} not; worst {worst} s)"
    ] = bool(probes) and not slow
    result.checks[f"every hostile request got a right answer ({len(problems)} wrong)"] = (
        sum(counts.values()) > 0 and not problems
    )


def _check_ratios(result: ScenarioResult, p50: tuple[Any, ...], rss: tuple[Any, ...]) -> None:
    hostile_p50, calm_p50, p50_ok, p50_ratio = p50
    hostile_rss, calm_rss, rss_ok, rss_ratio = rss
    result.checks[
        f"the writer's batch p50 under attack ({hostile_p50} ms) within {FACTOR}x of calm ({calm_p50} ms): {p50_ratio}x"
    ] = p50_ok
    result.checks[
        f"the writer's RSS under attack (peak {hostile_rss} MB) within {FACTOR}x of calm ({calm_rss} MB): {rss_ratio}x"
    ] = rss_ok

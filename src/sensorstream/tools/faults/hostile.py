"""Hostile and heavy requests against the store's read API, and a process that keeps sending them.

:data:`ATTACKS` is the one list of what a careless or hostile reader tries: file and network
access, extension downloads, huge and deeply nested SQL, answers and values too big for memory,
queries that run forever, settings and paths of the machine, a foreign ``Host`` header, bad
parameters and bodies. Each says which answers are right (``expect``): refusals must be a 4xx
whose JSON ``error`` is one sentence; a heavy but legal query may also answer 200. A 5xx, a
traceback, a dropped connection or a refusal without a sentence is a *problem*.

The tests (``tests/reads/test_hostile_reads.py``) send each once; the ``hostile-reader`` fault scenario
runs :func:`run` in its own process, several threads sending the list over and over, while the
stream job ingests.

Run: ``python -m sensorstream.tools.faults.hostile URL OUT.json [THREADS] [once]`` (stops on SIGTERM, or
after one round with ``once``, and writes OUT).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sensorstream.tools.reader import ReaderProcess

REFUSED = frozenset({400, 413})  # the guard's or a limit's answer (or 429: busy, always right)
HEAVY = frozenset({200, 400, 413})  # legal but costly: an answer or a limit


@dataclass(frozen=True)
class Attack:
    name: str
    sql: str | None = None  # POST /sql with this text
    path: str | None = None  # or GET this path
    body: bytes | None = None  # or POST /sql with these raw bytes
    headers: dict[str, str] = field(default_factory=dict)
    params: Any = None
    expect: frozenset[int] = REFUSED


def _sql(name: str, sql: str, expect: frozenset[int] = REFUSED, params: Any = None) -> Attack:
    return Attack(name, sql=sql, expect=expect, params=params)


ATTACKS: tuple[Attack, ...] = (
    # reach outside the store: files, network, extensions (the guard, then the engine)
    _sql("read a file", "SELECT * FROM read_csv('/etc/passwd')"),
    _sql("read a file by name", "SELECT * FROM '/etc/passwd'"),
    _sql("copy to a file", "COPY readings TO '/tmp/sensorstream-hostile.csv'"),
    _sql("attach a file", "ATTACH '/tmp/sensorstream-hostile.duckdb' AS other"),
    _sql("install an extension", "INSTALL httpfs"),
    _sql("update extensions", "UPDATE EXTENSIONS"),
    _sql("autoload fts", "SELECT stem('running', 'english')"),
    _sql("autoload inet", "SELECT '127.0.0.1'::INET"),
    _sql("autoload excel", "SELECT excel_text(1.5, '0.0')"),
    _sql("http url", "SELECT * FROM 'https://example.com/x.csv'"),
    _sql("change a setting", "SET enable_external_access = true"),
    # information about the machine
    _sql("pg_settings", "SELECT * FROM pg_catalog.pg_settings"),
    _sql("duckdb_settings", "SELECT * FROM duckdb_settings()"),
    _sql("duckdb_databases", "SELECT path FROM duckdb_databases()"),
    _sql("current_setting", "SELECT current_setting('memory_limit')"),
    _sql("getenv", "SELECT getenv('HOME')"),
    # cost: binding, building values, answers, memory, time
    _sql("25,000 columns", "SELECT " + ",".join(["1"] * 25_000)),
    _sql("1,000 columns", "SELECT " + ",".join(["1"] * 1_000)),
    _sql("deep nesting", "SELECT " + "(" * 4_000 + "1" + ")" * 4_000),
    _sql("deep expression", "SELECT " + "1+" * 5_000 + "1"),
    _sql("deep calls", "SELECT " + "abs(" * 900 + "1" + ")" * 900),
    _sql("1 GB value", "SELECT repeat('x', 1000000000)"),
    _sql("value from a column", "SELECT repeat('x', CAST(value AS BIGINT) * 1000000) FROM readings"),
    _sql("huge list", "SELECT range(1000000000)"),
    _sql("huge format", "SELECT printf('%1000000000d', 1)"),
    _sql(
        "recursive doubling",
        "WITH RECURSIVE r(n, s) AS (SELECT 1, 'x' UNION ALL SELECT n + 1, s || s FROM r WHERE n < 40) SELECT max(length(s)) FROM r",
    ),
    _sql("100 MB answer", "SELECT repeat('x', 100000) FROM range(1000)"),
    _sql("many rows", "SELECT * FROM range(100000000)", expect=HEAVY),
    _sql("run forever", "SELECT count(*) FROM range(1000000000) a, range(1000000000) b", expect=HEAVY),
    _sql(
        "big aggregate",
        "SELECT length(string_agg(CAST(i AS VARCHAR), ',')) FROM range(300000000) t(i)",
        expect=HEAVY,
    ),
    _sql("big hash table", "SELECT count(DISTINCT hash(i)) FROM range(100000000) t(i)", expect=HEAVY),
    _sql("big sort", "SELECT i FROM range(30000000) t(i) ORDER BY hash(i) DESC LIMIT 3", expect=HEAVY),
    # bad requests
    _sql("two statements", "SELECT 1; DROP TABLE readings"),
    _sql("does not parse", "SELEKT 1"),
    _sql("unknown table", "SELECT * FROM nope"),
    _sql("bad cast", "SELECT CAST('x' AS INTEGER)"),
    _sql("params not a list", "SELECT ?", params="x"),
    _sql("params missing", "SELECT ?, ?", params=[1]),
    Attack("not json", body=b"{not json", headers={"content-type": "application/json"}),
    Attack("no sql field", body=b'{"params": []}', headers={"content-type": "application/json"}),
    Attack(
        "1 MB body",
        body=b'{"sql": "' + b"x" * 1_000_000 + b'"}',
        headers={"content-type": "application/json"},
    ),
    Attack("huge since", path="/query/latest_windows?since=1e300"),
    Attack("huge since digits", path="/query/latest_windows?since=" + "9" * 400),
    Attack("bad limit", path="/query/latest_windows?limit=-1"),
    Attack("unknown query", path="/query/nope"),
    Attack(
        "dns rebinding", path="/health", headers={"host": "attacker.example:8765"}, expect=frozenset({400})
    ),
)


def send(client: httpx.Client, attack: Attack) -> httpx.Response:
    if attack.path is not None:
        return client.get(attack.path, headers=attack.headers)
    if attack.body is not None:
        return client.post("/sql", content=attack.body, headers=attack.headers)
    body: dict[str, Any] = {"sql": attack.sql}
    if attack.params is not None:
        body["params"] = attack.params
    return client.post("/sql", json=body, headers=attack.headers)


def problem(attack: Attack, response: httpx.Response) -> str | None:
    """What is wrong with ``response`` to ``attack`` (None: a right answer)."""
    status = response.status_code
    if status not in attack.expect and status != 429:  # busy is a right answer to anything
        return f"HTTP {status}, expected {sorted(attack.expect)}"
    if status == 200:
        return None
    if status == 400 and attack.name == "dns rebinding":
        return None if "host" in response.text.lower() else "no reason given"
    try:
        message = response.json().get("error")
    except ValueError:
        return "the refusal is not JSON"
    if not isinstance(message, str) or not message or "Traceback" in message or "\n" in message:
        return f"the refusal is not one sentence: {message!r:.120}"
    if status == 429 and "retry-after" not in response.headers:
        return "429 without Retry-After"
    return None


def run(url: str, out: Path, threads: int = 4, once: bool = False) -> None:
    """Send :data:`ATTACKS` from ``threads`` threads round and round until SIGTERM (or each one
    ``once``, shared out among the threads); write what came back to OUT."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    statuses: Counter[str] = Counter()
    problems: list[tuple[str, str]] = []
    answers: dict[str, str] = {}
    lock = threading.Lock()

    def worker(start: int) -> None:
        client = httpx.Client(base_url=url, timeout=httpx.Timeout(60.0, connect=2.0), trust_env=False)
        i = start
        while not stop.is_set() and not (once and i >= len(ATTACKS)):
            attack = ATTACKS[i % len(ATTACKS)]
            i += threads if once else 1
            try:
                response = send(client, attack)
                found = problem(attack, response)
                status = str(response.status_code)
                answer = f"{status} {response.text[:200]}"
            except httpx.HTTPError as exc:
                found, status, answer = type(exc).__name__, "error", repr(exc)
            with lock:
                statuses[status] += 1
                answers[attack.name] = answer
                if found:
                    problems.append((attack.name, found))
            stop.wait(0.01)
        client.close()

    pool = [
        threading.Thread(target=worker, args=(k if once else k * 7,), daemon=True) for k in range(threads)
    ]
    for t in pool:
        t.start()
    while not stop.is_set() and any(t.is_alive() for t in pool):
        stop.wait(0.2)
    for t in pool:
        t.join(70)
    out.write_text(json.dumps({"statuses": statuses, "problems": problems, "answers": answers}))


@dataclass
class HostileStats:
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    problems: int = 0
    problem_samples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok_verdict(self) -> bool:
        return self.requests > 0 and self.problems == 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "passed": self.ok_verdict}


class HostileReader:
    """The hostile reader as a process of its own (its memory and CPU are not the writer's)."""

    def __init__(self, url: str, out: Path, threads: int = 4) -> None:
        self._process = ReaderProcess(url, out, str(threads), module=__name__)

    def kill(self) -> None:
        self._process.kill()

    def stop(self, timeout: float = 90.0) -> HostileStats:
        doc = self._process.finish(timeout)
        return HostileStats(
            requests=sum(doc["statuses"].values()),
            statuses=dict(doc["statuses"]),
            problems=len(doc["problems"]),
            problem_samples=[(name, what) for name, what in doc["problems"][:20]],
        )


if __name__ == "__main__":
    run(
        sys.argv[1],
        Path(sys.argv[2]),
        int(sys.argv[3]) if len(sys.argv) > 3 else 4,
        once="once" in sys.argv[4:],
    )

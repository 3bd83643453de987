"""Every command of the README's table ends in one sentence, never a traceback, when what it needs
is down, refuses or is busy.

Each case runs the real CLI in a subprocess against a real failure: a port bound but not listening
(the read API or Kafka down), the real read API refusing a Host it does not allow or a write, a
stub HTTP server answering 429 or 503 or never answering (busy), a DuckDB file held by another
process (locked), a file that is not DuckDB, no file at all, a port another process listens on.
No broker or Spark starts (the last test excepted, marked ``broker``). A module fixture runs all
cases a few at a time (each is a Python start, about 0.7 s of CPU) and each test checks one; the
paths two commands share (``sql`` and ``query`` read through the same client) are run once.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sensorstream.config import load_settings
from sensorstream.serve.api import ReadApi
from sensorstream.store.db import connect
from sensorstream.tools.ports import free_port

ROOT = Path(__file__).resolve().parents[1]

# The world holds a DuckDB file from a process of its own, and every case is a run of the CLI.
STARTED_BY_FIXTURE = {"world": "process"}

# A plain DuckDB write connection held by another process: DuckDB's own lock, not ours.
HOLD = "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('holding', flush=True); sys.stdin.read()"


@dataclass(frozen=True)
class Case:
    """``args`` run as ``sensorstream ...`` with ``env`` (names from :class:`World`'s places)."""

    id: str
    args: tuple[str, ...]
    code: int
    says: tuple[str, ...]  # each must be in the sentence
    api: str = "down"  # down | strict (refuses our Host) | real | busy | failing | silent | page
    db: str = "missing"  # missing (the case's own path, nothing there) | locked | junk
    sentences: int = 1  # status says each problem, and Kafka is down in all but the last test
    env: dict[str, str] = field(default_factory=dict)


KAFKA_DOWN = ("Kafka at", "does not answer", "sensorstream kafka start")
NO_API = "does not answer"
LOCKED = ("open in another process", "stop that process")
NOT_DUCKDB = ("not a DuckDB database file", "SENSORSTREAM_DB")
HOST = ("does not answer to the Host", "SENSORSTREAM_API_ALLOWED_HOSTS")

CASES = [
    # Kafka down: every bootstrap server refuses, which the topic check says at once.
    Case("produce/kafka-down", ("produce", "--count", "1", "--quiet"), 1, KAFKA_DOWN),
    Case("consume/kafka-down", ("consume", "--max", "1"), 1, KAFKA_DOWN),
    Case("stream/kafka-down", ("stream",), 1, KAFKA_DOWN),
    Case("topic-list/kafka-down", ("kafka", "topic", "list"), 1, KAFKA_DOWN),
    Case("topic-create/kafka-down", ("kafka", "topic", "create", "x"), 1, KAFKA_DOWN),
    Case("bench-kafka/kafka-down", ("bench", "kafka", "--bootstrap-servers", "{kafka}"), 1, KAFKA_DOWN),
    Case(
        "faults/kafka-down",
        ("faults", "--scenario", "kill9", "--quick", "--bootstrap-servers", "{kafka}"),
        1,
        KAFKA_DOWN,
    ),
    Case("kafka-status/kafka-down", ("kafka", "status"), 1, ("does not answer", "no local node running")),
    # The read API: down (then the file: none, locked, not DuckDB), refusing, busy, failing, silent.
    Case("sql/api-down-no-store", ("sql", "SELECT 1"), 1, (NO_API, "no DuckDB file at", "SENSORSTREAM_DB")),
    Case("sql/api-down-locked", ("sql", "SELECT 1"), 1, (NO_API, "locked"), db="locked"),
    Case("sql/api-down-not-duckdb", ("sql", "SELECT 1"), 1, (NO_API, *NOT_DUCKDB), db="junk"),
    Case("sql/api-refuses-host", ("sql", "SELECT 1"), 1, HOST, api="strict"),
    Case("sql/api-refuses-write", ("sql", "DELETE FROM readings"), 1, ("refused:",), api="real"),
    Case("sql/api-busy-429", ("sql", "SELECT 1"), 1, ("is busy", "HTTP 429", "retry in 2 s"), api="busy"),
    Case("sql/api-failing-503", ("sql", "SELECT 1"), 1, ("HTTP 503", "retry"), api="failing"),
    Case("sql/api-silent", ("sql", "SELECT 1"), 1, ("did not answer within 3 s",), api="silent"),
    Case("sql/api-port-is-a-web-page", ("sql", "SELECT 1"), 1, ("is not the store's read API",), api="page"),
    Case("query/api-refuses-host", ("query", "last_batch"), 1, HOST, api="strict"),
    # status: exit 2 (broker down, its documented code wins) and one sentence per problem.
    Case("status/api-refuses-host", ("status",), 2, HOST, api="strict", sentences=2),
    Case("status/api-down-not-duckdb", ("status",), 2, NOT_DUCKDB, db="junk", sentences=2),
    # The store file itself.
    Case("snapshot/no-store", ("snapshot",), 1, ("there is no store at", "SENSORSTREAM_DB")),
    Case("snapshot/locked", ("snapshot",), 1, LOCKED, db="locked"),
    Case("snapshot/not-duckdb", ("snapshot",), 1, NOT_DUCKDB, db="junk"),
    Case("stream/locked", ("stream",), 1, LOCKED, db="locked"),
    Case("stream/not-duckdb", ("stream",), 1, NOT_DUCKDB, db="junk"),
    Case("run/locked", ("run", "--no-dashboard"), 1, LOCKED, db="locked"),
    # A port another process listens on.
    Case("dashboard/port-taken", ("dashboard", "--port", "{taken}"), 1, ("SENSORSTREAM_DASHBOARD_PORT",)),
    Case("kafka-start/port-taken", ("kafka", "start", "--port", "{taken}"), 1, ("already in use",)),
    Case("cluster-start/port-taken", ("cluster", "start", "--port", "{taken}"), 1, ("is in use", "--port")),
]


# --- the failures ----------------------------------------------------------------------------------
def _bound_not_listening() -> socket.socket:
    """A port nothing answers on (connections are refused) and nobody else can take meanwhile."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def _stub(status: int, body: bytes, headers: dict[str, str], release: threading.Event) -> ThreadingHTTPServer:
    """An HTTP server on a free port answering ``status`` to everything (0: never answering)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if not status:
                release.wait(60)  # accepted, never answered: a stuck or overloaded server
                return
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class World:
    dir: Path
    ports: dict[str, int]  # api name -> port, and "kafka", "taken"
    dbs: dict[str, Path]  # db name -> path (a case without one gets its own, not there yet)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("failures")
    release = threading.Event()
    down_api, down_kafka = _bound_not_listening(), _bound_not_listening()
    taken = socket.create_server(("127.0.0.1", 0))
    text = {"Content-Type": "text/plain"}
    stubs = {
        # A proxy's rate limit and a failing server speak plain text, not the API's JSON.
        "busy": _stub(429, b"Too Many Requests", {**text, "Retry-After": "2"}, release),
        "failing": _stub(503, b"Service Unavailable", text, release),
        "silent": _stub(0, b"", {}, release),
        "page": _stub(200, b"<html>a dashboard</html>", {"Content-Type": "text/html"}, release),
    }
    junk = base / "junk.duckdb"
    junk.write_text("these are not the bytes of a DuckDB file\n")
    locked = base / "locked.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(locked)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    apis: dict[str, ReadApi] = {}
    cons = []
    try:
        # The real read API, from a thread of this process: one allows only another Host (as a
        # SENSORSTREAM_API_ALLOWED_HOSTS that does not name 127.0.0.1 would), one the defaults.
        for name, hosts in (("strict", ["sensorstream.invalid"]), ("real", None)):
            settings = load_settings(
                db=base / f"{name}.duckdb",
                api_port=free_port(),
                **({"api_allowed_hosts": hosts} if hosts else {}),
            )
            cons.append(connect(settings.db))
            apis[name] = ReadApi(cons[-1], settings).start()
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        yield World(
            base,
            {
                "down": down_api.getsockname()[1],
                "kafka": down_kafka.getsockname()[1],
                "taken": taken.getsockname()[1],
                **{name: server.server_address[1] for name, server in stubs.items()},
                **{name: api.port for name, api in apis.items()},
            },
            {"locked": locked, "junk": junk},
        )
    finally:
        release.set()
        for api in apis.values():
            api.stop()
        for con in cons:
            con.close()
        for server in stubs.values():
            server.shutdown()
            server.server_close()
        holder.kill()
        holder.wait()
        for sock in (down_api, down_kafka, taken):
            sock.close()


# --- running the CLI ---------------------------------------------------------------------------------
def _run(case: Case, world: World) -> subprocess.CompletedProcess[str]:
    home = world.dir / case.id.replace("/", "-")
    kafka = f"127.0.0.1:{world.ports['kafka']}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORSTREAM_")}
    env.update(
        PYTHONPATH=str(ROOT / "src"), NO_COLOR="1", TERM="dumb",
        SENSORSTREAM_DATA_DIR=str(home), SENSORSTREAM_DB=str(world.dbs.get(case.db, home / "store.duckdb")),
        SENSORSTREAM_API_PORT=str(world.ports[case.api]), SENSORSTREAM_BOOTSTRAP_SERVERS=kafka,
        SENSORSTREAM_CACHE_DIR=str(ROOT / ".cache"), SENSORSTREAM_READ_TIMEOUT="1 second",
        SENSORSTREAM_METRICS_PORT="0", SENSORSTREAM_PG_PORT="-1",
    )  # fmt: skip
    env.update(case.env)
    args = [a.format(kafka=kafka, taken=world.ports["taken"]) for a in case.args]
    return subprocess.run(
        [sys.executable, "-m", "sensorstream", *args], env=env, cwd=home.parent, capture_output=True,
        text=True, timeout=90, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture(scope="module")
def outcomes(world: World) -> dict[str, subprocess.CompletedProcess[str]]:
    # A few at a time: enough to overlap the cases that wait (a silent API) on two cores.
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = {case.id: pool.submit(_run, case, world) for case in CASES}
    return {name: future.result() for name, future in futures.items()}


def assert_sentences(
    done: subprocess.CompletedProcess[str], code: int, says: tuple[str, ...], count: int
) -> None:
    shown = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Traceback" not in done.stdout + done.stderr, shown
    assert done.returncode == code, shown
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    # One line per problem, each "error: <sentence>": not wrapped, no log lines or tables around it.
    assert len(lines) == count, shown
    assert all(re.fullmatch(r"error: \S.*", line) for line in lines), shown
    assert not any(re.search(r"\.\s+[A-Z]", line) for line in lines), f"more than one sentence: {shown}"
    assert any(all(word in line for word in says) for line in lines), shown


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_failure_ends_in_one_sentence(case: Case, outcomes) -> None:
    assert_sentences(outcomes[case.id], case.code, case.says, case.sentences)


def test_status_names_kafka_too_when_both_are_down(outcomes) -> None:
    lines = outcomes["status/api-refuses-host"].stderr.splitlines()
    assert any(all(word in line for word in KAFKA_DOWN) for line in lines), lines


def test_snapshot_of_no_store_creates_none(world, outcomes) -> None:
    assert outcomes["snapshot/no-store"].returncode == 1
    assert not (world.dir / "snapshot-no-store").exists()


@pytest.mark.broker
def test_status_exit_4_when_the_read_api_refuses_and_kafka_answers(kafka, topic, world) -> None:
    from sensorstream.kafka.topics import create_topic

    create_topic({"bootstrap.servers": kafka.bootstrap_servers}, topic, 1)
    case = Case(
        "status/api-refuses-host-kafka-up", ("status",), 4, HOST, api="strict",
        env={"SENSORSTREAM_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "SENSORSTREAM_TOPIC": topic},
    )  # fmt: skip
    (world.dir / "status-api-refuses-host-kafka-up").mkdir(exist_ok=True)
    assert_sentences(_run(case, world), case.code, case.says, 1)


def test_a_bug_keeps_its_traceback() -> None:
    """Only failures the user can act on become a sentence; anything else is a bug and says where."""
    import typer
    from typer.testing import CliRunner

    from sensorstream.kafka.topics import TopicError
    from sensorstream.terminal import SentenceGroup

    app = typer.Typer(cls=SentenceGroup)

    @app.command()
    def broker() -> None:
        raise TopicError("Kafka at x does not answer")

    @app.command()
    def bug() -> None:
        raise KeyError("rows")

    said = CliRunner().invoke(app, ["broker"])
    assert said.exit_code == 1 and "error: Kafka at x does not answer" in said.output
    crashed = CliRunner().invoke(app, ["bug"])
    assert isinstance(crashed.exception, KeyError)

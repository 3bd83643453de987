"""The PostgreSQL endpoint in a process of its own, as the writer's ``StoreService`` runs it.

Real parts: a DuckDB file written by the fake batch writer, a writer process (a Python process
that opens the store read-write and starts ``StoreService``, as ``sensorstream stream`` does),
the endpoint's own process, and the real psql and psycopg clients.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from kit.pg import PASSWORD, conninfo, pg_settings, psql
from kit.store import store_settings, writer_store
from sensorstream.config import Settings, settings_env
from sensorstream.serve.store_service import StoreService

# Every test starts the endpoint's own process, most of them a writer's process too.
pytestmark = pytest.mark.process

# The writer's process, as `sensorstream stream` holds it: the store open read-write, some
# batches in it, the StoreService up. It prints the endpoint's address and process, then waits
# for its stdin to close.
WRITER = """
import json, os, sys
from sensorstream.config import load_settings
from sensorstream.store.db import connect
from sensorstream.serve.store_service import StoreService
from sensorstream.tools.synthetic import FakeBatchWriter

settings = load_settings()
con = connect(settings.db, threads=settings.db_threads)
writer = FakeBatchWriter(con)
for _ in range(3):
    writer.write_batch()
service = StoreService(con, settings).start()
print(json.dumps({"host": service.pg.host, "port": service.pg.port, "pid": service.pg.pid}), flush=True)
sys.stdin.read()
service.stop()
"""


@dataclass
class Endpoint:
    host: str
    port: int
    pid: int  # the endpoint's own process
    writer: subprocess.Popen[str]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextmanager
def writer_process(settings: Settings) -> Iterator[Endpoint]:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER],
        env=settings_env(settings),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        doc = json.loads(writer.stdout.readline())
        yield Endpoint(doc["host"], doc["port"], doc["pid"], writer)
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait(10)


@pytest.mark.integration
def test_psql_and_psycopg_are_served_by_the_endpoints_own_process(make_settings):
    settings = pg_settings(make_settings, api_port=0)
    with writer_store(settings, batches=2) as (con, _):
        service = StoreService(con, settings).start()
        try:
            pg = service.pg
            assert pg is not None and pg.pid not in (None, os.getpid())
            done = psql(pg, settings, "SELECT count(*) AS batches FROM pipeline_metrics")
            assert done.returncode == 0, done.stderr
            assert "2" in done.stdout.split("\n")[2]
            with psycopg.connect(conninfo(pg, settings)) as conn:
                assert conn.execute(
                    "SELECT count(*) FROM pipeline_metrics WHERE batch_id >= %s", [0]
                ).fetchone() == (2,)
                # The same guard and sentence as in-process: it runs in the endpoint's process now.
                with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                    conn.execute("DELETE FROM readings")
            # The sessions are the endpoint's process's: its connections, not the writer's.
            peers = subprocess.run(["ss", "-Htnp", "state", "established", f"sport = :{pg.port}"],
                                   capture_output=True, text=True).stdout  # fmt: skip
            assert str(os.getpid()) not in peers
            pid = pg.pid
        finally:
            service.stop()
        # The service's stop is the endpoint's stop: its process is gone and the port is free.
        assert pid is not None and gone_within(pid, 5), "the endpoint's process outlived the service's stop"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(conninfo(pg, settings) + " connect_timeout=2").close()


def policies(pid: int) -> dict[int, int]:
    """The scheduling policy of each thread of ``pid`` (field 41 of its stat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        # A thread that ended meanwhile is not there to read.
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{tid}/stat") as f:
            out[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[38])
    return out


@pytest.mark.integration
@pytest.mark.skipif(sys.platform != "linux", reason="SCHED_IDLE is Linux's")
def test_the_endpoints_and_the_apis_processes_run_on_cpu_time_the_writer_does_not_want(make_settings):
    settings = pg_settings(make_settings, api_port=0)
    with writer_store(settings, batches=1) as (con, _), StoreService(con, settings) as service:
        pg = service.pg
        assert pg is not None and pg.pid is not None
        # Sessions open, so the threads that serve clients are there too.
        with psycopg.connect(conninfo(pg, settings)) as conn:
            assert conn.execute("SELECT count(*) FROM pipeline_metrics").fetchone() == (1,)
            assert httpx.get(f"{service.api.url}/health", timeout=10).status_code == 200
            for what, pid in (("endpoint", pg.pid), ("read API", service.api.pid)):
                assert pid != os.getpid()
                assert os.sched_getscheduler(pid) == os.SCHED_IDLE, what
                threads = policies(pid)
                assert len(threads) > 1 and set(threads.values()) == {os.SCHED_IDLE}, (what, threads)
        # The writer's own threads keep the ordinary policy: only what serves clients yields.
        assert os.sched_getscheduler(0) == os.SCHED_OTHER


@pytest.mark.integration
def test_killing_the_writer_takes_the_endpoints_process_with_it(make_settings):
    settings = store_settings(make_settings, pg_password=PASSWORD)
    with writer_process(settings) as endpoint:
        with psycopg.connect(conninfo(endpoint, settings)) as conn:
            assert conn.execute("SELECT count(*) FROM pipeline_metrics").fetchone() == (3,)
        assert alive(endpoint.pid)
        endpoint.writer.send_signal(signal.SIGKILL)
        endpoint.writer.wait(10)
        # No orphan: its stdin's other end died with the writer.
        assert gone_within(endpoint.pid, 5), "the endpoint's process outlived a killed writer"


@pytest.mark.integration
def test_a_hostile_clients_memory_is_the_endpoints_process_not_the_writers(make_settings):
    """Prepared statements a client piles up (here ~70 MB of them) cost the endpoint's process."""
    settings = store_settings(make_settings, pg_password=PASSWORD)
    with writer_process(settings) as endpoint:
        with psycopg.connect(conninfo(endpoint, settings)) as warm:
            warm.execute("SELECT count(*) FROM pipeline_metrics").fetchone()
        time.sleep(0.5)
        before = {"writer": rss_mb(endpoint.writer.pid), "endpoint": rss_mb(endpoint.pid)}
        filler = " -- " + "x" * 14_000
        conns = [psycopg.connect(conninfo(endpoint, settings), autocommit=True) for _ in range(5)]
        try:
            for c, conn in enumerate(conns):
                for i in range(1000):
                    conn.pgconn.prepare(f"s{i}".encode(), f"SELECT {c * 1000 + i}{filler}".encode())
            after = {"writer": rss_mb(endpoint.writer.pid), "endpoint": rss_mb(endpoint.pid)}
        finally:
            for conn in conns:
                conn.close()
    grown = {k: after[k] - before[k] for k in before}
    assert grown["endpoint"] > 50, f"the endpoint's process did not hold the statements: {grown} MB"
    assert grown["writer"] < 10, (
        f"the writer's process grew with a PostgreSQL client's statements: {grown} MB"
    )


@pytest.mark.integration
def test_over_its_memory_bound_the_endpoints_process_leaves_and_the_writer_starts_it_again(
    make_settings, caplog
):
    settings = pg_settings(make_settings, api_port=0, pg_memory_limit="256MiB")
    filler = " -- " + "x" * 14_000
    with writer_store(settings, batches=2) as (con, _):
        service = StoreService(con, settings).start()
        try:
            pg = service.pg
            assert pg is not None
            first = pg.pid
            conns = [psycopg.connect(conninfo(pg, settings), autocommit=True) for _ in range(12)]
            try:
                for c, conn in enumerate(conns):
                    for i in range(1000):
                        try:
                            conn.pgconn.prepare(f"s{i}".encode(), f"SELECT {c}{filler}".encode())
                        except psycopg.OperationalError:
                            break  # dropped: the process left
            finally:
                for conn in conns:
                    conn.close()
            deadline = time.monotonic() + 30
            while (pg.restarts == 0 or pg.pid == first) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert pg.restarts >= 1 and pg.pid != first and not alive(first)
            if sys.platform == "linux":  # the new process serves on idle CPU time as the first did
                assert os.sched_getscheduler(pg.pid) == os.SCHED_IDLE
            # Started again on the same port: a new client is served as before.
            with psycopg.connect(conninfo(pg, settings)) as conn:
                assert conn.execute("SELECT count(*) FROM pipeline_metrics").fetchone() == (2,)
        finally:
            service.stop()
    assert "starting it again" in caplog.text

"""The PostgreSQL endpoint against hostile clients: real sockets, psql and psycopg on a DuckDB file.

Every stage a client can hold is bounded (start-up and authentication, idle sessions, statements,
connections per address), nothing is buffered or parsed before its size is checked, no path, PID
or engine setting is readable, sleeps are refused, and malformed bytes get an ErrorResponse and
one log line, never a traceback.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg
import pytest
from psycopg.pq import DiagnosticField

from kit.pg import conninfo, endpoint, pg_settings, psql
from kit.store import serving, writer_store
from sensorstream.reads.watchdog import rss
from sensorstream.serve import api as api_module
from sensorstream.serve.pgwire import codec
from sensorstream.serve.pgwire import server as pgwire_server
from sensorstream.serve.pgwire import session as pgwire_session
from sensorstream.serve.pgwire.translate import to_duckdb

pytestmark = pytest.mark.integration


# --- raw protocol ----------------------------------------------------------------------------------
def startup_packet(user: bytes = b"sensorstream", code: int = codec.PROTOCOL_3_0) -> bytes:
    body = struct.pack("!i", code) + b"user\x00" + user + b"\x00database\x00sensorstream\x00\x00"
    return struct.pack("!i", len(body) + 4) + body


def raw_message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def read_until_error(sock: socket.socket, timeout: float = 3.0) -> dict[str, str]:
    """The fields of the first ErrorResponse (skipping other messages); {} if the server closed first."""
    sock.settimeout(timeout)
    data = b""
    while True:
        while len(data) >= 5:
            kind, (length,) = data[:1], struct.unpack_from("!i", data, 1)
            if len(data) < 1 + length:
                break
            body, data = data[5 : 1 + length], data[1 + length :]
            if kind == b"E":
                fields = [f for f in body.split(b"\x00") if f]
                return {chr(f[0]): f[1:].decode() for f in fields}
        chunk = sock.recv(65536)
        if not chunk:
            return {}
        data += chunk


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


@contextmanager
def sockets(server, count: int, first: bytes = b"", source: str = "") -> Iterator[list[socket.socket]]:
    """``count`` connections (from ``source``, another loopback address, if given)."""
    where = (source, 0) if source else None
    opened = [
        socket.create_connection((server.host, server.port), source_address=where) for _ in range(count)
    ]
    try:
        for sock in opened:
            if first:
                sock.sendall(first)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def raw_socket_of(conn: psycopg.Connection) -> socket.socket:
    """The authenticated connection's own socket, to send it bytes no driver would."""
    return socket.socket(fileno=os.dup(conn.pgconn.socket))


def sqlstate(result) -> str:
    return (result.error_field(DiagnosticField.SQLSTATE) or b"").decode()


@pytest.fixture
def served(make_settings):
    def serve(**overrides):
        settings = pg_settings(make_settings, **overrides)
        stack = writer_store(settings, batches=2)
        con, _ = stack.__enter__()
        ep = endpoint(con, settings)
        server = ep.__enter__()
        opened.append((stack, ep))
        return server, settings, con

    opened: list = []
    yield serve
    for stack, ep in reversed(opened):
        ep.__exit__(None, None, None)
        stack.__exit__(None, None, None)


# --- 1. no lock-out before authentication ----------------------------------------------------------
def test_silent_sockets_neither_take_the_slots_nor_outlive_the_deadline(served):
    server, settings, _ = served(pg_auth_timeout=2.0, pg_max_authenticating=8)
    # 40 connections that send a start-up packet and never answer the SCRAM challenge, and 8 that
    # send nothing at all: more than every slot.
    with sockets(server, 40, startup_packet()) as silent, sockets(server, 8) as mute:
        time.sleep(0.3)
        assert len(server.backend.authenticating) <= 8
        t0 = time.monotonic()
        with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pipeline_metrics").fetchone() == (2,)
        assert time.monotonic() - t0 < 1.0, "a client waited for the silent sockets"
        done = psql(server, settings, "SELECT count(*) FROM pipeline_metrics")
        assert done.returncode == 0 and " 2" in done.stdout, done.stderr
        # Every silent socket is gone at the deadline (most sooner: dropped for newer ones).
        t0 = time.monotonic()
        assert all(closed_by_server(s, 2.0 + 1.0 - (time.monotonic() - t0)) for s in silent + mute)
    assert not server.backend.authenticating and not server.backend.sessions


def test_a_flood_from_one_address_drops_its_own_sockets_not_another_addresss(served):
    server, _, _ = served(pg_auth_timeout=3.0, pg_max_authenticating=8)
    with sockets(server, 3, startup_packet(), source="127.0.0.3") as slow:
        time.sleep(0.2)
        with sockets(server, 40, startup_packet(), source="127.0.0.2") as flood:
            time.sleep(0.5)
            assert not any(closed_by_server(s, 0.05) for s in slow), "another address's client was dropped"
            dropped = [s for s in flood if closed_by_server(s, 0.05)]
            assert len(dropped) >= 40 - 5


def test_sessions_per_address_are_limited_and_idle_ones_give_their_slot_back(served):
    server, settings, _ = served(pg_max_connections_per_address=2, pg_idle_timeout=0.5)
    first = psycopg.connect(conninfo(server, settings), autocommit=True)
    second = psycopg.connect(conninfo(server, settings), autocommit=True)
    with pytest.raises(psycopg.OperationalError, match="SENSORSTREAM_PG_MAX_CONNECTIONS_PER_ADDRESS"):
        psycopg.connect(conninfo(server, settings)).close()
    time.sleep(0.8)
    for conn in (first, second):
        with pytest.raises(psycopg.OperationalError, match="idle-session timeout"):
            conn.execute("SELECT 1")
        conn.close()
    with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_statement_that_cannot_get_a_thread_is_answered_at_its_deadline(served, monkeypatch):
    # The deadline is the read's limit plus the wait for a free read slot (5 s): both short here.
    monkeypatch.setattr(pgwire_server, "BUSY_WAIT_S", 0.5)
    server, settings, _ = served(pg_workers=1, read_timeout=0.5)
    held = threading.Event()
    server.backend.pool.submit(held.wait, 30)  # the endpoint's one thread, stuck
    try:
        with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
            t0 = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
                conn.execute("SELECT 1")
            assert time.monotonic() - t0 < server.backend.statement_timeout + 1.0
            held.set()
            assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
    finally:
        held.set()


# --- 2. nothing large is buffered before authentication ---------------------------------------------
def test_oversized_messages_before_authentication_are_refused_unread(served):
    server, _, _ = served()
    rss_before = rss() or 0
    with sockets(server, 1, struct.pack("!ii", 64 * 2**20, codec.PROTOCOL_3_0)) as (sock,):
        error = read_until_error(sock)
        assert error["C"] == "08P01" and error["S"] == "FATAL" and "start-up packet length" in error["M"]
        assert closed_by_server(sock, 1.0)
    # A SCRAM first message declared 64 MB: refused from its header, before the body comes.
    with sockets(server, 8, startup_packet()) as socks:
        for sock in socks:
            sock.sendall(b"p" + struct.pack("!i", 64 * 2**20) + b"SCRAM-SHA-256\x00" + b"x" * 60_000)
        for sock in socks:
            error = read_until_error(sock)
            assert error["C"] == "08P01" and "before authentication" in error["M"], error
            assert closed_by_server(sock, 1.0)
    assert (rss() or 0) - rss_before < 64 * 2**20


# --- 3. the size before any parse, and parsing off the loop ----------------------------------------
@pytest.mark.slow  # a measurement: every answer within 0.5 s, which a busy machine's scheduler can miss
def test_a_huge_statement_is_refused_at_once_while_other_clients_answer(served, monkeypatch):
    monkeypatch.setattr(pgwire_session, "REFUSAL_PAUSE_S", 0.0)  # the refusal's own cost, not its pause
    server, settings, _ = served()
    huge = "SELECT " + " + ".join(["(1 * 2)"] * 30_000)  # 270 KB; sqlglot took seconds on such text
    stop = threading.Event()
    latencies: list[float] = []

    def other_client() -> None:
        with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
            while not stop.is_set():
                t0 = time.monotonic()
                conn.execute("SELECT count(*) FROM pipeline_metrics").fetchone()
                latencies.append(time.monotonic() - t0)

    other = threading.Thread(target=other_client)
    other.start()
    try:
        with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
            deadline = time.monotonic() + 2.0
            sends = 0
            while time.monotonic() < deadline or sends < 4:
                sends += 1
                t0 = time.monotonic()
                if sends % 2:
                    result = conn.pgconn.exec_(huge.encode())
                    state, text = sqlstate(result), result.error_message.decode()
                else:
                    with pytest.raises(psycopg.Error) as caught:
                        conn.execute(huge)
                    state, text = caught.value.sqlstate, str(caught.value)
                assert time.monotonic() - t0 < 0.5, sends
                assert state == "54000" and "SENSORSTREAM_READ_MAX_SQL_BYTES" in text, text
                time.sleep(0.05)  # a steady stream of them, not a flood of bytes
            # Far beyond the buffer (read in chunks and dropped), and the session goes on.
            result = conn.pgconn.exec_(("SELECT '" + "x" * 3_000_000 + "'").encode())
            assert sqlstate(result) == "54000"
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stop.set()
        other.join(10)
    assert len(latencies) > 5 and max(latencies) < 0.5, max(latencies)


# --- 4. placeholders ---------------------------------------------------------------------------------
def test_placeholders_beyond_the_protocols_limit_are_refused(served, monkeypatch):
    monkeypatch.setattr(pgwire_session, "REFUSAL_PAUSE_S", 0.0)  # the refusal's own cost, not its pause
    server, settings, _ = served()
    with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
        rss_before = rss() or 0
        for text in ("SELECT $2000000000", "SELECT $65536", "SELECT $" + "9" * 5000):
            t0 = time.monotonic()
            result = conn.pgconn.prepare(b"", text.encode())
            assert sqlstate(result) == "54000", result.error_message
            assert b"at most 65,535 parameters" in result.error_message
            assert time.monotonic() - t0 < 1.0
        assert (rss() or 0) - rss_before < 64 * 2**20
        assert conn.execute("SELECT %s::int + 1", [41]).fetchone() == (42,)


# --- 5. session settings and the translation cache ---------------------------------------------------
def test_session_settings_are_bounded_and_memory_stays_flat(served):
    server, settings, _ = served()
    with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
        n = 0
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="at most 64 settings"):
            for n in range(100):
                conn.execute(f"SET setting_{n} = 'v'")
        assert 60 <= n < 64
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="value may be at most"):
            conn.execute("SET application_name = '" + "x" * 10_000 + "'")
        # Changing values (each a new key of the translation cache) with queries that translate:
        # more of them than the cache holds.
        rss_before, misses = rss() or 0, to_duckdb.cache_info().misses
        for i in range(to_duckdb.cache_info().maxsize + 100):
            conn.execute(f"SET setting_1 = '{i:0>250}'")
            conn.execute("SELECT version(), current_setting('setting_1')").fetchone()
        assert to_duckdb.cache_info().misses - misses > to_duckdb.cache_info().maxsize
        grown = (rss() or 0) - rss_before
        assert grown < 64 * 2**20, f"{grown / 2**20:.0f} MB"
        assert conn.execute("SHOW application_name").fetchone() is not None


def test_custom_settings_are_kept_apart_by_their_dotted_names_and_count_against_the_bound(served):
    """PostgreSQL keeps ``my.a`` and ``my.b`` apart; read as one name (``my``), a client could set
    any number of them without reaching the bound, each answered at once."""
    server, settings, _ = served()
    with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
        conn.execute("SET my.a = 'one'")
        conn.execute("SET SESSION my.b TO 'two'")
        assert conn.execute("SHOW my.a").fetchone() == ("one",)
        assert conn.execute("SHOW my.b").fetchone() == ("two",)
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="at most 64 settings"):
            for n in range(100):
                conn.execute(f"SET my.setting_{n} = 'v'")


# --- 6. no path, PID or engine setting ---------------------------------------------------------------
LEAKY = [
    "SELECT * FROM pragma_database_list",
    "SELECT * FROM duckdb_databases()",
    "FROM duckdb_databases",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_logs",
    "SELECT current_setting('temp_directory')",
    "SELECT * FROM pg_settings",
    "SELECT * FROM information_schema.schemata",
    "SELECT * FROM pg_catalog.pg_database",
]


def test_no_path_pid_or_engine_setting_is_readable_over_postgres_or_http(served, monkeypatch):
    # The API's pause before it answers a refusal has its own test: here it would add 0.2 s a statement.
    monkeypatch.setattr(api_module, "REFUSAL_PAUSE_S", 0.0)
    server, settings, con = served(api_port=0)
    directory = str(settings.db.parent)
    with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
        for sql in LEAKY:
            try:
                answer = str(conn.execute(sql).fetchall())
            except psycopg.Error as exc:
                assert exc.sqlstate == "42501", (sql, exc)
                answer = str(exc)
            assert directory not in answer, sql
        for sql in ("SELECT * FROM pragma_database_list", "SELECT * FROM duckdb_databases()"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        keys = [conn.info.backend_pid]
        with psycopg.connect(conninfo(server, settings)) as other:
            keys.append(other.info.backend_pid)
    # The key names no process: neither the OS PID nor a count from it.
    assert all(k // 100 != os.getpid() and k != os.getpid() for k in keys) and abs(keys[1] - keys[0]) > 1
    with serving(con, settings) as api, httpx.Client(base_url=api.url, timeout=30) as http:
        for sql in LEAKY:
            answer = http.post("/sql", json={"sql": sql})
            assert directory not in answer.text, sql
        refused = http.post("/sql", json={"sql": "SELECT * FROM pragma_database_list"})
        assert refused.status_code == 400 and refused.json()["sqlstate"] == "42501"


# --- 7. malformed bytes get an ErrorResponse and one line ----------------------------------------------
def test_malformed_bytes_get_an_error_response_and_one_log_line(served, caplog):
    server, settings, _ = served()
    caplog.set_level(logging.INFO)
    bad_startups = [
        struct.pack("!ii", 12, 0x12345678) + b"\x00\x00\x00\x00",  # 12 bytes, no protocol of ours
        struct.pack("!i", 3),  # a length shorter than itself
        startup_packet(user=b"\xff\xfe"),  # invalid UTF-8
    ]
    for packet in bad_startups:
        with sockets(server, 1, packet) as (sock,):
            error = read_until_error(sock)
            assert error["C"] == "08P01" and error["S"] == "FATAL", (packet, error)
            assert closed_by_server(sock, 1.0)
    # After authentication: a Bind shorter than its fields, on a driver's own socket.
    with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
        sock = raw_socket_of(conn)
        sock.sendall(raw_message(b"P", b"\x00SELECT 1\x00\x00\x00") + raw_message(b"B", b"\x00\x00\x00\x05"))
        error = read_until_error(sock)
        assert error["C"] == "08P01" and "invalid message format" in error["M"], error
        sock.close()
    with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
        result = conn.pgconn.exec_(b"SELECT '\xff\xfe'")
        assert sqlstate(result) == "22021" and b"UTF8" in result.error_message
        with pytest.raises(psycopg.errors.DatetimeFieldOverflow, match="294000"):
            conn.execute("SELECT '294000-01-01'::date")
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
    time.sleep(0.2)
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)
    closed = [r for r in caplog.records if "postgres endpoint: closed" in r.getMessage()]
    assert len(closed) == 4 and all("\n" not in r.getMessage() for r in closed), caplog.text


# --- 8. sleeps ---------------------------------------------------------------------------------------------
def test_sleeps_are_refused_with_a_sentence(served, monkeypatch):
    monkeypatch.setattr(pgwire_session, "REFUSAL_PAUSE_S", 0.0)  # the refusal's own cost, not its pause
    server, settings, _ = served()
    with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
        for sql in ("SELECT pg_sleep(5)", "SELECT sleep_ms(5000)", "SELECT pg_catalog.pg_sleep(1)"):
            t0 = time.monotonic()
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="read slots"):
                conn.execute(sql)
            assert time.monotonic() - t0 < 1.0


def test_a_second_bind_to_a_named_portal_is_refused_as_postgres_does(served):
    server, settings, _ = served()
    with psycopg.connect(conninfo(server, settings)) as conn:
        conn.execute("BEGIN")  # a named portal lives until the transaction ends
        sock = raw_socket_of(conn)
        parse = raw_message(b"P", b"\x00SELECT 1\x00\x00\x00")
        bind = raw_message(b"B", b"kept\x00\x00" + struct.pack("!hhh", 0, 0, 0))
        sock.sendall(parse + bind + bind + raw_message(b"S", b""))
        error = read_until_error(sock)
        sock.close()
    assert error.get("C") == "42P03", error
    assert error["M"] == 'portal "kept" already exists'


def test_a_refusal_is_answered_after_a_pause_that_holds_no_thread_and_an_ordinary_error_at_once(
    served, monkeypatch
):
    """As the HTTP API answers its refusals: a client that sends its next statement the moment it
    is refused sends a few a second, not hundreds. Unknown tables and functions, which drivers
    meet while they look around, are answered at once."""
    server, settings, _ = served()
    # A longer pause than the real one, so that a loaded machine's own delays cannot blur a
    # paused answer with one at once, nor overlapping pauses with one after another.
    pause = 1.0
    monkeypatch.setattr(pgwire_session, "REFUSAL_PAUSE_S", pause)
    with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
        for sql, refusal in (
            ("SELECT getenv('HOME')", psycopg.errors.InsufficientPrivilege),
            ("SELECT 1 -- " + "x" * 20_000, psycopg.errors.ProgramLimitExceeded),
        ):
            t0 = time.monotonic()
            with pytest.raises(refusal):
                conn.execute(sql)
            assert time.monotonic() - t0 >= pause
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table")
        assert time.monotonic() - t0 < pause
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
    # Three times as many refused clients at once as the endpoint has threads: their pauses
    # overlap (a pause that held a thread would make it three pauses in all).
    clients = [
        psycopg.connect(conninfo(server, settings), autocommit=True) for _ in range(3 * settings.pg_workers)
    ]
    try:
        go = threading.Barrier(len(clients) + 1)
        took: list[float] = []

        def refused(conn: psycopg.Connection) -> None:
            go.wait()
            t0 = time.monotonic()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT pg_sleep(1)")
            took.append(time.monotonic() - t0)

        threads = [threading.Thread(target=refused, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        started = time.monotonic()
        go.wait()
        for t in threads:
            t.join(10)
        assert len(took) == len(clients) and min(took) >= pause
        assert time.monotonic() - started < 2.5 * pause, took
    finally:
        for c in clients:
            c.close()

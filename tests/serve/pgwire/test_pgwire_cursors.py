"""Large answers through the PostgreSQL endpoint, with the real drivers: portal suspension (asyncpg's
cursors, pgJDBC's fetch size), DECLARE/FETCH/MOVE/CLOSE (psycopg's named cursors), COPY TO STDOUT
(psycopg's ``copy``, psql's ``\\copy``) and CancelRequest (psycopg's ``cancel_safe``, asyncpg's
timeout), each within the read limits: past one, the client gets PostgreSQL's SQLSTATE, never a cut
answer. The store is a DuckDB file with a table of ``ROWS`` rows; the endpoint runs in-process on a
``ReadGate`` except in the last test, where the writer's ``StoreService`` runs it in its own process.
"""

from __future__ import annotations

import asyncio
import csv
import io
import socket
import struct
import threading
import time

import asyncpg
import duckdb
import psycopg
import pytest
from psycopg import errors

from kit.pg import conninfo, endpoint, pg_settings, psql, run_jdbc, url
from kit.store import writer_store
from sensorstream.config import load_settings
from sensorstream.serve.pgwire.extended import ExtendedQuery
from sensorstream.serve.store_service import StoreService

pytestmark = pytest.mark.integration

ROWS = 2500
MAX_ROWS = 3000  # READ_MAX_ROWS here: the table fits, range(MAX_ROWS + 1) does not
SLOW = "SELECT count(*) FROM range(100000000) AS a, range(1000) AS b"  # minutes, unless stopped


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("pgcursor")
    settings = pg_settings(
        lambda **kw: load_settings(
            data_dir=data, metrics_port=0, pg_port=0, read_timeout=60, read_max_rows=MAX_ROWS,
            read_max_bytes=256 * 1024, **kw,
        )
    )  # fmt: skip
    con = duckdb.connect(str(data / "store.duckdb"))
    con.execute(
        "CREATE TABLE samples AS SELECT range AS id, 'sensor-' || (range % 7) AS sensor, "
        "range / 4.0 AS value, TIMESTAMPTZ '2026-11-26 20:00:00+00' + to_seconds(range) AS at "
        f"FROM range({ROWS})"
    )
    try:
        with endpoint(con, settings) as server:
            yield con, server, settings
    finally:
        con.close()


@pytest.fixture
def conn(served):
    _, server, settings = served
    with psycopg.connect(conninfo(server, settings)) as connection:  # autocommit off: psycopg's BEGIN
        yield connection


# --- cursors: psycopg -----------------------------------------------------------------------------
def test_a_psycopg_named_cursor_streams_the_answer_page_by_page(conn):
    with conn.cursor(name="pages") as cur:
        cur.itersize = 400
        cur.execute("SELECT id, sensor, value, at FROM samples WHERE id < %s ORDER BY id", [ROWS])
        assert cur.fetchmany(3) == [(i, f"sensor-{i % 7}", i / 4, _at(i)) for i in range(3)]
        # The position is the server's: a FETCH on the same connection goes on from row 3.
        assert conn.execute("FETCH 2 FROM pages").fetchall()[0][0] == 3
        assert conn.execute("MOVE FORWARD 10 IN pages").statusmessage == "MOVE 10"
        rest = list(cur)  # itersize rows per FETCH FORWARD
        assert [row[0] for row in rest] == list(range(15, ROWS))
        assert [d.name for d in cur.description] == ["id", "sensor", "value", "at"]


def _at(i: int):
    import datetime as dt

    return dt.datetime(2026, 11, 26, 20, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=i)


def test_binary_and_scrollable_cursors_move_as_postgres_does(conn):
    with conn.cursor(name="bin", binary=True, scrollable=True) as cur:
        cur.execute("SELECT id, value FROM samples WHERE id < 10 ORDER BY id")
        assert cur.fetchone() == (0, 0.0)
        cur.scroll(5, mode="absolute")  # MOVE ABSOLUTE 5: on row 5 (id 4), the next is id 5
        assert cur.fetchone() == (5, 1.25)
        cur.scroll(-3)  # MOVE -3: from row 6 back to row 3 (id 2)
        assert cur.fetchone() == (3, 0.75)
    conn.execute("DECLARE s SCROLL CURSOR FOR SELECT id FROM samples WHERE id < 10 ORDER BY id")
    moves = ["LAST", "PRIOR", "ABSOLUTE 2", "RELATIVE -1", "BACKWARD 5", "FORWARD ALL", "NEXT", "ABSOLUTE -3"]
    fetched = [conn.execute(f"FETCH {move} FROM s").fetchall() for move in moves]
    assert fetched == [[(9,)], [(8,)], [(1,)], [(0,)], [], [(i,) for i in range(10)], [], [(7,)]]
    conn.execute("DECLARE f NO SCROLL CURSOR FOR SELECT id FROM samples")
    conn.execute("FETCH 2 FROM f")
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="only scan forward"):
        conn.execute("FETCH PRIOR FROM f")


def test_cursors_live_as_long_as_postgres_keeps_them(served):
    _, server, settings = served
    with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
        with pytest.raises(errors.NoActiveSqlTransaction, match="only be used in transaction blocks"):
            conn.execute("DECLARE c CURSOR FOR SELECT 1")
        # WITH HOLD outlives its transaction (here the statement's own).
        conn.execute("DECLARE held CURSOR WITH HOLD FOR SELECT id FROM samples ORDER BY id")
        assert conn.execute("FETCH 2 FROM held").fetchall() == [(0,), (1,)]
        assert conn.execute("FETCH 1 FROM held").statusmessage == "FETCH 1"
        # In one Query message, statements share an implicit block: a cursor lives until its end.
        assert conn.pgconn.exec_(b"DECLARE i CURSOR FOR SELECT 7; FETCH ALL FROM i").get_value(0, 0) == b"7"
        with pytest.raises(errors.InvalidCursorName, match='cursor "i" does not exist'):
            conn.execute("FETCH i")
        with conn.transaction():
            conn.execute("DECLARE inner_c CURSOR FOR SELECT 1")
            with pytest.raises(errors.DuplicateCursor):
                conn.execute("DECLARE inner_c CURSOR FOR SELECT 2")
        with pytest.raises(errors.InvalidCursorName):
            conn.execute("FETCH inner_c")  # gone with its block (the error ended it too)
        conn.execute("BEGIN")
        conn.execute("DECLARE rolled CURSOR WITH HOLD FOR SELECT 1")
        conn.execute("ROLLBACK")  # a rolled-back block takes even its WITH HOLD cursors
        with pytest.raises(errors.InvalidCursorName):
            conn.execute("CLOSE rolled")
        assert conn.execute("FETCH 1 FROM held").fetchall() == [(3,)]
        conn.execute("CLOSE held")
        with pytest.raises(errors.InvalidCursorName):
            conn.execute("FETCH held")
        conn.execute("CLOSE ALL")  # asyncpg's pool sends it on release


def test_cursors_and_portals_are_bounded_with_postgres_sqlstates(served):
    _, server, settings = served
    with psycopg.connect(conninfo(server, settings)) as conn:
        # Over READ_MAX_ROWS: the DECLARE fails, the answer is never cut.
        with pytest.raises(errors.ProgramLimitExceeded, match="SENSORSTREAM_READ_MAX_ROWS"):
            conn.execute(f"DECLARE big CURSOR FOR SELECT * FROM range({MAX_ROWS + 1})")
        conn.rollback()
        # A connection's open answers: twice READ_MAX_BYTES (512 KB here), then 54000.
        with pytest.raises(errors.ProgramLimitExceeded, match="twice SENSORSTREAM_READ_MAX_BYTES"):
            for i in range(10):
                conn.execute(f"DECLARE wide{i} CURSOR FOR SELECT repeat('x', 60) FROM range({MAX_ROWS})")
        assert i >= 2
        conn.rollback()
        assert server.backend.held.held == 0  # the block's cursors went with it
        # And a count: 64 portals and cursors per connection.
        with pytest.raises(errors.ProgramLimitExceeded, match="at most 64 open portals and cursors"):
            for i in range(65):
                conn.execute(f"DECLARE n{i} CURSOR FOR SELECT {i}")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM samples").fetchone() == (ROWS,)
        conn.execute(f"DECLARE kept CURSOR FOR SELECT * FROM range({MAX_ROWS})")
        assert server.backend.held.held > 0
    # ROLLBACK, Sync and the end of a session give back what their portals and cursors held.
    assert server.backend.held.held == 0


# --- portal suspension: asyncpg, pgJDBC -----------------------------------------------------------
@pytest.fixture
def executes(monkeypatch) -> list[int]:
    """The row count of every Execute message the endpoint gets (0: all rows)."""
    seen: list[int] = []
    original = ExtendedQuery._execute

    async def spy(self, msg):
        end = msg.data.index(b"\0", msg.pos)  # after the portal's name
        seen.append(struct.unpack_from("!i", msg.data, end + 1)[0])
        await original(self, msg)

    monkeypatch.setattr(ExtendedQuery, "_execute", spy)
    return seen


def test_asyncpg_cursor_pages_through_a_suspended_portal(served, executes):
    _, server, settings = served

    async def run() -> tuple[list[int], list[int], int]:
        conn = await asyncpg.connect(url(server, settings))
        try:
            async with conn.transaction():
                # Bind to a named portal, then Execute with a row count: PortalSuspended between pages.
                cursor = await conn.cursor("SELECT id FROM samples WHERE id >= $1 ORDER BY id", 100)
                first = [r["id"] for r in await cursor.fetch(5)]
                await cursor.forward(10)
                second = [r["id"] for r in await cursor.fetch(3)]
                streamed = [
                    r["id"] async for r in conn.cursor("SELECT id FROM samples ORDER BY id", prefetch=300)
                ]
            return first, second, len(streamed) if streamed == list(range(ROWS)) else -1
        finally:
            await conn.close()

    first, second, streamed = asyncio.run(run())
    assert first == [100, 101, 102, 103, 104] and second == [115, 116, 117]
    assert streamed == ROWS
    assert executes.count(300) >= ROWS // 300  # page by page, each a PortalSuspended but the last


@pytest.mark.jvm
def test_jdbc_fetch_size_pages_and_query_timeout_cancels(served, executes):
    _, server, settings = served
    facts = {line[0]: line[1:] for line in run_jdbc(server, settings, "100", SLOW, program="JdbcFetch")}
    assert facts["paged"] == [str(ROWS), str(sum(range(ROWS)))]
    assert executes.count(100) >= ROWS // 100
    state, millis, message = facts["timeout"]
    assert state == "57014" and "user request" in message and int(millis) < 5000
    assert facts["after"] == [str(ROWS)]


# --- COPY TO STDOUT -------------------------------------------------------------------------------
def test_psycopg_copy_reads_postgres_text_and_csv(conn):
    special = (
        "SELECT 1 AS n, E'tab\\there' AS t, E'line\\nbreak' AS l, 'back\\slash' AS b, NULL AS z, '' AS e"
    )
    with conn.cursor().copy(f"COPY ({special}) TO STDOUT") as copy:
        assert list(copy.rows()) == [("1", "tab\there", "line\nbreak", "back\\slash", None, "")]
    with conn.cursor().copy(f"COPY ({special}) TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
        text = b"".join(bytes(chunk) for chunk in copy).decode()
    # PostgreSQL's CSV: quoted only where needed, an empty string quoted, NULL as nothing.
    assert text == 'n,t,l,b,z,e\n1,tab\there,"line\nbreak",back\\slash,,""\n'
    cur = conn.cursor()
    with cur.copy("COPY samples (id, sensor) TO STDOUT WITH CSV DELIMITER ';'") as copy:
        lines = b"".join(bytes(chunk) for chunk in copy).decode().splitlines()
    assert cur.rowcount == ROWS and len(lines) == ROWS  # from CommandComplete "COPY 2500"
    assert sorted(lines, key=lambda line: int(line.split(";")[0]))[:2] == ["0;sensor-0", "1;sensor-1"]


def test_psql_backslash_copy_writes_a_file(served, tmp_path):
    con, server, settings = served
    target = tmp_path / "samples.csv"
    query = "select id, value, at from samples where id < 50 order by id"
    done = psql(server, settings, rf"\copy ({query}) to '{target}' with csv header")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "COPY 50"
    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert rows[0] == ["id", "value", "at"] and len(rows) == 51
    assert rows[1] == ["0", "0.0", "2026-11-26 20:00:00+00"]
    assert [float(r[1]) for r in rows[1:]] == [
        v for (v,) in con.execute("SELECT value FROM samples WHERE id < 50 ORDER BY id").fetchall()
    ]


@pytest.mark.parametrize(
    ("sql", "sqlstate", "words"),
    [
        ("COPY samples FROM STDIN", "25006", "read-only transaction"),
        ("COPY samples TO '/tmp/x.csv'", "42501", "pg_write_server_files"),
        ("COPY (SELECT 1) TO PROGRAM 'cat'", "42501", "pg_execute_server_program"),
        ("COPY samples TO STDOUT (FORMAT binary)", "0A000", "binary"),
        ("COPY samples TO STDOUT (DELIMITER '||')", "0A000", "single one-byte character"),
        ("COPY samples TO STDOUT (BOGUS 1)", "42601", 'option "bogus" not recognized'),
        (f"COPY (SELECT * FROM range({MAX_ROWS + 1})) TO STDOUT", "54000", "SENSORSTREAM_READ_MAX_ROWS"),
        ("COPY (DELETE FROM samples) TO STDOUT", "25006", ""),
    ],
)
def test_copy_that_would_write_or_reach_files_is_refused(served, conn, sql, sqlstate, words):
    con, _, _ = served
    with pytest.raises(psycopg.Error) as caught, conn.cursor().copy(sql) as copy:
        list(copy)
    assert caught.value.sqlstate == sqlstate and words in str(caught.value), str(caught.value)
    assert con.execute("SELECT count(*) FROM samples").fetchone() == (ROWS,)


# --- CancelRequest ---------------------------------------------------------------------------------
def _cancel_request(server, pid: int, secret: int) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(struct.pack("!iiii", 16, 80877102, pid, secret))
        assert sock.recv(1) == b""  # no answer, as PostgreSQL: the connection just closes


def test_cancel_stops_the_running_read_and_a_wrong_key_does_not(served):
    _, server, settings = served
    with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
        done: dict[str, object] = {}

        def slow() -> None:
            started = time.monotonic()
            try:
                conn.execute(SLOW)
            except psycopg.Error as exc:
                done["error"] = exc
            done["seconds"] = time.monotonic() - started

        runner = threading.Thread(target=slow)
        runner.start()
        time.sleep(1.0)
        pid, secret = conn.pgconn.backend_pid, None
        session = next(s for s in server.backend.sessions if s.pid == pid)
        secret = session.secret
        _cancel_request(server, pid, (secret + 1) % 2**31)  # wrong key: ignored
        _cancel_request(server, pid + 1, secret)
        time.sleep(1.0)
        assert runner.is_alive(), "a CancelRequest with the wrong key stopped the query"
        conn.cancel_safe()  # libpq's CancelRequest with the right key
        runner.join(10)
        assert not runner.is_alive()
        error = done["error"]
        assert isinstance(error, errors.QueryCanceled) and error.sqlstate == "57014"
        assert "canceling statement due to user request" in str(error)
        assert done["seconds"] < 6  # 2 s of waiting, then the interrupt
        assert conn.execute("SELECT count(*) FROM samples").fetchone() == (ROWS,)  # the session goes on


def test_asyncpg_timeout_cancels_and_the_connection_is_reused(served):
    _, server, settings = served

    async def run() -> tuple[float, int]:
        conn = await asyncpg.connect(url(server, settings))
        try:
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetchval(SLOW, timeout=0.5)  # asyncpg sends a CancelRequest, then waits
            return time.monotonic() - started, await conn.fetchval("SELECT count(*) FROM samples")
        finally:
            await conn.close()

    seconds, count = asyncio.run(run())
    assert seconds < 5 and count == ROWS


def test_show_statement_timeout_reports_the_endpoints_deadline(conn):
    # SENSORSTREAM_READ_TIMEOUT (60 s here) plus 5 s for a free read slot.
    assert conn.execute("SHOW statement_timeout").fetchone() == ("65s",)
    assert conn.execute("SELECT current_setting('statement_timeout')").fetchone() == ("65s",)
    assert conn.execute(
        "SELECT setting, unit FROM pg_settings WHERE name = 'statement_timeout'"
    ).fetchone() == ("65000", "ms")
    assert conn.execute("SHOW idle_session_timeout").fetchone() == ("30min",)


def test_a_sessions_own_statement_timeout_cancels_its_read(served):
    _, server, settings = served
    with psycopg.connect(conninfo(server, settings), autocommit=True) as conn:
        conn.execute("SET statement_timeout = '1500ms'")  # tighter than the endpoint's: it holds
        assert conn.execute("SHOW statement_timeout").fetchone() == ("1500ms",)
        started = time.monotonic()
        with pytest.raises(errors.QueryCanceled, match=r"statement timeout|interrupted after 1\.5 s"):
            conn.execute(SLOW)
        assert time.monotonic() - started < 5
        conn.execute("SET statement_timeout = 600000")  # looser: the endpoint's deadline stays
        assert conn.execute("SHOW statement_timeout").fetchone() == ("65s",)
        with pytest.raises(errors.InvalidParameterValue):
            conn.execute("SET statement_timeout = 'soon'")
        assert conn.execute("SELECT count(*) FROM samples").fetchone() == (ROWS,)


# --- through the endpoint's own process -----------------------------------------------------------
@pytest.mark.process
def test_cancel_and_cursors_through_the_endpoints_own_process(make_settings):
    settings = pg_settings(make_settings, api_port=0, read_timeout=60)
    with writer_store(settings, batches=2) as (con, _):
        service = StoreService(con, settings).start()
        try:
            pg = service.pg
            assert pg is not None
            with psycopg.connect(conninfo(pg, settings)) as conn:
                with conn.cursor(name="metrics") as cur:
                    cur.itersize = 1
                    cur.execute("SELECT batch_id FROM pipeline_metrics ORDER BY batch_id")
                    assert [row[0] for row in cur] == [0, 1]
                conn.rollback()
                threading.Timer(1.0, conn.cancel_safe).start()
                started = time.monotonic()
                with pytest.raises(errors.QueryCanceled, match="due to user request"):
                    conn.execute(SLOW)
                assert time.monotonic() - started < 6
                conn.rollback()
                # The writer's read slot came back: the next read is served at once.
                assert conn.execute("SELECT count(*) FROM pipeline_metrics").fetchone() == (2,)
        finally:
            service.stop()

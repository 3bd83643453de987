"""Every hostile PostgreSQL client at once, in a process of its own, until SIGTERM.

One thread per kind of client, each round and round: silent sockets that never authenticate,
oversized messages before authentication, malformed packets (bad lengths, invalid UTF-8, junk),
and over authenticated psycopg sessions 200 KB statements, huge placeholders, ``SET`` churn, sleep
functions, queries after the store's path, PID and settings, plus an ordinary heavy-ish reader.
A right answer is a refusal with a SQLSTATE (or a dropped connection before authentication, within
the start-up deadline); an answer that leaks the store's path, a hang or a success of a refused
statement is a *problem*. The ``hostile-pg`` fault scenario runs it during its hostile phases.

The process runs ``SCHED_IDLE`` (``reads.priority.idle_process``; nice 19 elsewhere than Linux): a hostile
client is on another machine, and its own Python work (its sockets, psycopg, building 200 KB
statements) is not the server's to pay for. On the scenario's one machine it would otherwise
take the cores the writer needs, and the figure would measure the attacker's CPU, not what it
does to the endpoint. It sends the same requests: each waits for the endpoint's answer, so its
pace is the endpoint's, and its own work needs a small share of a core that an idle machine has.

Run: ``python -m sensorstream.tools.faults.pg_attacks HOST:PORT OUT.json PASSWORD STORE_DIR``.
"""

from __future__ import annotations

import contextlib
import json
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from sensorstream.reads.priority import idle_process

SILENT_SOCKETS = 40
# Connections made before authentication come from another loopback address, as from another
# host: the endpoint drops the crowding address's own sockets, so a flood sent from the psql
# probe's own address (127.0.0.1) would only measure that one address cannot be told apart.
FROM = ("127.0.0.2", 0)
RECONNECT_PAUSE_S = 0.5  # a dropped silent socket comes back after this
PREAUTH_ANSWER_S = 10.0  # the start-up deadline (5 s) and some: longer is a hang
PROTOCOL = 196608  # 3.0

# (name, SQL): each must be refused with a SQLSTATE, never answered.
REFUSED: tuple[tuple[str, str], ...] = (
    ("200 KB statement", "SELECT 1 -- " + "x" * 200_000),
    ("200 KB literal", "SELECT '" + "y" * 200_000 + "'"),
    ("huge placeholder", "SELECT $2000000000"),
    ("pg_sleep", "SELECT pg_sleep(5)"),
    ("sleep_ms", "SELECT sleep_ms(5000)"),
    ("pragma_database_list", "SELECT * FROM pragma_database_list"),
    ("duckdb_databases", "SELECT path FROM duckdb_databases()"),
    ("duckdb_settings", "SELECT * FROM duckdb_settings()"),
    ("getenv", "SELECT getenv('HOME')"),
    ("read a file", "SELECT * FROM read_csv('/etc/passwd')"),
)
# Answered or refused, as long as nothing in the answer names the store's directory.
LEAKY = (
    ("current_setting", "SELECT current_setting('memory_limit')"),
    ("pg_settings", "SELECT * FROM pg_catalog.pg_settings"),
    ("pg_backend_pid", "SELECT pg_backend_pid()"),
    ("version", "SELECT version()"),
    ("pg_database", "SELECT * FROM pg_catalog.pg_database"),
)
HEAVY = (
    "SELECT sensor_id, count(*) AS n, avg(value) AS mean FROM readings GROUP BY 1 ORDER BY 2 DESC LIMIT 20"
)


def _startup(params: dict[bytes, bytes]) -> bytes:
    body = struct.pack("!I", PROTOCOL) + b"".join(k + b"\0" + v + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


# Raw packets sent before authentication: each must end in an ErrorResponse or a closed socket.
MALFORMED: tuple[tuple[str, bytes], ...] = (
    ("100 MB start-up length", struct.pack("!II", 100_000_000, PROTOCOL) + b"u" * 65_536),
    ("2 MB start-up packet", _startup({b"user": b"sensorstream", b"options": b"o" * 2_000_000})),
    ("start-up length 3", struct.pack("!II", 3, PROTOCOL)),
    ("12 random bytes", bytes(range(200, 212))),
    ("invalid UTF-8 user", _startup({b"user": b"\xff\xfe\xfa", b"database": b"\xc3\x28"})),
    ("unknown protocol", struct.pack("!II", 8, 0x00090000)),
    ("SSLRequest then junk", struct.pack("!II", 8, 80877103) + b"\x00" * 64),
    ("no terminator", struct.pack("!II", 21, PROTOCOL) + b"user\0sensorstream"),
)


class Attacks:
    def __init__(self, address: str, password: str, store_dir: str) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host, int(port)
        self.conninfo = (
            f"host={host} port={port} user=sensorstream password={password} dbname=sensorstream "
            "connect_timeout=10"
        )
        self.store_dir = store_dir
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()
        self.problems: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def note(self, name: str, problem: str | None = None) -> None:
        with self._lock:
            self.counts[name] += 1
            if problem:
                self.problems.append((name, problem[:300]))

    # --- before authentication ----------------------------------------------------------------------
    def silent(self) -> None:
        """SILENT_SOCKETS connections that never send a byte, each replaced once the server drops it."""
        socks: dict[socket.socket, float] = {}
        while not self.stop.is_set():
            while len(socks) < SILENT_SOCKETS:
                try:
                    socks[
                        socket.create_connection((self.host, self.port), timeout=2, source_address=FROM)
                    ] = time.monotonic()
                except OSError as exc:
                    self.note("silent socket", f"connect failed: {exc}")
                    break
            readable, _, _ = select.select(list(socks), [], [], 0.5)
            for sock in readable:
                with contextlib.suppress(OSError):
                    sock.recv(65_536)
                held = time.monotonic() - socks.pop(sock)
                sock.close()
                self.note("silent socket dropped", f"held {held:.1f} s" if held > PREAUTH_ANSWER_S else None)
                self.stop.wait(RECONNECT_PAUSE_S / SILENT_SOCKETS)
        for sock in socks:
            sock.close()

    def raw(self, name: str, packet: bytes) -> None:
        """``packet`` on a fresh socket: the server must answer an error or close, within the deadline."""
        try:
            with socket.create_connection(
                (self.host, self.port), timeout=PREAUTH_ANSWER_S, source_address=FROM
            ) as sock:
                try:
                    sock.sendall(packet)
                except OSError:
                    self.note(name)  # closed while we sent: refused unread
                    return
                first = sock.recv(1)
                self.note(name, None if first in (b"", b"E", b"N") else f"answered {first!r}")
        except TimeoutError:
            self.note(name, f"no answer within {PREAUTH_ANSWER_S:g} s")
        except OSError:
            self.note(name)  # reset: dropped

    def malformed(self) -> None:
        while not self.stop.is_set():
            for name, packet in MALFORMED:
                if self.stop.is_set():
                    return
                self.raw(name, packet)
                self.stop.wait(0.02)

    # --- authenticated ------------------------------------------------------------------------------
    def session(self, body: Callable[[psycopg.Connection], None]) -> None:
        while not self.stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    while not self.stop.is_set():
                        body(conn)
            except psycopg.OperationalError:
                self.note("session dropped")  # e.g. a 200 KB statement is refused unread, then closed
                self.stop.wait(0.2)

    def ask(
        self, conn: psycopg.Connection, name: str, sql: str, judge: Callable[[list[Any]], str | None]
    ) -> None:
        """Run ``sql``; ``judge`` says what is wrong with an answer. A refusal needs a SQLSTATE."""
        try:
            cur = conn.execute(sql.encode())  # type: ignore[arg-type]
            rows = cur.fetchall() if cur.description else []  # SET has no rows to fetch
        except psycopg.Error as exc:
            if conn.closed:
                raise psycopg.OperationalError(str(exc)) from None  # the session is gone: a new one
            self.note(name, None if exc.sqlstate else f"no SQLSTATE: {exc}")
        else:
            self.note(name, judge(rows))

    def refused(self, conn: psycopg.Connection) -> None:
        for name, sql in REFUSED:
            self.ask(conn, name, sql, lambda _: "answered, not refused")
        for name, sql in LEAKY:
            self.ask(conn, name, sql, self.leaks)
        # A huge placeholder in Parse, not only in text.
        result = conn.pgconn.prepare(b"huge", b"SELECT $2000000000")
        self.note(
            "huge placeholder (Parse)", None if result.error_field(ord("C")) else "prepared, not refused"
        )

    def leaks(self, rows: list[Any]) -> str | None:
        text = json.dumps(rows, default=str)
        return f"leaks the store's path: {text[:120]}" if self.store_dir in text else None

    def set_churn(self, conn: psycopg.Connection) -> None:
        for i in range(200):
            self.ask(conn, "SET", f"SET application_name = 'churn-{time.monotonic_ns()}-{i}'", lambda _: None)
            self.ask(conn, "SET custom", f"SET my.setting_{i % 100} = '{'v' * 200}'", lambda _: None)
        self.ask(
            conn, "after SET churn", "SELECT 1", lambda rows: None if rows == [(1,)] else f"answered {rows}"
        )

    def heavy(self, conn: psycopg.Connection) -> None:
        self.ask(conn, "heavy read", HEAVY, lambda _: None)
        self.stop.wait(0.2)


def run(address: str, out: Path, password: str, store_dir: str) -> None:
    idle_process()  # before its threads start: they inherit it
    attacks = Attacks(address, password, store_dir)
    signal.signal(signal.SIGTERM, lambda *_: attacks.stop.set())
    signal.signal(signal.SIGINT, lambda *_: attacks.stop.set())
    targets: list[Callable[[], None]] = [
        attacks.silent,
        attacks.malformed,
        lambda: attacks.session(attacks.refused),
        lambda: attacks.session(attacks.refused),
        lambda: attacks.session(attacks.set_churn),
        lambda: attacks.session(attacks.heavy),
    ]
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    while not attacks.stop.wait(0.2):
        pass
    for t in threads:
        t.join(30)
    out.write_text(json.dumps({"counts": attacks.counts, "problems": attacks.problems}))


if __name__ == "__main__":
    run(sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4])

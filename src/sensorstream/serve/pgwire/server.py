"""The PostgreSQL endpoint: an asyncio server on a thread of its own.

The writer's runtime serves it from a process of its own (``StoreService`` starts
:class:`~sensorstream.serve.pgwire.process.PgProcess`, which runs this server there on a
:class:`~sensorstream.serve.front.RemoteGate`); a test or a script runs it in-process on a
``ReadGate``. ``PgServer(con, settings).start()`` binds ``SENSORSTREAM_PG_HOST:SENSORSTREAM_PG_PORT`` (a busy
port fails start-up with a sentence naming the setting, like the read API) and serves until
``stop()``. The protocol runs on the loop; parsing, translation and DuckDB reads run on a small
thread pool (``Backend.work``), each read through the shared read gate (``reading.run_read``), the
one the HTTP read API uses. Every stage a client can hold is bounded: the
start-up and authentication (a deadline, message sizes, a budget of their own), idle sessions,
statements, and sessions per client address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import duckdb

from sensorstream.config import Settings
from sensorstream.procs import host_port, listening_socket
from sensorstream.reads.answer import ReadResult
from sensorstream.reads.gate import ReadGate
from sensorstream.serve.pgwire import pg_catalog, translate
from sensorstream.serve.pgwire.auth import Credentials
from sensorstream.serve.pgwire.cancel import Canceller, Ticket
from sensorstream.serve.pgwire.cursors import HeldBytes
from sensorstream.serve.pgwire.params import TooManyParameters, infer_param_types
from sensorstream.serve.pgwire.reading import BUSY_WAIT_S, Gate, ReadError, is_syntax_problem, run_read
from sensorstream.serve.pgwire.results import Outcome
from sensorstream.serve.pgwire.session import Session

log = logging.getLogger(__name__)
T = TypeVar("T")

# Buffered per connection before asyncio stops reading from its socket (twice this): a client that
# sends faster than it is served costs at most this much, authenticated or not.
STREAM_LIMIT = 32 * 1024


class PgStartError(RuntimeError):
    """The PostgreSQL endpoint could not start (most often: its port is taken)."""


class Backend:
    """What sessions share: the read gate, the credentials, the thread pool and the slots."""

    def __init__(self, gate: Gate, settings: Settings) -> None:
        self.gate = gate
        self.credentials = Credentials(settings.pg_user, settings.pg_password)
        self.max_connections = settings.pg_max_connections
        self.max_per_address = settings.pg_max_connections_per_address
        self.max_authenticating = settings.pg_max_authenticating
        self.auth_timeout = settings.pg_auth_timeout
        self.idle_timeout = settings.pg_idle_timeout or None
        # A statement's whole life (a free thread, a free read slot, parsing, the read itself),
        # so a client always gets an answer even when every thread is taken.
        self.statement_timeout = settings.read_timeout + BUSY_WAIT_S
        self.max_sql_bytes = int(settings.read_max_sql_bytes)
        # What open portals and cursors may keep (see ``cursors``): two full answers per session,
        # and an eighth of the process's memory bound for all sessions together.
        self.held_per_session = 2 * int(settings.read_max_bytes)
        self.held = HeldBytes(int(settings.pg_memory_limit) // 8)
        self.canceller = Canceller(gate)
        # What SHOW and pg_settings report: the limits this endpoint enforces, not PostgreSQL's defaults.
        idle = pg_catalog.duration(settings.pg_idle_timeout)
        self.served_settings = {
            "statement_timeout": pg_catalog.duration(self.statement_timeout),
            "idle_session_timeout": idle,
            "idle_in_transaction_session_timeout": idle,
        }
        self.pool = ThreadPoolExecutor(max_workers=settings.pg_workers, thread_name_prefix="pg-read")
        self.sessions: set[Session] = set()
        self.authenticating: dict[Session, None] = {}  # oldest first
        self._columns: dict[str, str] | None = None

    # --- slots ---------------------------------------------------------------------------------------
    def start_authenticating(self, session: Session) -> None:
        """Take one of the budget's slots for a connection that has not yet authenticated.

        When the budget is full the oldest connection of the address holding the most is dropped:
        a flood from one address drops its own sockets, and a client that authenticates in a few
        milliseconds is the newest of its address, the last to go.
        """
        if len(self.authenticating) >= self.max_authenticating:
            by_address = Counter(s.address for s in self.authenticating)
            crowded = by_address.most_common(1)[0][0]
            oldest = next(s for s in self.authenticating if s.address == crowded)
            self.authenticating.pop(oldest)
            oldest.drop(
                "53300",
                "too many connections are authenticating at once; this one waited longest "
                "(SENSORSTREAM_PG_MAX_AUTHENTICATING)",
            )
        self.authenticating[session] = None

    def admit(self, session: Session) -> str | None:
        """Take an authenticated slot for ``session``; or why not, as PostgreSQL words it."""
        self.authenticating.pop(session, None)
        if len(self.sessions) >= self.max_connections:
            return "sorry, too many clients already (SENSORSTREAM_PG_MAX_CONNECTIONS)"
        if sum(s.address == session.address for s in self.sessions) >= self.max_per_address:
            return (
                f"too many connections from {session.address}: at most {self.max_per_address} "
                "(SENSORSTREAM_PG_MAX_CONNECTIONS_PER_ADDRESS)"
            )
        self.sessions.add(session)
        return None

    def forget(self, session: Session) -> None:
        self.authenticating.pop(session, None)
        self.sessions.discard(session)

    def cancel(self, key: bytes) -> None:
        """A CancelRequest's key (process id, secret): stop that session's statement, if it runs one."""
        self.canceller.request(self.sessions, key)

    # --- work on the pool ----------------------------------------------------------------------------
    async def work(self, fn: Callable[..., T], *args: Any, ticket: Ticket | None = None) -> T:
        """``fn(*args)`` on the endpoint's threads, never on the loop: parsing, translating and
        reading, within the statement timeout. A bug of ours costs the client one statement.
        Past the timeout the read under ``ticket`` is interrupted too: it would hold a read slot."""
        loop = asyncio.get_running_loop()
        own = ticket.timeout if ticket is not None and ticket.timeout else None
        limit = own or self.statement_timeout
        try:
            return await asyncio.wait_for(loop.run_in_executor(self.pool, fn, *args), limit)
        except TimeoutError:
            if ticket is not None:
                self.canceller.cancel(ticket)
            why = (
                "the session's statement_timeout"
                if own
                else f"SENSORSTREAM_READ_TIMEOUT plus {BUSY_WAIT_S:g} s for a free read slot"
            )
            raise ReadError(
                "57014",
                f"canceling statement due to statement timeout: it took more than {limit:g} s, "
                f"waiting included ({why})",
            ) from None
        except ReadError:
            raise
        except Exception as exc:
            # One line per failure: a client that finds a bug must not fill the log with tracebacks.
            log.warning("postgres endpoint: internal error: %s: %s", type(exc).__name__, exc)
            log.debug("postgres endpoint: internal error", exc_info=True)
            raise ReadError(
                "XX000", f"internal error in the PostgreSQL endpoint: {type(exc).__name__}"
            ) from None

    # --- reads (on the pool) -----------------------------------------------------------------------
    def _read(
        self, sql: str, params: list[Any], user: str, settings: dict[str, str], ticket: Ticket | None
    ) -> ReadResult:
        """Run ``sql`` as DuckDB SQL; PostgreSQL-only syntax is rewritten first or on a syntax error."""
        items = tuple(sorted(settings.items()))
        first = translate.to_duckdb(sql, user, items) if translate.wants_rewrite_first(sql) else sql
        try:
            return run_read(self.gate, first, _bound(first, params), ticket=ticket)
        except ReadError as exc:
            if not is_syntax_problem(exc):
                raise
            rewritten = translate.to_duckdb(sql, user, items)
            if rewritten == first:
                log.debug("postgres endpoint: %s\n  as run: %s", exc, first)
                raise
            try:
                return run_read(self.gate, rewritten, _bound(rewritten, params), ticket=ticket)
            except ReadError as second:
                log.debug("postgres endpoint: %s\n  as sent: %s\n  rewritten: %s", second, sql, rewritten)
                raise exc from None

    async def run(
        self, sql: str, params: list[Any], user: str, settings: dict[str, str], ticket: Ticket | None = None
    ) -> Outcome:
        result = await self._on_pool(sql, params, user, settings, ticket)
        if result.truncated:
            # A warning is shown by neither Grafana nor Tableau: a cut answer would look whole.
            raise ReadError(
                "54000",
                f"the answer has more than {self.gate.limits.max_rows:,} rows, the most one statement "
                "may return (SENSORSTREAM_READ_MAX_ROWS); aggregate (Grafana: $__timeGroup) or filter further",
            )
        return Outcome("SELECT", result=result)

    async def describe(
        self, sql: str, n_params: int, user: str, settings: dict[str, str], ticket: Ticket | None = None
    ) -> ReadResult | None:
        """The columns ``sql`` returns, from a ``LIMIT 0`` run with NULL parameters."""
        wrapped = f"SELECT * FROM (\n{sql}\n) AS described LIMIT 0"
        result = await self._on_pool(wrapped, [None] * n_params, user, settings, ticket)
        return result if result.columns else None

    async def _on_pool(
        self, sql: str, params: list[Any], user: str, settings: dict[str, str], ticket: Ticket | None
    ) -> ReadResult:
        return await self.work(self._read, sql, params, user, settings, ticket, ticket=ticket)

    def param_types(self, sql: str, declared: list[int]) -> list[int]:
        """On the pool (it parses, and its first call reads the catalog)."""
        try:
            return infer_param_types(sql, declared, self.store_columns())
        except TooManyParameters as exc:
            raise ReadError("54000", str(exc)) from None

    def store_columns(self) -> dict[str, str]:
        """Column name -> DuckDB type over the store's tables (the schema is fixed while we run)."""
        if self._columns is None:
            result = run_read(
                self.gate,
                "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'main' "
                "ORDER BY table_name, column_index",
            )
            columns: dict[str, str] = {}
            for name, data_type in result.rows:
                columns.setdefault(str(name).lower(), str(data_type))
            self._columns = columns
        return self._columns


_PLACEHOLDER = re.compile(r"\$(\d+)")


def _bound(sql: str, params: list[Any]) -> list[Any] | dict[str, Any] | None:
    """``params`` for ``sql``; by number when a rewrite dropped some ``$n`` (DuckDB refuses extras)."""
    if not params:
        return None
    used = {int(n) for n in _PLACEHOLDER.findall(sql)}
    if used == set(range(1, len(params) + 1)):
        return params
    return {str(n): params[n - 1] for n in used if n <= len(params)}


def bind_socket(host: str, port: int) -> socket.socket:
    sock = listening_socket(
        host,
        port,
        busy=lambda exc: PgStartError(
            f"the store's PostgreSQL endpoint cannot listen on {host}:{port} ({exc.strerror}); "
            "set SENSORSTREAM_PG_PORT to a free port (or stop the process that holds it)."
        ),
    )
    sock.listen(128)
    sock.setblocking(False)
    return sock


class PgServer:
    """The endpoint on a daemon thread with its own event loop: ``start()`` / ``stop()``."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection | None,
        settings: Settings,
        *,
        port: int | None = None,
        gate: Gate | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        """``gate``: a shared gate (the writer's ``StoreService.gate``, or its ``RemoteGate`` in the
        endpoint's process), so the HTTP API and this endpoint share read slots; without one (a
        test, a script) a gate of its own on ``con``. ``sock``: a listening socket already bound
        (the endpoint's process gets the writer's)."""
        self.host = settings.pg_host
        self.port = settings.pg_port if port is None else port
        self._sock = sock
        self._own_gate = gate is None  # ours to close at stop()
        if gate is None:
            assert con is not None, "PgServer needs a connection or a gate"
            gate = ReadGate(con, settings)
        self.backend = Backend(gate, settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)

    def start(self, timeout: float = 10.0) -> PgServer:
        if self._thread is not None:
            return self
        sock = self._sock or bind_socket(self.host, self.port)
        self._sock = None
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name="store-pg-endpoint", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop()
            raise PgStartError(
                f"the store's PostgreSQL endpoint did not start on {self.address}: {self._error}"
            )
        log.info("store PostgreSQL endpoint on %s (user %s)", self.address, self.backend.credentials.user)
        return self

    def _serve(self, sock: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Cancelled only by stop(): the session ends there, not as an "unhandled exception".
            with contextlib.suppress(asyncio.CancelledError):
                await Session(self.backend, reader, writer).serve()

        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(handle, sock=sock, limit=STREAM_LIMIT)
            )
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every session, then the pool. Safe to call twice."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        # Reads in flight finish (each is bounded by the gate's time limit) before the caller
        # closes the store connection under them.
        self.backend.pool.shutdown(wait=True, cancel_futures=True)
        self.backend.canceller.stop()
        if self._own_gate:
            gate = self.backend.gate
            assert isinstance(gate, ReadGate)
            gate.close()
            self._own_gate = False
        self._thread = self._loop = self._server = None

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""One client connection: its message loop, the simple query protocol and the statements it runs.

The session runs on the endpoint's asyncio loop; everything that parses SQL and every DuckDB read
goes to the endpoint's thread pool (``Backend.work``), so a slow statement holds up only its own
client. What the loop itself does is bounded by size before it starts: a message's length is
checked from its header, a statement's size on its bytes, before anything is buffered or parsed.
Transactions are accepted and tracked for the status byte clients check (I / T / E) and for the
life of portals and cursors, but change nothing in what is read: every statement reads the newest
committed batch, which is what a dashboard wants. The start-up is ``handshake``'s, the extended
protocol ``extended``'s, portals and cursors ``cursors``', COPY's lines ``copy_out``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any

from sensorstream.reads import sqlguard
from sensorstream.reads.answer import ReadResult
from sensorstream.serve.pgwire import codec, colnames, copy_out, cursors
from sensorstream.serve.pgwire.cancel import Ticket
from sensorstream.serve.pgwire.codec import InvalidText, MessageTooLarge, ProtocolError, Reader
from sensorstream.serve.pgwire.extended import ExtendedQuery, Prepared
from sensorstream.serve.pgwire.handshake import Handshake
from sensorstream.serve.pgwire.pg_catalog import duration, parse_duration, settings_for
from sensorstream.serve.pgwire.reading import ReadError
from sensorstream.serve.pgwire.results import Encoder, Outcome, encode_row, encoders, fields, tag
from sensorstream.serve.pgwire.statements import Command, classify, split_statements

log = logging.getLogger(__name__)

# Per-session settings (SET): PostgreSQL's name length, and a count and value size far above what
# drivers set (application_name, DateStyle, extra_float_digits, search_path ...). They are part of
# the translation cache's key, so unbounded settings would grow the endpoint's process.
MAX_SETTINGS = 64
MAX_SETTING_NAME = 63
MAX_SETTING_VALUE = 256
# After authentication a message (Bind's parameters, Parse's OIDs) is buffered up to this size;
# a Query's text only up to the SQL size limit. A larger one is read in chunks and refused.
MAX_MESSAGE = 1 << 20
# Messages buffered before they are written out: a large answer leaves in pages of about this many rows.
PAGE_MESSAGES = 256
# A refusal (a file, a setting, a sleep: 42501; a statement or message over a limit: 54000) is
# answered no sooner than this after it was found, as the HTTP API answers its refusals: a hostile
# client that sends its next statement the moment it has the answer then sends a few a second,
# not hundreds, each costing a parse here and its own work over there, and the wait costs no
# thread and no CPU (the loop sleeps). A person correcting a statement does not notice. Ordinary
# errors (an unknown table or function, a syntax error) are answered at once: drivers and tools
# meet those while they find out what the server has.
REFUSAL_PAUSE_S = 0.2
PAUSED_SQLSTATES = frozenset({"42501", "54000"})


class Session(Handshake, ExtendedQuery):
    def __init__(self, backend: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.backend = backend
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        self.peer = f"{self.address}:{peer[1]}" if isinstance(peer, tuple) and len(peer) > 1 else self.address
        self.user = ""
        self.values: dict[str, str] = {}
        self._settings_cache: dict[str, str] | None = None
        self.tx = "I"
        # A simple Query of several statements runs as one implicit block (cursors may be declared).
        self.implicit_block = False
        # BackendKeyData: random per connection, never the OS PID (it would tell the writer's).
        self.pid = secrets.randbelow(2**31 - 1) + 1
        self.secret = secrets.randbits(31)
        self.running: Ticket | None = None  # the statement a CancelRequest would cancel
        self.statement_timeout: float | None = None  # seconds, when SET tighter than the endpoint's
        self.statements: dict[str, Prepared] = {}
        self.portals = cursors.Portals(backend.held_per_session, backend.held)
        self._out: list[bytes] = []
        self._answer_after = 0.0  # monotonic time before which the next flush waits (a refusal)

    # --- plumbing --------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self._out.append(data)

    async def flush(self) -> None:
        if self._answer_after:
            await asyncio.sleep(self._answer_after - time.monotonic())
            self._answer_after = 0.0
        if self._out:
            self.writer.write(b"".join(self._out))
            self._out.clear()
            # A client that stops reading its answers holds its slot no longer than an idle one.
            async with asyncio.timeout(self.backend.idle_timeout):
                await self.writer.drain()

    def drop(self, sqlstate: str, text: str) -> None:
        """Close the connection from outside its task (the authenticating budget is full)."""
        log.info("postgres endpoint: closed %s: %s", self.peer, text)
        if not self.writer.is_closing():
            self.writer.write(codec.error_response(sqlstate, text, severity="FATAL"))
            self.writer.close()

    async def serve(self) -> None:
        try:
            self.backend.start_authenticating(self)
            try:
                async with asyncio.timeout(self.backend.auth_timeout):
                    authenticated = await self._startup()
            except TimeoutError:
                # PostgreSQL's authentication_timeout, with its words.
                self._fatal("08P01", "canceling authentication due to timeout")
                await self._safe_flush()
                return
            if authenticated and await self._admitted():
                await self._loop()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away; nothing to tell it
        except ProtocolError as exc:
            self._fatal("08P01", str(exc))
            await self._safe_flush()
        except TimeoutError:
            log.info("postgres endpoint: closed %s: it did not read its answers", self.peer)
            self.writer.transport.abort()
        except Exception as exc:
            # A bug of ours: one line (the traceback at debug level), the client told, the
            # connection closed; never a traceback per packet.
            log.warning(
                "postgres endpoint: internal error with %s: %s: %s", self.peer, type(exc).__name__, exc
            )
            log.debug("postgres endpoint: internal error", exc_info=True)
            self.send(
                codec.error_response("XX000", f"internal error: {type(exc).__name__}", severity="FATAL")
            )
            await self._safe_flush()
        finally:
            self.portals.clear()  # the process-wide count of held answers forgets this session's
            self.backend.forget(self)
            self.writer.close()

    def _fatal(self, sqlstate: str, text: str) -> None:
        log.info("postgres endpoint: closed %s: %s", self.peer, text)
        self.send(codec.error_response(sqlstate, text, severity="FATAL"))

    async def _safe_flush(self) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.flush()

    # --- the message loop ------------------------------------------------------------------------
    def _max_body(self, kind: bytes) -> int:
        return self.backend.max_sql_bytes + 1 if kind == b"Q" else MAX_MESSAGE

    async def _next_message(self) -> tuple[bytes, bytes] | None:
        """The next message, or None when the session was idle too long (it is then told why)."""
        try:
            async with asyncio.timeout(self.backend.idle_timeout):
                return await codec.read_message(self.reader, self._max_body, drop_larger=True)
        except TimeoutError:
            if self.tx == "I":
                self._fatal(
                    "57P05",
                    "terminating connection due to idle-session timeout (SENSORSTREAM_PG_IDLE_TIMEOUT)",
                )
            else:
                self._fatal(
                    "25P03",
                    "terminating connection due to idle-in-transaction timeout (SENSORSTREAM_PG_IDLE_TIMEOUT)",
                )
            await self._safe_flush()
            return None

    def _too_large(self, exc: MessageTooLarge) -> ReadError:
        if exc.kind in (b"Q", b"P"):
            return _sql_too_large(exc.size, self.backend.max_sql_bytes)
        return ReadError("54000", f"{exc}: at most {MAX_MESSAGE:,} are accepted here after the start-up")

    async def _loop(self) -> None:
        skipping = False  # after an error in the extended protocol, until Sync
        while True:
            try:
                message = await self._next_message()
            except MessageTooLarge as exc:
                self._error(self._too_large(exc))
                if exc.kind == b"Q":
                    self.send(codec.ready_for_query(self.tx))
                    await self.flush()
                else:
                    skipping = True
                continue
            if message is None:
                return
            kind, body = message
            if kind == b"X":
                return
            if kind == b"Q":
                await self._simple_query(body)
                continue
            if kind == b"S":
                skipping = False
                self._at_sync()
                self.send(codec.ready_for_query(self.tx))
                await self.flush()
                continue
            if kind == b"H":
                await self.flush()
                continue
            if skipping:
                continue
            handler = {
                b"P": self._parse,
                b"B": self._bind,
                b"D": self._describe,
                b"E": self._execute,
                b"C": self._close,
            }.get(kind)
            try:
                if handler is None:
                    raise ReadError("0A000", f"message type {kind!r} is not supported by this endpoint")
                await handler(Reader(body))
            except InvalidText as exc:
                self._error(ReadError("22021", str(exc)))
                skipping = True
            except ReadError as exc:
                self._error(exc)
                skipping = True

    def _error(self, exc: ReadError) -> None:
        if exc.sqlstate in PAUSED_SQLSTATES and not self._answer_after:
            self._answer_after = time.monotonic() + REFUSAL_PAUSE_S
        self.send(codec.error_response(exc.sqlstate, str(exc)))
        if self.tx == "T":
            self.tx = "E"

    # --- running one statement -------------------------------------------------------------------
    async def _run(self, command: Command, params: list[Any]) -> Outcome:
        if self.tx == "E" and command.kind != "tx":
            raise ReadError(
                "25P02", "current transaction is aborted, commands ignored until end of transaction block"
            )
        if command.kind == "tx":
            return Outcome(command.tag, tx_state=command.tx_state)
        if command.kind in ("noop", "empty"):  # an empty statement's tag "" means EmptyQueryResponse
            return Outcome(command.tag)
        if command.kind == "set":
            if command.name:
                self._set(command.name, command.value)
            return Outcome("SET")
        if command.kind == "show":
            return Outcome("SHOW", result=self._show(command.name))
        if command.kind == "declare":
            return await self._declare(command.spec, params)
        if command.kind == "fetch":
            return await self._fetch(command.spec)
        if command.kind == "close":
            if command.spec.name is None:
                self.portals.close_cursors()
            elif not self.portals.drop(command.spec.name):
                raise ReadError("34000", f'cursor "{command.spec.name}" does not exist')
            return Outcome("CLOSE CURSOR")
        query = command.query
        assert query is not None
        outcome = await self._query(query, params)
        if command.kind == "copy":
            return Outcome("COPY", result=outcome.result, copy=command.spec)
        return outcome

    @contextlib.contextmanager
    def _statement(self) -> Iterator[Ticket]:
        """The running statement's ticket, for a CancelRequest to find."""
        ticket = self.running = Ticket(self.statement_timeout)
        try:
            yield ticket
        finally:
            self.running = None

    async def _query(self, sql: str, params: list[Any]) -> Outcome:
        with self._statement() as ticket:
            outcome = await self.backend.run(sql, params, self.user, self._settings(), ticket)
            if outcome.result is not None:
                outcome.result = await self._pg_named(outcome.result, sql)
            ticket.check()  # a cancel that came while the names were found
        return outcome

    async def _pg_named(self, result: ReadResult, sql: str) -> ReadResult:
        """``result`` with the column names PostgreSQL would give ``sql``'s columns; found with
        sqlglot's parser on the read pool, off the loop every client shares."""
        loop = asyncio.get_running_loop()
        names = await loop.run_in_executor(self.backend.pool, colnames.result_names, sql, result.columns)
        return dataclasses.replace(result, columns=names)

    async def _declare(self, spec: cursors.Declare, params: list[Any]) -> Outcome:
        if not spec.hold and self.tx == "I" and not self.implicit_block:
            raise ReadError("25P01", "DECLARE CURSOR can only be used in transaction blocks")
        if spec.name in self.portals:
            raise ReadError("42P03", f'cursor "{spec.name}" already exists')
        outcome = await self._query(spec.query, params)
        in_block = self.tx != "I" or self.implicit_block
        portal = cursors.Portal(
            None, params, [1] if spec.binary else [], outcome, cursor=spec, in_block=in_block
        )
        self.portals.put(spec.name, portal)
        try:
            self.portals.charge(portal)
        except ReadError:
            self.portals.drop(spec.name)
            raise
        return Outcome("DECLARE CURSOR")

    async def _fetch(self, spec: cursors.Fetch) -> Outcome:
        portal = self.portals.get(spec.name)
        if portal is None:
            raise ReadError("34000", f'cursor "{spec.name}" does not exist')
        outcome = await self._portal_outcome(portal)
        if outcome.result is None:
            raise ReadError("34000", f'portal "{spec.name}" cannot be run: it returns no rows')
        rows = cursors.move(portal, spec)
        if spec.move:
            return Outcome(f"MOVE {len(rows)}")
        result = ReadResult(outcome.result.columns, outcome.result.types, rows)
        return Outcome(f"FETCH {len(rows)}", result=result, formats=portal.result_formats)

    def _set(self, name: str, value: str) -> None:
        if len(name.encode()) > MAX_SETTING_NAME:
            raise ReadError("54000", f"a setting's name may be at most {MAX_SETTING_NAME} bytes")
        if len(value.encode()) > MAX_SETTING_VALUE:
            raise ReadError("54000", f"a setting's value may be at most {MAX_SETTING_VALUE} bytes here")
        if name not in self.values and len(self.values) >= MAX_SETTINGS:
            raise ReadError("54000", f"a session may set at most {MAX_SETTINGS} settings here")
        if name == "statement_timeout":
            seconds = parse_duration(name, value)
            # Only tighter than the endpoint's own deadline; 0 (none) leaves that one.
            self.statement_timeout = seconds if 0 < seconds < self.backend.statement_timeout else None
        self.values[name] = value
        self._settings_cache = None

    def _settings(self) -> dict[str, str]:
        # Built once per change: every statement passes it on (and keys the translation cache by it).
        if self._settings_cache is None:
            served = dict(self.backend.served_settings)
            if self.statement_timeout is not None:
                served["statement_timeout"] = duration(self.statement_timeout)
            self._settings_cache = settings_for(self.values, served)
        return self._settings_cache

    def _show(self, name: str) -> ReadResult:
        settings = self._settings()
        if name == "all":
            rows = [(k, v, "") for k, v in sorted(settings.items())]
            return ReadResult(["name", "setting", "description"], ["VARCHAR"] * 3, rows)
        if name not in settings:
            raise ReadError("42704", f'unrecognized configuration parameter "{name}"')
        column = name.replace(" ", "_")
        return ReadResult([column], ["VARCHAR"], [(settings[name],)])

    def _apply(self, outcome: Outcome) -> None:
        if outcome.tx_state:
            if outcome.tx_state == "I" and self.tx != "I":
                self.portals.end_block(committed=self.tx == "T" and outcome.tag == "COMMIT")
            self.tx = outcome.tx_state

    # --- sending answers -------------------------------------------------------------------------
    async def _send_rows(self, rows: list[Any], row_encoders: list[Encoder]) -> None:
        for row in rows:
            self.send(codec.data_row(encode_row(row, row_encoders)))
            if len(self._out) >= PAGE_MESSAGES:
                await self.flush()

    async def _send_copy(self, outcome: Outcome) -> None:
        """CopyOutResponse, a CopyData per line, CopyDone and ``COPY n``."""
        assert outcome.result is not None
        self.send(codec.copy_out_response(len(outcome.result.columns)))
        for line in copy_out.copy_lines(outcome.result, outcome.copy):
            self.send(codec.copy_data(line))
            if len(self._out) >= PAGE_MESSAGES:
                await self.flush()
        self.send(codec.COPY_DONE)
        self.send(codec.command_complete(f"COPY {len(outcome.result.rows)}"))

    # --- simple query protocol -------------------------------------------------------------------
    def _sql(self, raw: bytes) -> str:
        """A statement's text, its size checked on the bytes as sent, before anything parses it."""
        if len(raw) > self.backend.max_sql_bytes:
            raise _sql_too_large(len(raw), self.backend.max_sql_bytes)
        try:
            return codec.utf8(raw)
        except InvalidText as exc:
            raise ReadError("22021", str(exc)) from None

    async def _simple_query(self, body: bytes) -> None:
        try:
            sql = self._sql(Reader(body).cbytes())
            commands = await self.backend.work(_sorted_statements, sql)
        except ReadError as exc:
            self._error(exc)
            commands = None
        if commands == []:
            self.send(codec.EMPTY_QUERY)
        self.implicit_block = len(commands or []) > 1
        failed = False
        for command in commands or []:
            try:
                outcome = await self._run(command, [])
                self._apply(outcome)
                if outcome.copy is not None:
                    await self._send_copy(outcome)
                    continue
                if outcome.result is not None:
                    self.send(codec.row_description(fields(outcome.result, outcome.formats)))
                    await self._send_rows(outcome.result.rows, encoders(outcome.result, outcome.formats))
            except ReadError as exc:
                self._error(exc)
                failed = True
                break
            self.send(codec.command_complete(tag(outcome, len(outcome.result.rows) if outcome.result else 0)))
        if self.implicit_block and self.tx == "I":
            self.portals.end_block(committed=not failed)  # the implicit block's cursors end with it
        self.implicit_block = False
        self.send(codec.ready_for_query(self.tx))
        await self.flush()


def _sorted_statements(sql: str) -> list[Command]:
    return [classify(text) for text in split_statements(sql)]


def _sql_too_large(size: int, limit: int) -> ReadError:
    refusal = sqlguard.sql_too_large(size, limit)
    return ReadError(refusal.sqlstate, str(refusal))

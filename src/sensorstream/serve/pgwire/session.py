"""One client connection: start-up, SCRAM, then the simple and extended query protocols.

The session runs on the endpoint's asyncio loop; everything that parses SQL and every DuckDB read
goes to the endpoint's thread pool (``Backend.work``), so a slow statement holds up only its own
client. What the loop itself does is bounded by size before it starts: a message's length is
checked from its header, a statement's size on its bytes, before anything is buffered or parsed.
Transactions are accepted and tracked for the status byte clients check (I / T / E) but change
nothing: every statement reads the newest committed batch, which is what a dashboard wants.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sensorstream.reads import sqlguard
from sensorstream.reads.answer import ReadResult
from sensorstream.serve.pgwire import codec, translate
from sensorstream.serve.pgwire import types as t
from sensorstream.serve.pgwire.auth import AuthFailed
from sensorstream.serve.pgwire.codec import InvalidText, MessageTooLarge, ProtocolError, Reader
from sensorstream.serve.pgwire.gate import ReadError
from sensorstream.serve.pgwire.pg_catalog import STARTUP_PARAMETERS, settings_for

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one statement produced: a tag, and for row-returning ones the columns and rows."""

    tag: str
    result: ReadResult | None = None
    tx_state: str = ""


@dataclass
class Prepared:
    sql: str
    command: translate.Command
    param_oids: list[int]
    described: ReadResult | None = None  # columns only (from a LIMIT 0 run)


@dataclass
class Portal:
    statement: Prepared
    params: list[Any]
    result_formats: list[int]
    outcome: Outcome | None = None
    sent: int = 0
    encoders: list[Callable[[Any], bytes]] = field(default_factory=list)


# Per-session settings (SET): PostgreSQL's name length, and a count and value size far above what
# drivers set (application_name, DateStyle, extra_float_digits, search_path ...). They are part of
# the translation cache's key, so unbounded settings would grow the writer's process.
MAX_SETTINGS = 64
MAX_SETTING_NAME = 63
MAX_SETTING_VALUE = 256
# Prepared statements and portals a session may keep (pgx caches 512 statements per connection).
MAX_STATEMENTS = 1024
MAX_PORTALS = 64
# After authentication a message (Bind's parameters, Parse's OIDs) is buffered up to this size;
# a Query's text only up to the SQL size limit. A larger one is read in chunks and refused.
MAX_MESSAGE = 1 << 20


class Session:
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
        # BackendKeyData: random per connection, never the OS PID (it would tell the writer's).
        self.pid = secrets.randbelow(2**31 - 1) + 1
        self.secret = secrets.randbits(31)
        self.statements: dict[str, Prepared] = {}
        self.portals: dict[str, Portal] = {}
        self._out: list[bytes] = []

    # --- plumbing --------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self._out.append(data)

    async def flush(self) -> None:
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
            self.backend.forget(self)
            self.writer.close()

    def _fatal(self, sqlstate: str, text: str) -> None:
        log.info("postgres endpoint: closed %s: %s", self.peer, text)
        self.send(codec.error_response(sqlstate, text, severity="FATAL"))

    async def _safe_flush(self) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.flush()

    # --- start-up and authentication -------------------------------------------------------------
    async def _startup(self) -> bool:
        """The start-up packet and SCRAM, within the authentication deadline: True once proven."""
        while True:
            code, body = await codec.read_startup(self.reader)
            if code in (codec.SSL_REQUEST, codec.GSSENC_REQUEST):
                # No TLS here: the endpoint binds loopback by default; 'N' makes clients go on in clear.
                self.writer.write(b"N")
                await self.writer.drain()
                continue
            if code == codec.CANCEL_REQUEST:
                return False
            break
        if code >> 16 != 3:
            raise ProtocolError(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: only 3.0 is")
        params = codec.parse_startup_params(body)
        if code & 0xFFFF or any(k.startswith("_pq_.") for k in params):
            unknown = [k for k in params if k.startswith("_pq_.")]
            payload = codec.struct.pack("!ii", codec.PROTOCOL_3_0, len(unknown))
            self.send(codec.message(b"v", payload + b"".join(codec.cstr(k) for k in unknown)))
        self.user = params.get("user", "")
        # PostgreSQL, too, cuts application_name to its identifier length.
        self.values["application_name"] = params.get("application_name", "")[:MAX_SETTING_NAME]
        return await self._authenticate()

    async def _admitted(self) -> bool:
        """An authenticated slot, then AuthenticationOk and the session's parameters."""
        refusal = self.backend.admit(self)
        if refusal is not None:
            self._fatal("53300", refusal)
            await self.flush()
            return False
        self.send(codec.auth_request(0))
        for name, value in STARTUP_PARAMETERS.items():
            self.send(codec.parameter_status(name, value))
        self.send(codec.parameter_status("application_name", self.values["application_name"]))
        self.send(codec.parameter_status("session_authorization", self.user))
        self.send(codec.backend_key_data(self.pid, self.secret))
        self.send(codec.ready_for_query("I"))
        await self.flush()
        return True

    async def _auth_message(self, expected: str) -> bytes:
        kind, body = await codec.read_message(
            self.reader, lambda _: codec.MAX_AUTH_MESSAGE, drop_larger=False
        )
        if kind != b"p":
            raise ProtocolError(f"expected a {expected}")
        return body

    async def _authenticate(self) -> bool:
        exchange = self.backend.credentials.exchange(self.user)
        self.send(codec.auth_request(10, codec.cstr("SCRAM-SHA-256") + b"\x00"))
        await self.flush()
        try:
            msg = Reader(await self._auth_message("SASLInitialResponse"))
            mechanism = msg.cstring()
            if mechanism != "SCRAM-SHA-256":
                raise AuthFailed(f"unsupported SASL mechanism {mechanism}")
            length = msg.int32()
            self.send(codec.auth_request(11, exchange.first(msg.bytes_(length))))
            await self.flush()
            self.send(codec.auth_request(12, exchange.final(await self._auth_message("SASLResponse"))))
            return True
        except (AuthFailed, InvalidText) as exc:
            log.info("postgres endpoint: authentication failed for user %r: %s", self.user, exc)
            self.send(
                codec.error_response(
                    "28P01",
                    f'password authentication failed for user "{self.user}"',
                    severity="FATAL",
                    hint="use the user and password set by SENSORSTREAM_PG_USER and SENSORSTREAM_PG_PASSWORD",
                )
            )
            await self.flush()
            return False

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
                self._close_unnamed_portal()
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
        self.send(codec.error_response(exc.sqlstate, str(exc)))
        if self.tx == "T":
            self.tx = "E"

    # --- running one statement -------------------------------------------------------------------
    async def _run(self, command: translate.Command, params: list[Any]) -> Outcome:
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
        outcome = await self.backend.run(command.sql, params, self.user, self._settings())
        if outcome.result is not None:
            outcome.result = await self._pg_named(outcome.result, command.sql)
        return outcome

    async def _pg_named(self, result: ReadResult, sql: str) -> ReadResult:
        """``result`` with the column names PostgreSQL would give ``sql``'s columns; found with
        sqlglot's parser on the read pool, off the loop every client shares."""
        loop = asyncio.get_running_loop()
        names = await loop.run_in_executor(self.backend.pool, translate.result_names, sql, result.columns)
        return dataclasses.replace(result, columns=names)

    def _set(self, name: str, value: str) -> None:
        if len(name.encode()) > MAX_SETTING_NAME:
            raise ReadError("54000", f"a setting's name may be at most {MAX_SETTING_NAME} bytes")
        if len(value.encode()) > MAX_SETTING_VALUE:
            raise ReadError("54000", f"a setting's value may be at most {MAX_SETTING_VALUE} bytes here")
        if name not in self.values and len(self.values) >= MAX_SETTINGS:
            raise ReadError("54000", f"a session may set at most {MAX_SETTINGS} settings here")
        self.values[name] = value
        self._settings_cache = None

    def _settings(self) -> dict[str, str]:
        # Built once per change: every statement passes it on (and keys the translation cache by it).
        if self._settings_cache is None:
            self._settings_cache = settings_for(self.values)
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
            self.tx = outcome.tx_state

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
        for command in commands or []:
            try:
                outcome = await self._run(command, [])
                self._apply(outcome)
                if outcome.result is not None:
                    encoders = _encoders(outcome.result, [])
                    self.send(codec.row_description(_fields(outcome.result, [])))
                    for row in outcome.result.rows:
                        self.send(codec.data_row(_encode_row(row, encoders)))
            except ReadError as exc:
                self._error(exc)
                break
            self.send(
                codec.command_complete(_tag(outcome, len(outcome.result.rows) if outcome.result else 0))
            )
            if len(self._out) > 256:
                await self.flush()
        self.send(codec.ready_for_query(self.tx))
        await self.flush()

    # --- extended query protocol -----------------------------------------------------------------
    async def _parse(self, msg: Reader) -> None:
        name, sql = msg.cstring(), self._sql(msg.cbytes())
        declared = msg.int32s_after_int16_count()
        if name not in self.statements and len(self.statements) >= MAX_STATEMENTS:
            raise ReadError(
                "54000", f"at most {MAX_STATEMENTS} prepared statements per connection; close some first"
            )
        command, oids = await self.backend.work(self._prepare, sql, declared)
        self.statements[name] = Prepared(sql.strip().rstrip(";").strip(), command, oids)
        self.send(codec.PARSE_COMPLETE)

    def _prepare(self, sql: str, declared: list[int]) -> tuple[translate.Command, list[int]]:
        """What Parse needs that parses the text (on the endpoint's threads, never on the loop)."""
        command = translate.classify(sql.strip().rstrip(";"))
        oids = self.backend.param_types(sql, declared) if command.kind == "query" else declared
        return command, oids

    async def _bind(self, msg: Reader) -> None:
        portal_name, statement_name = msg.cstring(), msg.cstring()
        statement = self.statements.get(statement_name)
        if statement is None:
            raise ReadError("26000", f'prepared statement "{statement_name}" does not exist')
        formats = msg.int16s()
        count = msg.int16()
        if count != len(statement.param_oids):
            raise ReadError(
                "08P01",
                f"bind message supplies {count} parameters, but prepared statement requires "
                f"{len(statement.param_oids)}",
            )
        params = []
        for i in range(count):
            length = msg.int32()
            data = None if length < 0 else msg.bytes_(length)
            fmt = formats[i] if len(formats) > 1 else (formats[0] if formats else 0)
            try:
                params.append(t.decode_param(statement.param_oids[i], data, fmt == 1))
            except t.ParamDecodeError as exc:
                raise ReadError("22P02", str(exc)) from None
        if portal_name not in self.portals and len(self.portals) >= MAX_PORTALS:
            raise ReadError("54000", f"at most {MAX_PORTALS} open portals per connection; close some first")
        self.portals[portal_name] = Portal(statement, params, msg.int16s())
        self.send(codec.BIND_COMPLETE)

    async def _describe(self, msg: Reader) -> None:
        what, name = msg.bytes_(1), msg.cstring()
        if what == b"S":
            statement = self.statements.get(name)
            if statement is None:
                raise ReadError("26000", f'prepared statement "{name}" does not exist')
            self.send(codec.parameter_description(statement.param_oids))
            columns = await self._statement_columns(statement)
            self.send(codec.row_description(_fields(columns, [])) if columns else codec.NO_DATA)
            return
        portal = self._portal(name)
        outcome = await self._portal_outcome(portal)
        if outcome.result is None:
            self.send(codec.NO_DATA)
        else:
            self.send(codec.row_description(_fields(outcome.result, portal.result_formats)))

    async def _statement_columns(self, statement: Prepared) -> ReadResult | None:
        command = statement.command
        if command.kind == "show":
            return self._show(command.name)
        if command.kind != "query":
            return None
        if statement.described is None:
            described = await self.backend.describe(
                statement.sql, len(statement.param_oids), self.user, self._settings()
            )
            statement.described = await self._pg_named(described, statement.sql) if described else None
        return statement.described

    async def _portal_outcome(self, portal: Portal) -> Outcome:
        if portal.outcome is None:
            portal.outcome = await self._run(portal.statement.command, portal.params)
            self._apply(portal.outcome)
            if portal.outcome.result is not None:
                portal.encoders = _encoders(portal.outcome.result, portal.result_formats)
        return portal.outcome

    def _portal(self, name: str) -> Portal:
        portal = self.portals.get(name)
        if portal is None:
            raise ReadError("34000", f'portal "{name}" does not exist')
        return portal

    async def _execute(self, msg: Reader) -> None:
        portal = self._portal(msg.cstring())
        limit = msg.int32()
        outcome = await self._portal_outcome(portal)
        if outcome.result is None:
            self.send(codec.command_complete(_tag(outcome, 0)) if outcome.tag else codec.EMPTY_QUERY)
            return
        rows = outcome.result.rows
        end = len(rows) if limit <= 0 else min(len(rows), portal.sent + limit)
        for row in rows[portal.sent : end]:
            self.send(codec.data_row(_encode_row(row, portal.encoders)))
        portal.sent = end
        if end < len(rows):
            self.send(codec.PORTAL_SUSPENDED)
        else:
            self.send(codec.command_complete(_tag(outcome, len(rows))))
        await self.flush()

    async def _close(self, msg: Reader) -> None:
        what, name = msg.bytes_(1), msg.cstring()
        (self.statements if what == b"S" else self.portals).pop(name, None)
        self.send(codec.CLOSE_COMPLETE)

    def _close_unnamed_portal(self) -> None:
        # Portals live until the end of the transaction; with no real transactions, until Sync.
        if self.tx == "I":
            self.portals.clear()


# --- result encoding ---------------------------------------------------------------------------------
def _format(formats: list[int], i: int) -> int:
    if not formats:
        return 0
    return formats[i] if len(formats) > 1 else formats[0]


def _fields(result: ReadResult, formats: list[int]) -> list[tuple[str, int, int, int]]:
    fields = []
    for i, (name, duck_type) in enumerate(zip(result.columns, result.types, strict=True)):
        pg = t.pg_type(duck_type)
        fields.append((name, pg.oid, pg.size, _format(formats, i)))
    return fields


def _encoders(result: ReadResult, formats: list[int]) -> list[Callable[[Any], bytes]]:
    return [t.encoder(t.pg_type(duck).oid, _format(formats, i) == 1) for i, duck in enumerate(result.types)]


def _encode_row(row: tuple[Any, ...], encoders: list[Callable[[Any], bytes]]) -> list[bytes | None]:
    encoded: list[bytes | None] = []
    for value, encode in zip(row, encoders, strict=True):
        try:
            encoded.append(None if value is None else encode(value))
        except (AttributeError, TypeError, ValueError, OverflowError):
            # DuckDB hands a date past Python's year 9999 over as text: the answer stops, not the session.
            state = "22008" if isinstance(value, str) else "22003"  # datetime_field_overflow
            raise ReadError(
                state, f"the value {str(value)[:40]!r} is out of the range this endpoint can send"
            ) from None
    return encoded


def _sorted_statements(sql: str) -> list[translate.Command]:
    return [translate.classify(text) for text in translate.split_statements(sql)]


def _sql_too_large(size: int, limit: int) -> ReadError:
    refusal = sqlguard.sql_too_large(size, limit)
    return ReadError(refusal.sqlstate, str(refusal))


def _tag(outcome: Outcome, rows: int) -> str:
    return f"SELECT {rows}" if outcome.tag == "SELECT" else outcome.tag

"""The extended query protocol: Parse, Bind, Describe, Execute (with its row count) and Close.

A portal's statement runs once, at its first Describe or Execute, and its answer is kept in the
portal (``cursors.Portal``): an Execute with a row count sends that many DataRows and
PortalSuspended, the next Execute goes on from there, as pgJDBC's ``setFetchSize`` expects.
Portals live until Close, Sync outside a transaction block, or the block's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sensorstream.reads.answer import ReadResult
from sensorstream.serve.pgwire import codec
from sensorstream.serve.pgwire import types as t
from sensorstream.serve.pgwire.codec import Reader
from sensorstream.serve.pgwire.cursors import Portal, Portals
from sensorstream.serve.pgwire.reading import ReadError
from sensorstream.serve.pgwire.results import Outcome, encoders, fields, tag
from sensorstream.serve.pgwire.statements import Command, classify

# Prepared statements a session may keep (pgx caches 512 statements per connection).
MAX_STATEMENTS = 1024


@dataclass
class Prepared:
    sql: str
    command: Command
    param_oids: list[int]
    described: ReadResult | None = None  # columns only (from a LIMIT 0 run)


class ExtendedQuery:
    """The extended protocol of :class:`~sensorstream.serve.pgwire.session.Session` (a mixin)."""

    backend: Any
    user: str
    tx: str
    statements: dict[str, Prepared]
    portals: Portals

    if TYPE_CHECKING:  # the session's

        def send(self, data: bytes) -> None: ...
        async def flush(self) -> None: ...
        def _sql(self, raw: bytes) -> str: ...
        def _settings(self) -> dict[str, str]: ...
        def _show(self, name: str) -> ReadResult: ...
        def _apply(self, outcome: Outcome) -> None: ...
        async def _run(self, command: Command, params: list[Any]) -> Outcome: ...
        async def _pg_named(self, result: ReadResult, sql: str) -> ReadResult: ...
        async def _send_rows(self, rows: list[Any], portal_encoders: list[Any]) -> None: ...
        async def _send_copy(self, outcome: Outcome) -> None: ...

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

    def _prepare(self, sql: str, declared: list[int]) -> tuple[Command, list[int]]:
        """What Parse needs that parses the text (on the endpoint's threads, never on the loop)."""
        command = classify(sql.strip().rstrip(";"))
        query = command.query  # a DECLARE's or a COPY's SELECT holds their placeholders
        oids = self.backend.param_types(query, declared) if query is not None else declared
        return command, oids

    async def _bind(self, msg: Reader) -> None:
        portal_name, statement_name = msg.cstring(), msg.cstring()
        # As in PostgreSQL: only the unnamed portal is replaced by the next Bind; a named one stays
        # until Close, the end of its transaction or the session, so a second Bind to it is refused.
        if portal_name and portal_name in self.portals:
            raise ReadError("42P03", f'portal "{portal_name}" already exists')
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
        self.portals.put(portal_name, Portal(statement, params, msg.int16s()))
        self.send(codec.BIND_COMPLETE)

    async def _describe(self, msg: Reader) -> None:
        what, name = msg.bytes_(1), msg.cstring()
        if what == b"S":
            statement = self.statements.get(name)
            if statement is None:
                raise ReadError("26000", f'prepared statement "{name}" does not exist')
            self.send(codec.parameter_description(statement.param_oids))
            columns = await self._statement_columns(statement)
            self.send(codec.row_description(fields(columns, [])) if columns else codec.NO_DATA)
            return
        portal = self._portal(name)
        outcome = await self._portal_outcome(portal)
        if outcome.result is None or outcome.copy is not None:
            self.send(codec.NO_DATA)
        else:
            self.send(codec.row_description(fields(outcome.result, portal.result_formats)))

    async def _statement_columns(self, statement: Prepared) -> ReadResult | None:
        command = statement.command
        if command.kind == "show":
            return self._show(command.name)
        if command.kind == "fetch" and not command.spec.move:
            cursor = self.portals.get(command.spec.name)
            result = cursor.outcome.result if cursor is not None and cursor.outcome else None
            return ReadResult(result.columns, result.types, []) if result is not None else None
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
            assert portal.statement is not None  # a cursor has its answer from DECLARE on
            outcome = await self._run(portal.statement.command, portal.params)
            self._apply(outcome)
            if outcome.result is not None:
                portal.encoders = encoders(outcome.result, portal.result_formats)
            portal.outcome = outcome
            if outcome.result is not None and any(p is portal for p in self.portals.open.values()):
                try:
                    self.portals.charge(portal)
                except ReadError:
                    portal.outcome = None
                    raise
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
        if outcome.copy is not None:  # Execute's row count does not apply to COPY, as in PostgreSQL
            await self._send_copy(outcome)
            return
        if outcome.result is None:
            self.send(codec.command_complete(tag(outcome, 0)) if outcome.tag else codec.EMPTY_QUERY)
            return
        if not portal.encoders:
            portal.encoders = encoders(outcome.result, portal.result_formats)
        rows = portal.rows
        start = min(portal.pos, len(rows))
        end = len(rows) if limit <= 0 else min(len(rows), start + limit)
        await self._send_rows(rows[start:end], portal.encoders)
        portal.pos = end
        if end < len(rows):
            self.send(codec.PORTAL_SUSPENDED)
        else:
            self.send(codec.command_complete(tag(outcome, len(rows))))
        await self.flush()

    async def _close(self, msg: Reader) -> None:
        what, name = msg.bytes_(1), msg.cstring()
        if what == b"S":
            self.statements.pop(name, None)
        else:
            self.portals.drop(name)
        self.send(codec.CLOSE_COMPLETE)

    def _at_sync(self) -> None:
        # Portals live until the end of their transaction; outside a block, that is Sync.
        if self.tx == "I":
            self.portals.end_block(committed=True)

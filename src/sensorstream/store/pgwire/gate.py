"""The one place the PostgreSQL endpoint reads the store: the same guard and limits as ``POST /sql``.

Everything a client sends that reaches DuckDB (its queries and the catalog queries drivers send
on their own) comes through :func:`run_read`, which checks it with the read API's guard
(``sqlguard.check``: one SELECT, no file readers, no settings) and runs it with the API's row cap
and time limit on a fresh cursor. Unlike the HTTP API it keeps DuckDB's values and type names:
the wire protocol encodes them itself.

Errors come out as :class:`ReadError` with a PostgreSQL SQLSTATE, so clients can tell a refused
write (25006) from a syntax error (42601), a missing table (42P01) or a timeout (57014).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from sensorstream.store.queries import DEFAULT_TIMEOUT_S, MAX_ROWS, QueryTimeout, interrupt_after, read_cursor
from sensorstream.store.sqlguard import SqlRefused, check


@dataclass(frozen=True)
class Limits:
    max_rows: int = MAX_ROWS
    timeout: float = DEFAULT_TIMEOUT_S


@dataclass
class ReadResult:
    columns: list[str]
    types: list[str]  # DuckDB type names, e.g. "TIMESTAMP WITH TIME ZONE"
    rows: list[tuple[Any, ...]]
    truncated: bool = False


class ReadError(Exception):
    """A query the endpoint would not or could not run; ``sqlstate`` is PostgreSQL's code for it."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _refusal_state(message: str) -> str:
    # A statement that would change something is what PostgreSQL calls a write in a read-only
    # transaction; reaching for files or settings is a privilege the endpoint does not grant.
    return "25006" if message.startswith("only SELECT") else "42501"


def _duckdb_state(exc: duckdb.Error) -> str:
    text = str(exc)
    if isinstance(exc, duckdb.ParserException):
        return "42601"
    if isinstance(exc, duckdb.CatalogException):
        if "Function" in text or "function" in text:
            return "42883"
        return "42P01"
    if isinstance(exc, duckdb.BinderException):
        if "not found in FROM clause" in text or "Referenced column" in text:
            return "42703"
        if "function" in text.lower():
            return "42883"
        return "42804"
    if isinstance(exc, duckdb.ConversionException | duckdb.InvalidInputException):
        return "22P02"
    if isinstance(exc, duckdb.OutOfRangeException):
        return "22003"
    if isinstance(exc, duckdb.PermissionException):
        return "42501"
    return "XX000"


def is_syntax_problem(exc: ReadError) -> bool:
    """True for errors a PostgreSQL-to-DuckDB rewrite of the same text might fix."""
    return exc.sqlstate in {"42601", "42883", "42804", "42P01", "42703", "22P02"}


def run_read(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: list[Any] | dict[str, Any] | None = None,
    limits: Limits = Limits(),
) -> ReadResult:
    """Check ``sql`` with the read API's guard and run it on a fresh cursor with its limits."""
    cur = read_cursor(con)
    try:
        try:
            text = check(cur, sql)
        except SqlRefused as exc:
            message = str(exc)
            if message.startswith("SQL does not parse"):
                raise ReadError("42601", message) from None
            raise ReadError(_refusal_state(message), message) from None
        # New lines around the text: a trailing "-- comment" cannot swallow the wrapper.
        wrapped = f"SELECT * FROM (\n{text}\n) AS q LIMIT {int(limits.max_rows) + 1}"
        try:
            with interrupt_after(cur, limits.timeout):
                cur.execute(wrapped, params or None)
                rows = cur.fetchmany(limits.max_rows + 1)
        except QueryTimeout as exc:
            raise ReadError("57014", str(exc)) from None
        except duckdb.Error as exc:
            raise ReadError(_duckdb_state(exc), f"{exc}") from None
        description = cur.description or []
        return ReadResult(
            columns=[d[0] for d in description],
            types=[str(d[1]) for d in description],
            rows=rows[: limits.max_rows],
            truncated=len(rows) > limits.max_rows,
        )
    finally:
        cur.close()

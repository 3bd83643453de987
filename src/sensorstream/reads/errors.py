"""What a refused or failed read raises: one sentence for the user, and a class for the protocol.

Every error carries ``sqlstate`` (PostgreSQL's five-character class, so a PG-wire endpoint can
send it as is) and ``http_status`` (what the HTTP read API answers). All of them are the
user's problem, never the server's: nothing here maps to a 5xx.
"""

from __future__ import annotations

import duckdb


def first_line(exc: BaseException) -> str:
    """An error's message without the lines after it (DuckDB adds a caret diagram or hints)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class QueryError(ValueError):
    """A bad request: unknown query, bad parameter, refused or failed SQL. Maps to HTTP 400."""

    sqlstate = "42000"  # syntax error or access rule violation (the generic class)
    http_status = 400


class InvalidParameter(QueryError):
    """A parameter value is of the wrong kind or out of range."""

    sqlstate = "22023"


class SqlRefused(QueryError):
    """The SQL is not a single read-only SELECT over the store."""

    sqlstate = "42501"  # insufficient privilege


class SqlSyntaxError(SqlRefused):
    """The SQL does not parse."""

    sqlstate = "42601"


class QueryTimeout(QueryError):
    """The query ran longer than allowed and was interrupted."""

    sqlstate = "57014"  # query canceled


class QueryCanceled(QueryError):
    """The client canceled the read while it ran (a PostgreSQL CancelRequest)."""

    sqlstate = "57014"  # query canceled


class TooLarge(QueryError):
    """The query text, its answer or the memory it needs is over a limit."""

    sqlstate = "54000"  # program limit exceeded
    http_status = 413


class ReadBusy(QueryError):
    """All read slots are taken; try again after ``retry_after`` seconds. HTTP 429."""

    sqlstate = "53300"  # too many connections
    http_status = 429

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# DuckDB's exception classes -> the SQLSTATE a PostgreSQL client expects for them.
_SQLSTATES: dict[type[duckdb.Error], str] = {
    duckdb.CatalogException: "42P01",
    duckdb.BinderException: "42703",
    duckdb.ConversionException: "22P02",
    duckdb.OutOfRangeException: "22003",
    duckdb.InvalidInputException: "22023",
    duckdb.PermissionException: "42501",
    duckdb.NotImplementedException: "0A000",
}


def from_duckdb(exc: duckdb.Error) -> QueryError:
    """DuckDB's error as one sentence (its first line: the rest is a caret diagram or hints)."""
    if isinstance(exc, duckdb.ParserException):
        return SqlSyntaxError(f"the SQL does not parse: {first_line(exc)}")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return TooLarge("the query needs more memory than the store gives a read; aggregate or filter more")
    if isinstance(exc, duckdb.PermissionException):
        return SqlRefused(f"the store refused to reach outside itself: {first_line(exc)}")
    error = QueryError(f"the store could not run this query: {first_line(exc)}")
    error.sqlstate = next((s for k, s in _SQLSTATES.items() if isinstance(exc, k)), QueryError.sqlstate)
    return error

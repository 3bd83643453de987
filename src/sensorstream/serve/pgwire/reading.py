"""The PostgreSQL endpoint's reading through the process's shared ``ReadGate``: waits, and refusals as SQLSTATEs.

Everything a client sends that reaches DuckDB (its queries and the catalog queries drivers send on
their own) goes through :meth:`ReadGate.run`, the same call the HTTP read API makes: one guard, one
set of limits (time, rows, bytes, memory), one engine lock-down and one pool of read slots for
both endpoints. This module only adapts it to the protocol:

* a busy gate (all read slots taken) is waited for a little instead of failing at once: Grafana
  fires a dashboard's panels together, and PostgreSQL clients do not retry on 53300;
* every refusal becomes a :class:`ReadError` with the SQLSTATE a PostgreSQL client expects; a
  statement that would write is 25006 (read_only_sql_transaction), as on a read-only server.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sensorstream.reads.answer import ReadResult
from sensorstream.reads.errors import QueryError, ReadBusy, SqlRefused
from sensorstream.reads.gate import Gate

if TYPE_CHECKING:
    from sensorstream.serve.pgwire.cancel import Ticket

BUSY_WAIT_S = 5.0  # how long a read waits for a free slot before the client gets 53300
_BUSY_POLL_S = 0.02


class ReadError(Exception):
    """A statement the endpoint would not or could not run; ``sqlstate`` is PostgreSQL's code for it."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _sqlstate(exc: QueryError) -> str:
    if isinstance(exc, SqlRefused) and str(exc).startswith(("only SELECT", "exactly one statement")):
        return "25006"
    return exc.sqlstate


def is_syntax_problem(exc: ReadError) -> bool:
    """True for errors a PostgreSQL-to-DuckDB rewrite of the same text might fix."""
    return exc.sqlstate in {"42601", "42883", "42804", "42P01", "42703", "22P02", "42000"}


def run_read(
    gate: Gate,
    sql: str,
    params: list[Any] | dict[str, Any] | None = None,
    *,
    busy_wait: float = BUSY_WAIT_S,
    ticket: Ticket | None = None,
) -> ReadResult:
    """``gate.run(sql, params)``, waiting up to ``busy_wait`` seconds for a read slot; under
    ``ticket``'s tag and timeout, so that a CancelRequest can interrupt it (``cancel``)."""
    deadline = time.monotonic() + busy_wait
    while True:
        if ticket is not None:
            ticket.check()
        try:
            if ticket is None:
                return gate.run(sql, params)
            return gate.run(sql, params, tag=ticket.tag, timeout=ticket.timeout)
        except ReadBusy as exc:
            if time.monotonic() >= deadline:
                raise ReadError(exc.sqlstate, str(exc)) from None
            time.sleep(_BUSY_POLL_S)
        except QueryError as exc:
            raise ReadError(_sqlstate(exc), str(exc)) from None

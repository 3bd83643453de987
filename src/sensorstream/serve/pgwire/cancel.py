"""CancelRequest: a second connection names a session by its BackendKeyData and stops its statement.

Each statement a session runs holds a :class:`Ticket`: a random tag its reads carry to the read
gate, and a flag. A CancelRequest with the session's key sets the flag (checked before each read
the statement starts) and asks the gate to interrupt the read running under the tag, the way the
gate's own time limit interrupts it (``ReadGate.cancel``: DuckDB's ``interrupt()`` on that read's
cursor, in the writer's process when the gate is a ``RemoteGate``). The client then gets 57014
"canceling statement due to user request". A request with a wrong key, or for a session that runs
nothing, changes nothing and is not answered, as in PostgreSQL.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import struct
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sensorstream.serve.pgwire.reading import Gate, ReadError

log = logging.getLogger(__name__)

_KEY = struct.Struct("!ii")


class Ticket:
    """One statement's claim on the gate: ``tag`` names its reads there; ``canceled`` once asked;
    ``timeout``: the session's own ``statement_timeout`` in seconds, when it set one tighter than
    the endpoint's."""

    def __init__(self, timeout: float | None = None) -> None:
        self.tag = "pg-" + secrets.token_hex(8)
        self.canceled = False
        self.timeout = timeout

    def check(self) -> None:
        if self.canceled:
            raise canceled()


def canceled() -> ReadError:
    return ReadError("57014", "canceling statement due to user request")


class Canceller:
    """Finds the session a CancelRequest names and interrupts its read, off the endpoint's loop."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        # A thread of its own: the endpoint's pool may be full of the very reads to interrupt.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-cancel")

    def request(self, sessions: Iterable[Any], body: bytes) -> None:
        """A CancelRequest's body (process id, secret key): cancel that session's statement."""
        if len(body) != _KEY.size:
            return
        pid, _ = _KEY.unpack(body)
        for session in sessions:
            if session.pid == pid and hmac.compare_digest(_KEY.pack(pid, session.secret), body):
                if session.running is not None:
                    self.cancel(session.running)
                return

    def cancel(self, ticket: Ticket) -> None:
        if ticket.canceled:  # once per statement: repeated requests queue no more work
            return
        ticket.canceled = True
        self._pool.submit(self._interrupt, ticket.tag)

    def _interrupt(self, tag: str) -> None:
        try:
            self.gate.cancel(tag)
        except Exception as exc:  # the read ends anyway, at its time limit
            log.info("postgres endpoint: could not cancel a read: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

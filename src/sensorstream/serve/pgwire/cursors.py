"""Portals and cursors: the answers a session keeps between messages, and how it moves in them.

PostgreSQL keeps a bound statement (Bind) and a cursor (``DECLARE``) as the same thing, a
portal: both can be described and closed by the extended protocol, and both are dropped at the
end of their transaction unless declared ``WITH HOLD``. Here too: a cursor is a :class:`Portal`
under its name in the session's :class:`Portals`.

Why a cursor's answer is read whole when it is declared: the store is read through the writer's
read gate, whose few slots the HTTP API shares. A cursor that kept its DuckDB result open between
FETCHes would hold a slot for as long as the client likes (psycopg's ``itersize`` loop, a
paused ETL), and two such clients would stall every other reader and the writer's named queries.
So the answer is one ordinary read, within the read limits (time, ``READ_MAX_ROWS``,
``READ_MAX_BYTES``; past them the DECLARE fails, never a cut answer), the slot is released at
once, and FETCH, MOVE and Execute with a row count page through the copy kept in the endpoint's
own process. What a session keeps is bounded by count (:data:`MAX_PORTALS`) and by bytes, per
session and for the whole process (its memory bound restarts it, dropping every session).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlglot.tokens import Token, TokenType

from sensorstream.reads.answer import answer_size
from sensorstream.serve.pgwire.reading import ReadError
from sensorstream.serve.pgwire.results import Encoder, Outcome

# Portals and cursors a session may keep open at once (pgJDBC keeps one per open ResultSet).
MAX_PORTALS = 64


# --- what DECLARE, FETCH/MOVE and CLOSE say ----------------------------------------------------------
@dataclass(frozen=True)
class Declare:
    name: str
    query: str
    binary: bool = False
    scroll: bool | None = None  # None: neither SCROLL nor NO SCROLL was written
    hold: bool = False


@dataclass(frozen=True)
class Fetch:
    name: str
    direction: str = "forward"  # forward / backward / absolute / relative
    count: int | None = 1  # None: ALL
    move: bool = False


@dataclass(frozen=True)
class Close:
    name: str | None  # None: CLOSE ALL


def _syntax(near: str) -> ReadError:
    return ReadError("42601", f'syntax error at or near "{near}"' if near else "syntax error at end of input")


def _name(token: Token) -> str:
    """An identifier as PostgreSQL keeps it: folded to lower case unless quoted."""
    return token.text if token.token_type == TokenType.IDENTIFIER else token.text.lower()


class _Words:
    """The tokens of a statement's rest, read front to back."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens, self.i = tokens, 0

    def peek(self) -> str:
        return self.tokens[self.i].text.upper() if self.i < len(self.tokens) else ""

    def take(self, *words: str) -> str | None:
        if self.peek() in words:
            self.i += 1
            return self.tokens[self.i - 1].text.upper()
        return None

    def expect(self, word: str) -> Token:
        if self.peek() != word:
            raise _syntax(self.peek())
        self.i += 1
        return self.tokens[self.i - 1]

    def name(self) -> str:
        if self.i >= len(self.tokens):
            raise _syntax("")
        self.i += 1
        return _name(self.tokens[self.i - 1])

    def number(self) -> int | None:
        """A signed integer, or None when the next token is not one."""
        sign = 1
        start = self.i
        if self.peek() in ("-", "+"):
            sign = -1 if self.peek() == "-" else 1
            self.i += 1
        if self.i < len(self.tokens) and self.tokens[self.i].token_type == TokenType.NUMBER:
            text = self.tokens[self.i].text
            if text.isdigit():
                self.i += 1
                return sign * int(text)
        self.i = start
        return None

    def end(self) -> None:
        if self.i < len(self.tokens):
            raise _syntax(self.tokens[self.i].text)


def parse_declare(rest: str, tokens: list[Token]) -> Declare:
    """``DECLARE name [BINARY] [ASENSITIVE | INSENSITIVE] [[NO] SCROLL] CURSOR [{WITH | WITHOUT}
    HOLD] FOR query``."""
    words = _Words(tokens)
    name = words.name()
    binary, scroll = False, None
    while word := words.take("BINARY", "ASENSITIVE", "INSENSITIVE", "NO", "SCROLL"):
        if word == "BINARY":
            binary = True
        elif word == "NO":
            words.expect("SCROLL")
            scroll = False
        elif word == "SCROLL":
            scroll = True
    words.expect("CURSOR")
    hold = False
    if words.take("WITH", "WITHOUT") is not None:
        hold = tokens[words.i - 1].text.upper() == "WITH"
        words.expect("HOLD")
    for_token = words.expect("FOR")
    query = rest[for_token.end + 1 :].strip()
    if not query:
        raise _syntax("")
    return Declare(name, query, binary, scroll, hold)


def parse_fetch(command: str, rest: str, tokens: list[Token]) -> Fetch:
    """``FETCH | MOVE [direction] [FROM | IN] name``, with PostgreSQL's directions: NEXT, PRIOR,
    FIRST, LAST, ABSOLUTE n, RELATIVE n, n, ALL, FORWARD [n | ALL], BACKWARD [n | ALL]."""
    words = _Words(tokens)
    direction, count = "forward", 1
    word = words.take("NEXT", "PRIOR", "FIRST", "LAST", "ABSOLUTE", "RELATIVE", "ALL", "FORWARD", "BACKWARD")
    if word in ("PRIOR", "BACKWARD"):
        direction = "backward"
    if word in ("FIRST", "LAST"):
        direction, count = "absolute", 1 if word == "FIRST" else -1
    elif word in ("ABSOLUTE", "RELATIVE"):
        direction, number = word.lower(), words.number()
        if number is None:
            raise _syntax(words.peek())
        count = number
    elif word == "ALL":
        count = None
    elif word in (None, "FORWARD", "BACKWARD"):
        if word is not None and words.take("ALL"):
            count = None
        else:
            number = words.number()
            count = 1 if number is None else number
    if count is not None and count < 0 and direction in ("forward", "backward"):
        direction, count = "backward" if direction == "forward" else "forward", -count
    words.take("FROM", "IN")
    name = words.name()
    words.end()
    return Fetch(name, direction, count, move=command == "MOVE")


def parse_close(rest: str, tokens: list[Token]) -> Close:
    words = _Words(tokens)
    if words.take("ALL"):
        words.end()
        return Close(None)
    name = words.name()
    words.end()
    return Close(name)


# --- what a session keeps ------------------------------------------------------------------------------
@dataclass
class Portal:
    """A bound statement or a cursor, and where the client is in its answer.

    ``pos`` is PostgreSQL's cursor position over the n rows: 0 before the first, k on row k,
    n + 1 after the last. A protocol Execute and FETCH FORWARD both go on from there.
    """

    statement: Any  # the Prepared statement it was bound from; None for a DECLAREd cursor
    params: list[Any]
    result_formats: list[int]
    outcome: Outcome | None = None
    pos: int = 0
    encoders: list[Encoder] = field(default_factory=list)
    cursor: Declare | None = None
    in_block: bool = False  # made in the open transaction block: a ROLLBACK drops it, even WITH HOLD
    size: int = 0  # bytes charged for its answer

    @property
    def rows(self) -> list[Any]:
        result = self.outcome.result if self.outcome else None
        return result.rows if result is not None else []


def move(portal: Portal, fetch: Fetch) -> list[Any]:
    """The rows ``fetch`` returns (in the order it returns them), moving ``portal`` as PostgreSQL does."""
    rows, pos = portal.rows, portal.pos
    n = len(rows)
    if fetch.direction in ("absolute", "relative"):
        count = fetch.count or 0
        if fetch.direction == "relative":
            target = pos + count
        elif count >= 0:
            target = count
        else:
            target = n + 1 + count
        # Reaching the current row again, or an earlier one, reads backward.
        _check_scroll(portal, backward=target < pos or (target == pos and 0 < pos <= n))
        portal.pos = min(max(target, 0), n + 1)
        return [rows[portal.pos - 1]] if 1 <= portal.pos <= n else []
    wanted = n + 1 if fetch.count is None else fetch.count
    if fetch.direction == "forward":
        if wanted == 0:  # FORWARD 0 is RELATIVE 0: the current row again
            return move(portal, Fetch(fetch.name, "relative", 0, fetch.move))
        taken = rows[pos : pos + wanted] if pos < n else []
        portal.pos = pos + len(taken) if len(taken) == wanted else n + 1
        return taken
    _check_scroll(portal, backward=True)
    if wanted == 0:
        return move(portal, Fetch(fetch.name, "relative", 0, fetch.move))
    taken = rows[max(pos - 1 - wanted, 0) : max(pos - 1, 0)][::-1]
    portal.pos = pos - len(taken) if len(taken) == wanted else 0
    return taken


def _check_scroll(portal: Portal, *, backward: bool) -> None:
    if backward and portal.cursor is not None and portal.cursor.scroll is False:
        raise ReadError("55000", "cursor can only scan forward; declare it with SCROLL to go backward")


class HeldBytes:
    """The bytes of answers all sessions of the process keep open, against one bound."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0


class Portals:
    """A session's portals and cursors (one namespace, as in PostgreSQL), within its bounds."""

    def __init__(self, session_limit: int, shared: HeldBytes) -> None:
        self.limit, self.shared = session_limit, shared
        self.open: dict[str, Portal] = {}
        self.held = 0

    def get(self, name: str) -> Portal | None:
        return self.open.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self.open

    def put(self, name: str, portal: Portal) -> None:
        """Keep ``portal`` as ``name``, replacing one of that name (Bind's unnamed portal)."""
        if name not in self.open and len(self.open) >= MAX_PORTALS:
            raise ReadError(
                "54000", f"at most {MAX_PORTALS} open portals and cursors per connection; close some first"
            )
        self.drop(name)
        self.open[name] = portal

    def charge(self, portal: Portal) -> None:
        """Count ``portal``'s answer against the bounds once it has one; past them it is refused."""
        size = answer_size(portal.rows)
        if self.held + size > self.limit:
            raise ReadError(
                "54000",
                f"the open portals and cursors of this connection would hold more than {self.limit:,} "
                "bytes of answers (twice SENSORSTREAM_READ_MAX_BYTES); close some, or fetch fewer rows",
            )
        if self.shared.held + size > self.shared.limit:
            raise ReadError(
                "53200",
                f"the PostgreSQL endpoint already holds {self.shared.held:,} bytes of open portals' and "
                f"cursors' answers, its bound (an eighth of SENSORSTREAM_PG_MEMORY_LIMIT); retry later",
            )
        portal.size = size
        self.held += size
        self.shared.held += size

    def drop(self, name: str) -> bool:
        portal = self.open.pop(name, None)
        if portal is None:
            return False
        self.held -= portal.size
        self.shared.held -= portal.size
        return True

    def close_cursors(self) -> None:
        """CLOSE ALL: every cursor; portals bound by the protocol stay."""
        for name in [n for n, p in self.open.items() if p.cursor is not None]:
            self.drop(name)

    def end_block(self, committed: bool) -> None:
        """At COMMIT or ROLLBACK: what the block made goes, but for a committed WITH HOLD cursor."""
        for name, portal in list(self.open.items()):
            if portal.cursor is not None and portal.cursor.hold and (committed or not portal.in_block):
                portal.in_block = False
            else:
                self.drop(name)

    def clear(self) -> None:
        for name in list(self.open):
            self.drop(name)

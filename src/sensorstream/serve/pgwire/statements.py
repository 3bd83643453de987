"""Splitting a simple-protocol query string into statements, and sorting each statement.

sqlglot's tokenizer knows quoting and comments, so a ``;`` inside a string does not split. Each
statement is sorted into a session command this endpoint answers itself (``SET``, ``SHOW``,
``BEGIN``/``COMMIT``, ``DISCARD`` ...), a cursor command (``DECLARE``/``FETCH``/``MOVE``/``CLOSE``,
read by ``cursors``), a ``COPY`` (read by ``copy_out``) or a query for the store. This runs on
the endpoint's threads, never on its loop: it parses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from sensorstream.serve.pgwire import copy_out, cursors

_TOKENIZER_DIALECT = Postgres()

TX_TAGS = {
    "BEGIN": ("BEGIN", "T"),
    "START": ("START TRANSACTION", "T"),
    "COMMIT": ("COMMIT", "I"),
    "END": ("COMMIT", "I"),
    "ROLLBACK": ("ROLLBACK", "I"),
    "ABORT": ("ROLLBACK", "I"),
}
# Statements about the session that change nothing in the store: acknowledged, not run.
NOOP_TAGS = {
    "SAVEPOINT": "SAVEPOINT",
    "RELEASE": "RELEASE",
    "DISCARD": "DISCARD ALL",
    "DEALLOCATE": "DEALLOCATE",
    "RESET": "RESET",
    "LISTEN": "LISTEN",
    "UNLISTEN": "UNLISTEN",
}


@dataclass
class Command:
    """One statement, sorted: ``kind`` is empty / tx / set / show / noop / query / declare /
    fetch / close / copy; ``spec`` holds what ``cursors`` or ``copy_out`` read from it."""

    kind: str
    sql: str
    tag: str = ""
    tx_state: str = ""  # for tx: the transaction status afterwards (I or T)
    name: str = ""  # for set / show: the setting, lower case
    value: str = ""  # for set
    words: list[str] = field(default_factory=list)
    spec: Any = None

    @property
    def query(self) -> str | None:
        """The SELECT this statement reads the store with (its own text, a cursor's, a COPY's)."""
        if self.kind == "query":
            return self.sql
        return getattr(self.spec, "query", None)


def tokens(sql: str) -> list[sqlglot.tokens.Token] | None:
    """The tokens of ``sql`` (comments are not tokens), or None when it does not tokenize."""
    try:
        return _TOKENIZER_DIALECT.tokenize(sql)
    except SqlglotError:
        return None


def split_statements(sql: str) -> list[str]:
    """The statements of a simple-protocol query, without their ``;``: a query of only blanks,
    comments and ``;`` gives ``[]`` (PostgreSQL answers it with EmptyQueryResponse; pgx pings so)."""
    found = tokens(sql)
    if found is None:
        return [sql] if sql.strip() and sql.strip().strip(";").strip() else []
    pieces, start, has_tokens = [], 0, False
    for token in found:
        if token.token_type == TokenType.SEMICOLON:
            if has_tokens:  # a piece of only comments or blanks is no statement
                pieces.append(sql[start : token.start].strip())
            start, has_tokens = token.end + 1, False
        else:
            has_tokens = True
    if has_tokens:
        pieces.append(sql[start:].strip())
    return pieces


def _dotted(words: list[str]) -> list[str]:
    """``words`` with a leading ``my . setting`` (three tokens) as one name, ``my.setting``: a
    custom setting's name, which PostgreSQL keeps apart from ``my.other``."""
    words = list(words)
    while len(words) >= 3 and words[1] == ".":
        words[:3] = [f"{words[0]}.{words[2]}"]
    return words


def _setting_text(words: list[str]) -> str:
    return " ".join(w.strip("'\"") for w in words)


def _rest(sql: str, first: sqlglot.tokens.Token) -> tuple[str, list[sqlglot.tokens.Token]]:
    """The text after the first word and its tokens (sqlglot keeps DECLARE's and FETCH's rest as
    one string token), positions counted in that text."""
    rest = sql[first.end + 1 :]
    return rest, tokens(rest) or []


def classify(sql: str) -> Command:
    """Sort one statement (without its ``;``); a malformed cursor or COPY command is a ReadError."""
    found = tokens(sql)
    if found is None:
        return Command("empty", sql) if not sql.strip() else Command("query", sql)
    if not found:  # blanks and comments only
        return Command("empty", sql)
    first = found[0].text.upper()
    words = [t.text for t in found]
    if first in TX_TAGS:
        tag, state = TX_TAGS[first]
        return Command("tx", sql, tag=tag, tx_state=state)
    if first in NOOP_TAGS:
        return Command("noop", sql, tag=NOOP_TAGS[first])
    if first == "DECLARE":
        return Command(
            "declare", sql, tag="DECLARE CURSOR", spec=cursors.parse_declare(*_rest(sql, found[0]))
        )
    if first in ("FETCH", "MOVE"):
        return Command("fetch", sql, tag=first, spec=cursors.parse_fetch(first, *_rest(sql, found[0])))
    if first == "CLOSE":
        return Command("close", sql, tag="CLOSE CURSOR", spec=cursors.parse_close(*_rest(sql, found[0])))
    if first == "COPY":
        return Command("copy", sql, tag="COPY", spec=copy_out.parse_copy(sql, found))
    if first == "SET":
        rest = words[1:]
        if rest and rest[0].upper() in {"SESSION", "LOCAL"}:
            rest = rest[1:]
        rest = _dotted(rest)
        if len(rest) >= 2 and rest[0].upper() == "TIME" and rest[1].upper() == "ZONE":
            return Command("set", sql, tag="SET", name="timezone", value=_setting_text(rest[2:]))
        if not rest:
            return Command("set", sql, tag="SET")
        values = rest[2:] if len(rest) > 1 and rest[1].upper() in {"TO", "="} else rest[1:]
        return Command("set", sql, tag="SET", name=rest[0].lower().strip('"'), value=_setting_text(values))
    if first == "SHOW":
        name = " ".join(w.lower().strip('"') for w in _dotted(words[1:]))
        return Command("show", sql, tag="SHOW", name=name)
    return Command("query", sql, words=words)

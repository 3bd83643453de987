"""What a statement produced, and its rows as the protocol sends them (text or binary per column).

One encoder per column (``types.encoder``) serves every way rows leave the endpoint: DataRow
messages for a query, a portal or a cursor's FETCH, and COPY's text and CSV lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sensorstream.reads.answer import ReadResult
from sensorstream.serve.pgwire import types as t
from sensorstream.serve.pgwire.reading import ReadError

Encoder = Callable[[Any], bytes]


@dataclass
class Outcome:
    """What one statement produced: a tag, and for row-returning ones the columns and rows.

    ``formats``: the result format codes a binary cursor's FETCH sends in the simple protocol
    (the extended protocol's come from Bind); ``copy``: a COPY's options, its rows leave as CopyData.
    """

    tag: str
    result: ReadResult | None = None
    tx_state: str = ""
    formats: list[int] = field(default_factory=list)
    copy: Any = None


def format_code(formats: list[int], i: int) -> int:
    if not formats:
        return 0
    return formats[i] if len(formats) > 1 else formats[0]


def fields(result: ReadResult, formats: list[int]) -> list[tuple[str, int, int, int]]:
    found = []
    for i, (name, duck_type) in enumerate(zip(result.columns, result.types, strict=True)):
        pg = t.pg_type(duck_type)
        found.append((name, pg.oid, pg.size, format_code(formats, i)))
    return found


def encoders(result: ReadResult, formats: list[int]) -> list[Encoder]:
    return [
        t.encoder(t.pg_type(duck).oid, format_code(formats, i) == 1) for i, duck in enumerate(result.types)
    ]


def encode_row(row: Any, row_encoders: list[Encoder]) -> list[bytes | None]:
    encoded: list[bytes | None] = []
    for value, encode in zip(row, row_encoders, strict=True):
        try:
            encoded.append(None if value is None else encode(value))
        except (AttributeError, TypeError, ValueError, OverflowError):
            # DuckDB hands a date past Python's year 9999 over as text: the answer stops, not the session.
            state = "22008" if isinstance(value, str) else "22003"  # datetime_field_overflow
            raise ReadError(
                state, f"the value {str(value)[:40]!r} is out of the range this endpoint can send"
            ) from None
    return encoded


def tag(outcome: Outcome, rows: int) -> str:
    return f"SELECT {rows}" if outcome.tag == "SELECT" else outcome.tag

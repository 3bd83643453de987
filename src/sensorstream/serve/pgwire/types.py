"""PostgreSQL types for DuckDB's: OIDs, and the text and binary encodings both ways.

A result column is described by the DuckDB type name the cursor reports; :func:`pg_type` maps it
to the PostgreSQL type a client expects (``TIMESTAMP WITH TIME ZONE`` is ``timestamptz``, 1184,
so Grafana and JDBC see an instant, not a wall-clock time). Types PostgreSQL has no close match for
(structs, maps, lists, unions) are sent as ``text``: every client can show them, none misreads them.

Parameters arrive as text or binary in the type the client named (or that we inferred, see
``params.py``); :func:`decode_param` turns them into the Python value DuckDB binds.
"""

from __future__ import annotations

import math
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

# OIDs from PostgreSQL's pg_type.dat (stable since forever; clients hard-code them too).
BOOL, BYTEA, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 19, 20, 21, 23, 25, 26
JSON, FLOAT4, FLOAT8, UNKNOWN, BPCHAR, VARCHAR = 114, 700, 701, 705, 1042, 1043
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, NUMERIC, UUID, JSONB = (
    1082,
    1083,
    1114,
    1184,
    1186,
    1700,
    2950,
    3802,
)
REGCLASS, REGTYPE, CHAR = 2205, 2206, 18

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
PG_EPOCH_NAIVE = datetime(2000, 1, 1)
PG_EPOCH_DATE = date(2000, 1, 1)
_INT2, _INT4, _INT8 = struct.Struct("!h"), struct.Struct("!i"), struct.Struct("!q")
_FLOAT4, _FLOAT8 = struct.Struct("!f"), struct.Struct("!d")


@dataclass(frozen=True)
class PgType:
    oid: int
    name: str
    size: int  # typlen in RowDescription; -1 for variable length
    element: int = 0  # for an array type: its element's OID


# Array types of the element types above (pg_type.dat's typarray), sent for DuckDB's lists.
ARRAY_OIDS: dict[int, int] = {
    BOOL: 1000, BYTEA: 1001, NAME: 1003, INT2: 1005, INT4: 1007, TEXT: 1009,
    INT8: 1016, FLOAT4: 1021, FLOAT8: 1022, OID: 1028, TIMESTAMP: 1115, DATE: 1182, TIME: 1183,
    TIMESTAMPTZ: 1185, INTERVAL: 1187, NUMERIC: 1231, UUID: 2951, JSON: 199,
}  # fmt: skip


TYPES: dict[int, PgType] = {
    t.oid: t
    for t in (
        PgType(BOOL, "bool", 1),
        PgType(BYTEA, "bytea", -1),
        PgType(NAME, "name", 64),
        PgType(INT8, "int8", 8),
        PgType(INT2, "int2", 2),
        PgType(INT4, "int4", 4),
        PgType(TEXT, "text", -1),
        PgType(OID, "oid", 4),
        PgType(JSON, "json", -1),
        PgType(FLOAT4, "float4", 4),
        PgType(FLOAT8, "float8", 8),
        PgType(VARCHAR, "varchar", -1),
        PgType(DATE, "date", 4),
        PgType(TIME, "time", 8),
        PgType(TIMESTAMP, "timestamp", 8),
        PgType(TIMESTAMPTZ, "timestamptz", 8),
        PgType(INTERVAL, "interval", 16),
        PgType(NUMERIC, "numeric", -1),
        PgType(UUID, "uuid", 16),
    )
}
TYPES.update({a: PgType(a, "_" + TYPES[e].name, -1, e) for e, a in ARRAY_OIDS.items() if e in TYPES})

# DuckDB type name (without size or precision) -> PostgreSQL OID.
_BY_DUCKDB_NAME = {
    "BOOLEAN": BOOL,
    "TINYINT": INT2, "SMALLINT": INT2, "UTINYINT": INT2,
    "INTEGER": INT4, "USMALLINT": INT4,
    "BIGINT": INT8, "UINTEGER": INT8,
    "UBIGINT": NUMERIC, "HUGEINT": NUMERIC, "UHUGEINT": NUMERIC, "DECIMAL": NUMERIC, "VARINT": NUMERIC, "BIGNUM": NUMERIC,
    "FLOAT": FLOAT4, "DOUBLE": FLOAT8,
    "VARCHAR": VARCHAR, "BLOB": BYTEA, "JSON": JSON, "UUID": UUID,
    "DATE": DATE, "TIME": TIME, "INTERVAL": INTERVAL,
    "TIMESTAMP": TIMESTAMP, "TIMESTAMP_S": TIMESTAMP, "TIMESTAMP_MS": TIMESTAMP, "TIMESTAMP_NS": TIMESTAMP,
    "TIMESTAMP WITH TIME ZONE": TIMESTAMPTZ,
}  # fmt: skip


DUCKDB_NAMES = tuple(_BY_DUCKDB_NAME)


def pg_type(duckdb_type: str) -> PgType:
    """The PostgreSQL type a column of ``duckdb_type`` is sent as (``text`` when there is no match).

    A list of a scalar (``INTEGER[]``) is that scalar's array type (``int4[]``), as PostgreSQL's
    catalogs send ``conkey`` or ``current_schemas()``; nested lists and fixed-size arrays are text,
    shown the way DuckDB prints them."""
    if duckdb_type.endswith("[]") and _base(duckdb_type[:-2]) in _BY_DUCKDB_NAME:
        element = _BY_DUCKDB_NAME[_base(duckdb_type[:-2])]
        # A list of strings is text[], not varchar[]: asyncpg decodes text[] (and oid[]) without
        # looking the type up in the catalog with a recursive query this endpoint refuses.
        return TYPES[ARRAY_OIDS[TEXT if element == VARCHAR else element]]
    if duckdb_type.endswith("]"):
        return TYPES[TEXT]
    return TYPES[_BY_DUCKDB_NAME.get(_base(duckdb_type), TEXT)]


def _base(duckdb_type: str) -> str:
    """``DECIMAL(18,3)`` -> ``DECIMAL``; a list type keeps its brackets and matches no scalar."""
    return duckdb_type.split("(", 1)[0].strip().upper()


# --- results: Python value (as DuckDB returns it) -> bytes -------------------------------------------
def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _timestamp_text(value: datetime) -> str:
    return value.replace(tzinfo=None).isoformat(sep=" ")


def _timestamptz_text(value: datetime) -> str:
    # PostgreSQL's ISO DateStyle in zone UTC: "2026-11-27 18:00:00.5+00".
    return _utc(value).replace(tzinfo=None).isoformat(sep=" ") + "+00"


def _interval_parts(value: timedelta) -> tuple[int, int, int]:
    """(microseconds, days, months) of ``value``; DuckDB hands intervals over as timedeltas."""
    micros = value.seconds * 1_000_000 + value.microseconds
    return micros, value.days, 0


def _interval_text(value: timedelta) -> str:
    micros, days, _ = _interval_parts(value)
    seconds, frac = divmod(micros, 1_000_000)
    clock = f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    if frac:
        clock += f".{frac:06d}".rstrip("0")
    if not days:
        return clock
    return f"{days} day{'s' if abs(days) != 1 else ''} {clock}"


def _numeric_text(value: Any) -> str:
    if isinstance(value, Decimal):
        return "NaN" if value.is_nan() else format(value, "f")
    return str(value)


def _bool_text(value: Any) -> str:
    return "t" if value else "f"


def _generic_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


_TEXT_OUT: dict[int, Callable[[Any], str]] = {
    BOOL: _bool_text,
    FLOAT4: _float_text,
    FLOAT8: _float_text,
    NUMERIC: _numeric_text,
    TIMESTAMP: _timestamp_text,
    TIMESTAMPTZ: _timestamptz_text,
    INTERVAL: _interval_text,
    DATE: lambda v: v.isoformat(),
    TIME: lambda v: v.isoformat(),
    BYTEA: lambda v: "\\x" + bytes(v).hex(),
}


def _micros_since(value: datetime, epoch: datetime) -> int:
    delta = value - epoch
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _numeric_binary(value: Any) -> bytes:
    """PostgreSQL's binary numeric: base-10000 digits, weight, sign and display scale."""
    dec = value if isinstance(value, Decimal) else Decimal(value)
    if dec.is_nan():
        return struct.pack("!hhHh", 0, 0, 0xC000, 0)
    sign, digits, exponent = dec.as_tuple()
    assert isinstance(exponent, int)
    dscale = max(-exponent, 0)
    # Pad the decimal digits so the point falls on a base-10000 boundary on both sides.
    int_len = len(digits) + exponent  # digits before the point (may be <= 0)
    text = "".join(map(str, digits))
    if int_len <= 0:
        text = "0" * (-int_len) + text
        int_len = 0
    elif exponent > 0:
        text += "0" * exponent
    front = (-int_len) % 4
    text = "0" * front + text
    int_len += front
    text += "0" * ((-len(text)) % 4)
    groups = [int(text[i : i + 4]) for i in range(0, len(text), 4)]
    weight = int_len // 4 - 1
    while groups and groups[0] == 0:  # leading zero groups carry no information
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    head = struct.pack("!hhHh", len(groups), weight, 0x4000 if sign else 0, dscale)
    return head + b"".join(_INT2.pack(g) for g in groups)


_BINARY_OUT: dict[int, Callable[[Any], bytes]] = {
    BOOL: lambda v: b"\x01" if v else b"\x00",
    INT2: lambda v: _INT2.pack(int(v)),
    INT4: lambda v: _INT4.pack(int(v)),
    INT8: lambda v: _INT8.pack(int(v)),
    OID: lambda v: _INT4.pack(int(v)),
    FLOAT4: lambda v: _FLOAT4.pack(v),
    FLOAT8: lambda v: _FLOAT8.pack(v),
    NUMERIC: _numeric_binary,
    TIMESTAMP: lambda v: _INT8.pack(_micros_since(v.replace(tzinfo=None), PG_EPOCH_NAIVE)),
    TIMESTAMPTZ: lambda v: _INT8.pack(_micros_since(_utc(v), PG_EPOCH)),
    DATE: lambda v: _INT4.pack((v - PG_EPOCH_DATE).days),
    TIME: lambda v: _INT8.pack(((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond),
    INTERVAL: lambda v: struct.pack("!qii", *_interval_parts(v)),
    UUID: lambda v: v.bytes if isinstance(v, uuid.UUID) else uuid.UUID(str(v)).bytes,
    BYTEA: bytes,
}


_ARRAY_SPECIAL = re.compile(r'[{}",\\\s]')


def _array_text(element: Callable[[Any], str]) -> Callable[[Any], str]:
    """PostgreSQL's array literal, ``{a,"b c",NULL}``: an element is quoted when it is empty,
    holds a delimiter, brace, quote, backslash or blank, or reads as NULL."""

    def quote(value: Any) -> str:
        if value is None:
            return "NULL"
        text = element(value)
        if text == "" or text.upper() == "NULL" or _ARRAY_SPECIAL.search(text):
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return text

    return lambda values: "{" + ",".join(quote(v) for v in values) + "}"


def _array_binary(element_oid: int, element: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """PostgreSQL's binary array: dimensions, a has-NULLs flag, the element OID, then each element
    with its length (-1 for NULL). One dimension, counted from 1; an empty array has none."""

    def encode(values: Any) -> bytes:
        if not values:
            return struct.pack("!iii", 0, 0, element_oid)
        has_null = any(v is None for v in values)
        parts = [struct.pack("!iiiii", 1, int(has_null), element_oid, len(values), 1)]
        for value in values:
            if value is None:
                parts.append(_INT4.pack(-1))
            else:
                data = element(value)
                parts.append(_INT4.pack(len(data)) + data)
        return b"".join(parts)

    return encode


def encoder(oid: int, binary: bool) -> Callable[[Any], bytes]:
    """The encoder for one result column, looked up once per column rather than once per value."""
    element = TYPES[oid].element if oid in TYPES else 0
    if element:
        if binary:
            return _array_binary(element, encoder(element, binary=True))
        text_array = _array_text(_TEXT_OUT.get(element, _generic_text))
        return lambda values: text_array(values).encode()
    if binary:
        found = _BINARY_OUT.get(oid)
        if found is not None:
            return found
    text = _TEXT_OUT.get(oid, _generic_text)
    return lambda value: text(value).encode()


# --- parameters: bytes in the client's type -> Python value for DuckDB -------------------------------
class ParamDecodeError(ValueError):
    """A parameter's bytes do not read as the type it was sent as (SQLSTATE 22P02)."""


def _parse_timestamp(text: str, with_zone: bool) -> datetime:
    text = text.strip().replace("Z", "+00:00")
    # PostgreSQL writes offsets as "+00" or "+05:30"; fromisoformat wants "+HH:MM".
    if len(text) > 3 and text[-3] in "+-" and text[-2:].isdigit():
        text += ":00"
    value = datetime.fromisoformat(text)
    if with_zone:
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return value.replace(tzinfo=None)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("t", "true", "y", "yes", "on", "1"):
        return True
    if lowered in ("f", "false", "n", "no", "off", "0"):
        return False
    raise ValueError(f"{text!r} is not a boolean")


def _parse_bytea(text: str) -> bytes:
    return bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode()


_TEXT_IN: dict[int, Callable[[str], Any]] = {
    BOOL: _parse_bool,
    INT2: int,
    INT4: int,
    INT8: int,
    OID: int,
    FLOAT4: float,
    FLOAT8: float,
    NUMERIC: Decimal,
    TIMESTAMP: lambda t: _parse_timestamp(t, False),
    TIMESTAMPTZ: lambda t: _parse_timestamp(t, True),
    DATE: date.fromisoformat,
    TIME: time.fromisoformat,
    UUID: uuid.UUID,
    BYTEA: _parse_bytea,
}


def _numeric_from_binary(data: bytes) -> Decimal:
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHh", data)
    if sign == 0xC000:
        return Decimal("NaN")
    digits = struct.unpack_from(f"!{ndigits}H", data, 8)
    value = sum((Decimal(d) * Decimal(10000) ** (weight - i) for i, d in enumerate(digits)), Decimal(0))
    value = value.quantize(Decimal(1).scaleb(-dscale)) if dscale else value.to_integral_value()
    return -value if sign == 0x4000 else value


_BINARY_IN: dict[int, Callable[[bytes], Any]] = {
    BOOL: lambda b: b != b"\x00",
    INT2: lambda b: _INT2.unpack(b)[0],
    INT4: lambda b: _INT4.unpack(b)[0],
    OID: lambda b: struct.unpack("!I", b)[0],
    INT8: lambda b: _INT8.unpack(b)[0],
    FLOAT4: lambda b: _FLOAT4.unpack(b)[0],
    FLOAT8: lambda b: _FLOAT8.unpack(b)[0],
    NUMERIC: _numeric_from_binary,
    TIMESTAMP: lambda b: PG_EPOCH_NAIVE + timedelta(microseconds=_INT8.unpack(b)[0]),
    TIMESTAMPTZ: lambda b: PG_EPOCH + timedelta(microseconds=_INT8.unpack(b)[0]),
    DATE: lambda b: PG_EPOCH_DATE + timedelta(days=_INT4.unpack(b)[0]),
    TIME: lambda b: (datetime.min + timedelta(microseconds=_INT8.unpack(b)[0])).time(),
    INTERVAL: lambda b: _interval_from_binary(b),
    UUID: lambda b: uuid.UUID(bytes=bytes(b)),
    BYTEA: bytes,
}


def _interval_from_binary(data: bytes) -> timedelta:
    micros, days, months = struct.unpack("!qii", data)
    # DuckDB's Python binding has no month-aware interval; a month counts 30 days as in DuckDB.
    return timedelta(days=days + 30 * months, microseconds=micros)


def decode_param(oid: int, data: bytes | None, binary: bool) -> Any:
    """The Python value of one Bind parameter sent as type ``oid`` (``None`` for SQL NULL)."""
    if data is None:
        return None
    try:
        if binary:
            decoder = _BINARY_IN.get(oid)
            return decoder(data) if decoder is not None else data.decode()
        text = data.decode()
        parser = _TEXT_IN.get(oid)
        return parser(text) if parser is not None else text
    except (ValueError, struct.error, UnicodeDecodeError, ArithmeticError) as exc:
        name = TYPES[oid].name if oid in TYPES else f"type {oid}"
        raise ParamDecodeError(f"invalid input for a parameter of {name}: {exc}") from None

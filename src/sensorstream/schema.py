"""The sensor event, defined once.

The producer, the sink's parser, the DuckDB ``readings`` table and the tests all derive their view
of an event from :data:`EVENT_FIELDS`; the README's "The event" section states the contract for users:

    {"event_id": "9f1c…", "sensor_id": "sensor-0042", "event_time": "2026-11-26T20:15:03.120Z",
     "value": 21.73, "sensor_type": "temperature", "unit": "C", "site": "plant-a"}
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any


@dataclass(frozen=True)
class Field:
    name: str
    json_type: str  # "string" | "number" | "timestamp"
    required: bool
    duckdb_type: str


EVENT_FIELDS: tuple[Field, ...] = (
    Field("event_id", "string", True, "VARCHAR"),
    Field("sensor_id", "string", True, "VARCHAR"),
    Field("event_time", "timestamp", True, "TIMESTAMPTZ"),
    Field("value", "number", True, "DOUBLE"),
    Field("sensor_type", "string", False, "VARCHAR"),
    Field("unit", "string", False, "VARCHAR"),
    Field("site", "string", False, "VARCHAR"),
)
REQUIRED = tuple(f.name for f in EVENT_FIELDS if f.required)
OPTIONAL = tuple(f.name for f in EVENT_FIELDS if not f.required)
STRING_FIELDS = tuple(f.name for f in EVENT_FIELDS if f.json_type == "string")


class Reason:
    """Dead-letter reasons: stable identifiers, then a colon and details where useful."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING = "missing_field"  # missing_field:<name>
    WRONG_TYPE = "wrong_type"  # wrong_type:<name>
    EMPTY = "empty_string"  # empty_string:<name>
    NOT_FINITE = "value_not_finite"
    BAD_TIME = "bad_event_time"
    OUT_OF_RANGE = "out_of_range"
    TOO_DEEP = "too_deep"  # brackets nested deeper than MAX_DEPTH
    INTERNAL = "internal_error"  # internal_error:<exception>: judging the record raised


# How deep a message's brackets may nest. An event is one flat object (depth 1); extra fields may
# hold a few levels more. Deeper input is refused before it is parsed: Python's json recurses once
# per level, so ~1,000 levels (fewer inside a deep call stack such as Spark's) raise RecursionError.
MAX_DEPTH = 64

# A double's largest finite value has 309 digits before the point: an integer literal with more is
# beyond any double, and is read as one (infinite). Python would refuse an int of more than 4,300
# digits outright (a ValueError, so `not_json`), where DuckDB reads it as a number like any other.
_DOUBLE_DIGITS = 309


def make_event(
    event_id: str,
    sensor_id: str,
    event_time: datetime,
    value: float,
    sensor_type: str | None = None,
    unit: str | None = None,
    site: str | None = None,
) -> dict[str, Any]:
    """A valid event as a dict, with the time in the canonical ISO-8601 UTC form."""
    event: dict[str, Any] = {
        "event_id": event_id,
        "sensor_id": sensor_id,
        "event_time": format_time(event_time),
        "value": value,
    }
    for key, val in (("sensor_type", sensor_type), ("unit", unit), ("site", site)):
        if val is not None:
            event[key] = val
    return event


def format_time(ts: datetime) -> str:
    """ISO-8601 in UTC with millisecond precision and a ``Z``."""
    if ts.tzinfo is None:
        raise ValueError("event_time must be timezone-aware")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def encode(event: dict[str, Any]) -> bytes:
    """The Kafka message value: compact UTF-8 JSON."""
    return json.dumps(event, separators=(",", ":"), allow_nan=True).encode()


def validate(
    raw: bytes, valid_ranges: dict[str, tuple[float, float]] | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """Reference validator in pure Python: ``(event, None)`` or ``(None, reason)``, for any bytes.

    The sink's parser (``sink.parse``) reaches the same verdicts in bulk in DuckDB and hands every
    record it is not certain of to this function; the tests check both agree on every kind of input.
    It never raises for a record: one that makes the rules themselves fail is a dead letter too
    (``internal_error:<exception>``), so no record can stop the stream. Only running out of memory,
    a failure of the machine and not of the record, is raised.
    """
    try:
        return _validate(raw, valid_ranges)
    except MemoryError:
        raise
    except Exception as exc:
        return None, internal_error(exc)


def internal_error(exc: Exception) -> str:
    """The reason of a record whose judging raised ``exc`` (its bytes are kept, to replay after a fix)."""
    return f"{Reason.INTERNAL}:{type(exc).__name__}"


def _validate(
    raw: bytes, valid_ranges: dict[str, tuple[float, float]] | None
) -> tuple[dict[str, Any] | None, str | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, Reason.NOT_UTF8
    if _too_deep(text):
        return None, Reason.TOO_DEEP
    try:
        doc = json.loads(text, parse_int=_parse_int)
    except ValueError:
        return None, Reason.NOT_JSON
    if not isinstance(doc, dict):
        return None, Reason.NOT_OBJECT
    for f in EVENT_FIELDS:
        if f.name not in doc or doc[f.name] is None:
            if f.required:
                return None, f"{Reason.MISSING}:{f.name}"
            continue
        val = doc[f.name]
        if f.json_type in ("string", "timestamp") and not isinstance(val, str):
            return None, f"{Reason.WRONG_TYPE}:{f.name}"
        if f.json_type == "number" and (isinstance(val, bool) or not isinstance(val, int | float)):
            return None, f"{Reason.WRONG_TYPE}:{f.name}"
        if f.required and f.json_type == "string" and not val.strip():
            return None, f"{Reason.EMPTY}:{f.name}"
        if isinstance(val, str) and not _is_unicode(val):
            # JSON's \ud800 escapes can spell a lone surrogate: no character, so no text to store.
            return None, Reason.NOT_UTF8
    if not _is_finite(doc["value"]):
        return None, Reason.NOT_FINITE
    if parse_time(doc["event_time"]) is None:
        return None, Reason.BAD_TIME
    low, high = (valid_ranges or {}).get(doc.get("sensor_type") or "", (-math.inf, math.inf))
    if not max(low, -MAX_VALUE) <= doc["value"] <= min(high, MAX_VALUE):
        return None, Reason.OUT_OF_RANGE
    return doc, None


# Strings, closed or running to the end of the text (which is then no JSON): the brackets inside
# them do not nest. Written so that each character is matched one way only: linear on any input.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _too_deep(text: str) -> bool:
    """Whether the brackets of ``text`` nest deeper than MAX_DEPTH outside its strings.

    Found without parsing: linear in the text and no recursion, however deep. For JSON this is its
    nesting depth (an event's is 1); for text that is not JSON, at least the depth a JSON parser
    reaches before it finds the error. The usual record, with few brackets, is not scanned at all.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > MAX_DEPTH


def _parse_int(literal: str) -> int | float:
    return int(literal) if len(literal.lstrip("-")) <= _DOUBLE_DIGITS else float(literal)


def _is_finite(value: float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer literal beyond a double's range
        return False


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# The largest magnitude of a value, whatever its sensor type (no sensor measures 1e100 of anything):
# a window's mean and sum of squared deviations, merged batch by batch, and the judge's baselines
# then stay finite however many readings a window holds. 1e200 and -1e200 in one window made its
# mean or variance infinite, which the store refuses, so the batch failed on every replay.
MAX_VALUE = 1e100

# Event times must name an instant a day inside the years 1-9999 (UTC): every window holding one,
# however long, then still starts and ends inside what Python, Arrow and DuckDB all represent.
EARLIEST_TIME = datetime(1, 1, 2, tzinfo=UTC)
LATEST_TIME = datetime(9999, 12, 30, tzinfo=UTC)


def parse_time(text: str) -> datetime | None:
    """ISO-8601 with an explicit zone (``Z`` or ``±hh:mm``) between EARLIEST_TIME and LATEST_TIME, else ``None``."""
    try:
        ts = datetime.fromisoformat(text)
        # `0001-01-01T00:00+01:00` reads, but names no instant a datetime can hold in UTC.
        return ts if ts.tzinfo is not None and EARLIEST_TIME <= ts.astimezone(UTC) < LATEST_TIME else None
    except (ValueError, OverflowError):
        return None

"""The sink's DuckDB parse and the plain-Python rules agree on any bytes: a property, checked by Hypothesis.

`schema.validate` states the rules; `sink.parse.RecordParser` reaches its verdicts in bulk in DuckDB
and hands only the records it is not certain of to the rules. For any raw Kafka value (valid
events written in every legal way, damaged ones, deep nesting, huge numbers and strings, bytes
that are no UTF-8, escapes that spell no character, NULs, tombstones, extra fields) the parsed row
must be the one the rules make of it: the same reason for a bad record (its bytes kept), the same
fields, bit for bit, for a good one. And no record may raise: every one gets a verdict.

Each example is one raw record, judged by the rules as Hypothesis draws it (a record that makes
them raise is shrunk as usual). The sink's parse then judges all of them the way it sees records,
in micro-batches, one DuckDB statement each: a statement costs some milliseconds whatever its
size, so 10,000 examples take seconds, most of it Hypothesis drawing them (~30 us a choice, so
records are drawn with few choices each). A record on which the two disagree is named with both
rows; being judged after the run, it is not shrunk.
"""

from __future__ import annotations

import json
import math
from contextlib import suppress
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit.parse import JUDGED, records, reference_row
from sensorstream.config import DEFAULT_VALID_RANGES
from sensorstream.schema import MAX_DEPTH, MAX_VALUE, Reason, format_time
from sensorstream.sink.parse import RecordParser

WINDOW = 60.0
EXAMPLES = 10_000  # records, each an example
BATCH = 1_000  # records per call of the sink's parse
OURS = ("event_id", "sensor_id", "event_time", "value", "sensor_type", "unit", "site")

# Tokens are raw JSON text, written out so that any spelling can be had: mostly picks from pools of
# edge cases, some generated afresh.


def _dumps(value: Any, ascii_only: bool = True) -> str:
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)


def _long_string(char: str, n: int) -> str:
    return _dumps(char * n)


def _huge_int(sign: str, lead: str, digits: int) -> str:
    return sign + lead + "0" * (digits - 1)


def _utf8(text: str) -> bytes:
    """The text's bytes; a lone surrogate in it is written as UTF-8 would (bytes that are no UTF-8)."""
    return text.encode("utf-8", "surrogatepass")


_STRINGS = ["s1", "sensor-0042", " ", "", "\u2003", "\u00a0x", " x", "x ", "\x1f", "\x7f", "\u00e9t\u00e9",
            "a\x00b", "\U0001f600", "[[[", "{", "\\", '"']  # fmt: skip
STRING_TOKENS = st.one_of(
    st.sampled_from([_dumps(v, a) for v in _STRINGS for a in (True, False)]),
    # Long strings, built from their recipe (kept short in Hypothesis' reports).
    st.builds(_long_string, st.sampled_from(["x", "[", "{", "\u00e9", "\\"]), st.sampled_from([65, 10_000, 70_000])),
    # Escapes the encoder would not write: lone surrogates (no character), a pair, NUL, others.
    st.sampled_from(['"x\\ud800"', '"\\udc00"', '"\\ud83d\\ude00"', '"\\ud800\\ud800"', '"\\u0000"', '"\\ud83d"',
                     '"\\u0041\\u00e9"', '"a\\/b"', '"\\t"', '"\\uDFFF"', '"\\u0020x"', '"\\u2003"']),
    st.builds(_dumps, st.text(max_size=8), st.booleans()),
)  # fmt: skip

# Integer literals at the edges: 2^53 (exact in a double), 64 bits, a double's 309 digits, the
# 4,300 digits Python turns into an int.
HUGE_INTS = st.builds(_huge_int, st.sampled_from(["", "-"]),
                      st.sampled_from(["1", "9"]), st.sampled_from([19, 20, 21, 308, 309, 310, 400, 4300, 4301, 5000]))  # fmt: skip
NUMBER_TOKENS = st.one_of(
    st.builds(_dumps, st.floats()),  # NaN and Infinity as Python writes them
    st.builds(str, st.integers() | st.integers(2**53 - 3, 2**53 + 3) | st.integers(2**63 - 2, 2**64 + 2)),
    HUGE_INTS,
    st.sampled_from(["-0", "0.0", "-0.0", "1E2", "1e-400", "1e400", "-1e400", "1.7976931348623157e308",
                     "1.7976931348623159e308", "4.9e-324", "21.73", "0.1e1", "1.", ".5", "01", "+1", "nan", "NaN",
                     "-Infinity", "inf", "Infinity", "0x10", "1_000", "-", "1e", "900", "-91"]),
)  # fmt: skip

# Ways to write a time: the first seven are ISO-8601 the rules accept (the fast path only some).
_SPELLINGS = (
    format_time,
    datetime.isoformat,
    lambda t: t.isoformat(sep=" "),
    lambda t: t.isoformat(timespec="minutes"),
    lambda t: t.isoformat(timespec="seconds").replace("+00:00", "Z"),
    lambda t: t.isoformat(timespec="microseconds")[:26] + "1" + t.isoformat(timespec="microseconds")[26:],
    lambda t: t.strftime("%G-W%V-%uT%H:%M:%S%z"),
    lambda t: t.replace(tzinfo=None).isoformat(),  # no zone
    lambda t: t.isoformat().replace("T", "t"),
)
_ZONES = (UTC, UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=11, minutes=30)))
_EARLIEST_US, _LATEST_US = -62135596800_000_000, 253402300799_999_999  # 0001-01-01 .. 9999-12-31 UTC


def _time(micros: int, zone: int, spelling: int) -> str:
    """A JSON string: the instant ``micros`` after 1970 in UTC, in one of the zones and spellings."""
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    with suppress(OverflowError):  # past year 1 or 9999 in that zone: left in UTC
        when = when.astimezone(_ZONES[zone])
    return _dumps(_SPELLINGS[spelling](when))


_INSTANTS = st.integers(_EARLIEST_US, _LATEST_US) | st.integers(0, 2**41)  # any, or 1970 .. 2039
VALID_TIMES = st.builds(_time, _INSTANTS, st.integers(0, len(_ZONES) - 1), st.integers(0, 6))
# Times DuckDB reads and the rules refuse, or the other way round, or that strain arithmetic.
ODD_TIMES = st.sampled_from([_dumps(t) for t in ("infinity", "-infinity", "epoch", "now", "-290308-12-21T19:59:05.224192Z",
                     "294247-01-10T04:00:54.775806Z", "0001-01-01T00:00:00Z", "0001-01-02T00:00:00Z",
                     "9999-12-30T00:00:00Z", "9999-12-31T23:59:59.999999Z", "2026-02-30T00:00:00Z",
                     "2026-11-26T24:00:00Z", "2026-11-26T20:15:60Z", "20261126T201503Z", "", "x",
                     "2026-11-26T20:15:03.120Z\x00", "2026-11-26T20:15:03.120+24:00")])  # fmt: skip
TIME_TOKENS = st.one_of(
    st.builds(_time, _INSTANTS, st.integers(0, len(_ZONES) - 1), st.integers(0, len(_SPELLINGS) - 1)),
    ODD_TIMES,
)


def _nested(depth: int, kind: int) -> str:
    """A value nested ``depth`` deep (as an event's field: one more): arrays, objects, or both."""
    if kind == 0:
        return "[" * depth + "1" + "]" * depth
    if kind == 1:
        return '{"a":' * depth + "1" + "}" * depth
    return '[{"a":' * (depth // 2) + "[]" + "}]" * (depth // 2)


# Depths around the limit (an event is 1 deep, so its fields may hold MAX_DEPTH - 1 more), far past it.
DEPTHS = st.sampled_from([MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 1000, 5000]) | st.integers(
    0, 80
)
NESTED_TOKENS = st.builds(_nested, DEPTHS, st.integers(0, 2))
OTHER_TOKENS = st.sampled_from(["true", "false", "null", "{}", "[]", "[1,null]", '{"x":NaN}', "[Infinity]", "nan",
                                "undefined", "'x'", '{"value":1}', '"\\u0000"'])  # fmt: skip
ANY_TOKENS = st.one_of(OTHER_TOKENS, STRING_TOKENS, NUMBER_TOKENS, NESTED_TOKENS)

# A field: its usual kind of token (valid or not), or absent, or any token at all.
ABSENT = None
FIELD_TOKENS = {
    "event_id": STRING_TOKENS, "sensor_id": STRING_TOKENS, "event_time": TIME_TOKENS, "value": NUMBER_TOKENS,
    "sensor_type": st.sampled_from([_dumps(t) for t in (*DEFAULT_VALID_RANGES, "Temperature", "other")])
    | STRING_TOKENS, "unit": STRING_TOKENS, "site": STRING_TOKENS,
}  # fmt: skip
# The producer's event, the usual case: each field mostly as the producer writes it.
PRODUCER = {"event_id": '"9f1c0a"', "sensor_id": '"sensor-0042"', "event_time": '"2026-11-26T20:15:03.120Z"',
            "value": "21.73", "sensor_type": '"temperature"', "unit": '"C"', "site": '"plant-a"'}  # fmt: skip
KEYS = st.sampled_from(
    ['"x"', '"Value"', '"value "', '"\\u0076alue"', '"event_id"', '"value"', '""', '"\u00fc"']
)
LAYOUTS = [(",", ":"), (", ", ": "), (" ,\n", " :\t"), (",\r\n", ":")]
AROUND = [("", ""), (" ", "\n"), ("\ufeff", ""), ("\u00a0", ""), ("\n", " ")]


@st.composite
def events(draw: st.DrawFn) -> str:
    pairs = []
    for name in OURS:
        how = draw(st.integers(0, 7))  # 0-3: the producer's, 4-5: drawn, 6: absent, 7: any token
        if how == 6:
            continue
        token = PRODUCER[name] if how < 4 else draw(FIELD_TOKENS[name] if how < 6 else ANY_TOKENS)
        pairs.append((f'"{name}"', token))
    if draw(st.integers(0, 3)) == 0:  # extra fields
        pairs += draw(st.lists(st.tuples(KEYS, ANY_TOKENS), min_size=1, max_size=2))
    if draw(st.booleans()):
        pairs = draw(st.permutations(pairs))
    comma, colon = LAYOUTS[draw(st.integers(0, len(LAYOUTS) - 1))]
    before, after = AROUND[draw(st.integers(0, len(AROUND) - 1))]
    return before + "{" + comma.join(k + colon + v for k, v in pairs) + "}" + after


_OPTIONAL = st.sampled_from([ABSENT, '"C"', '"plant-a"', '""', '" "', r'"\u00e9"', "null"])
_TYPES = st.sampled_from([ABSENT, "null", '"other"', *(_dumps(t) for t in DEFAULT_VALID_RANGES)])
_FIRST = st.sampled_from(["e", "s", "0", "Z", "~", r"\u00e9", r"\u0041", r"\ud83d\ude00", "\u00e9"])


def _valid_event(first: str, rest: str, sensor: int, time: str, value: Any, kind: str | None, unit: str | None,
                 extra: str | None, layout: int) -> str:  # fmt: skip
    """Fields of the right kinds, each drawn: mostly a valid event, or out of range, or one written unusually."""
    fields = {"event_id": '"' + first + _dumps(rest)[1:], "sensor_id": f'"sensor-{sensor:04d}"', "event_time": time,
              "value": _dumps(value), "sensor_type": kind, "unit": unit, "site": unit, "x": extra}  # fmt: skip
    comma, colon = LAYOUTS[layout]
    return "{" + comma.join(f'"{k}"{colon}{v}' for k, v in fields.items() if v is not ABSENT) + "}"


VALID_EVENTS = st.builds(
    _valid_event, _FIRST, st.text(max_size=6), st.integers(0, 9999), st.one_of(VALID_TIMES, VALID_TIMES, ODD_TIMES),
    st.floats(0, 100) | st.integers(0, 100) | st.floats(allow_nan=False, allow_infinity=False) | st.integers()
    | st.sampled_from([MAX_VALUE, -MAX_VALUE, MAX_VALUE * 1.0000001, 1.7976931348623157e308]),
    _TYPES, _OPTIONAL, st.sampled_from([ABSENT, ABSENT, ABSENT]) | OTHER_TOKENS | NESTED_TOKENS | NUMBER_TOKENS,
    st.integers(0, len(LAYOUTS) - 1),
)  # fmt: skip


# --- damage: to the text, then to the bytes ------------------------------------------------------

_INSERTS = [*'{}[],:"\\ 0aeE.-+tnfu', "/*x*/", "//", "\x00", "\t"]
_BAD_BYTES = [
    b"\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe9",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\x80",
]


def _damage(text: str, how: int, at: int, pick: int) -> bytes:
    at %= len(text) + 1
    damaged = [
        text[:at],  # cut short
        text[:at] + text[at + 1 :],  # a character lost
        text[:at] + _INSERTS[pick % len(_INSERTS)] + text[at:],  # one added
        text.rstrip()[:-1] + ",}",  # a trailing comma
        text.rstrip()[:-1] + ',"value":"dup"}',  # the last of duplicate keys wrong
        text + text,  # two objects
        text.replace("NaN", "nan").replace("Infinity", "inf"),
        text,
    ][how]
    raw = _utf8(damaged)
    if how == 7:  # bytes that are no UTF-8, or a NUL, or a BOM, inserted
        raw = raw[:at] + _BAD_BYTES[pick % len(_BAD_BYTES)] + raw[at:]
    return raw


def _deep(depth: int, kind: int) -> bytes:
    """Nesting alone, closed or not: the message that stopped the stream was ``[`` x 1000."""
    return ("[" * depth if kind == 3 else _nested(depth, kind)).encode()


RAW_RECORDS = st.one_of(
    st.builds(_utf8, VALID_EVENTS),
    st.builds(_utf8, VALID_EVENTS),
    st.builds(_utf8, events()),
    st.builds(_damage, events(), st.integers(0, 7), st.integers(0, 2**16), st.integers(0, 63)),
    st.builds(_deep, DEPTHS, st.integers(0, 3)),
    st.binary(max_size=40),
    st.builds(_utf8, ANY_TOKENS),
    st.none(),  # a tombstone
)


# --- the property ------------------------------------------------------------------------------


def _exact(row: dict[str, Any]) -> dict[str, Any]:
    """The judged columns, floats by their bits (-0.0 is not 0.0 here)."""
    return {k: (v.hex() if isinstance(v, float) and not math.isnan(v) else v) for k, v in row.items()}


def _breaks_the_statement(parser: RecordParser, raw: bytes | None) -> bool:
    failures = parser.statement_failures
    parser.parse(records([raw]))
    return parser.statement_failures > failures


def _parse(parser: RecordParser, values: list[bytes | None], first: int) -> list[dict[str, Any]]:
    """The sink's rows for one micro-batch, in the records' order: no record lost or added, and the
    fast path's statement ran (no fallback to the rules hid a bug), else the records that break it."""
    failures = parser.statement_failures
    rows = parser.parse(records(values, first_offset=first)).sort_by("kafka_offset").to_pylist()
    assert [r["kafka_offset"] for r in rows] == list(range(first, first + len(values)))
    if parser.statement_failures != failures:
        breaking = [raw for raw in values if _breaks_the_statement(parser, raw)]
        raise AssertionError(f"these records break the fast path's statement: {breaking!r}")
    return rows


def test_the_sink_and_the_rules_agree_on_any_record():
    examples: list[tuple[bytes | None, dict[str, Any]]] = []  # each record and the rules' row for it

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
              HealthCheck.data_too_large, HealthCheck.large_base_example])  # fmt: skip
    @given(RAW_RECORDS)
    def judge_by_the_rules(raw: bytes | None) -> None:
        expected = reference_row(raw, DEFAULT_VALID_RANGES, WINDOW)
        # The rules judged it: none of the generated records makes them raise.
        assert not (expected["error"] or "").startswith(Reason.INTERNAL), raw
        examples.append((raw, expected))

    judge_by_the_rules()
    assert len(examples) >= 10_000

    parser = RecordParser(DEFAULT_VALID_RANGES, WINDOW)
    seen = {"valid": 0, "judged": 0, "too_deep": 0}
    for first in range(0, len(examples), BATCH):
        batch = examples[first : first + BATCH]
        rows = _parse(parser, [raw for raw, _ in batch], first)
        seen["judged"] += parser.judged
        for (raw, expected), row in zip(batch, rows, strict=True):
            got = _exact({k: row[k] for k in JUDGED})
            assert got == _exact(expected), (
                f"the sink's parse and the rules disagree on {raw!r}: {got} != {_exact(expected)}"
            )
            seen["valid"] += expected["error"] is None
            seen["too_deep"] += expected["error"] == Reason.TOO_DEEP
    # Both verdicts and both paths are exercised in every run.
    assert seen["valid"] > len(examples) // 50, seen
    assert 0 < seen["judged"] < len(examples), seen
    assert seen["too_deep"] > 0, seen


def test_any_records_merge_and_every_one_is_accounted_for(store):
    """Batch after batch of such records through the merge into a DuckDB file: none fails, and every
    record is a reading (or a copy of one) or a dead letter."""
    merger, con = store
    sent = {"batches": 0, "records": 0}

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(RAW_RECORDS, min_size=40, max_size=44))  # micro-batches
    def merge(values: list[bytes | None]) -> None:
        result = merger.merge_records(sent["batches"], records(values, first_offset=sent["records"]))
        assert (result.valid_rows + result.dead_letters, result.skipped) == (len(values), False)
        sent["batches"] += 1
        sent["records"] += len(values)

    merge()
    assert con.execute("SELECT count(*) FROM sink_commits").fetchone()[0] == sent["batches"]
    assert con.execute("SELECT count(*) FROM dead_letters").fetchone()[0] > 0

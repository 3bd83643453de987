"""Parsing in the sink: every record leaves valid or with a reason, and the reasons match the rules.

Spark hands the sink Kafka's bytes; `sink.parse.RecordParser` parses them in DuckDB. Its verdict
on any record must be the plain-Python reference's (`sensorstream.schema.validate`): the same
reason for a bad record, the same fields for a good one. The cases below are the ways a message
goes wrong, and the ways DuckDB's JSON reader is more lenient than JSON.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from kit.parse import JUDGED, records, reference_row
from sensorstream.config import DEFAULT_VALID_RANGES
from sensorstream.produce.simulator import Simulator
from sensorstream.schema import MAX_DEPTH, encode, validate
from sensorstream.sink.batch import BATCH_SCHEMA
from sensorstream.sink.parse import RecordParser

T = '"event_time":"2026-11-26T20:15:03.120Z"'
GOOD = '{"event_id":"e1","sensor_id":"s1",' + T + ',"value":21.7,"sensor_type":"temperature","unit":"C"}'


def event(**fields) -> str:
    """A JSON text with event_id, sensor_id, event_time and value, any of them replaced by raw JSON."""
    doc = {"event_id": '"e"', "sensor_id": '"s"', "event_time": '"2026-11-26T20:15:03.120Z"', "value": "1"}
    doc.update(fields)
    return "{" + ",".join(f'"{k}":{v}' for k, v in doc.items() if v is not None) + "}"


CASES = {
    "valid": GOOD,
    "valid, zone offset": event(event_time='"2026-11-26T20:15:03+02:00"'),
    "valid, extra fields ignored": event(x='[1,{"y":2}]'),
    "valid, integer value": event(value="3"),
    "valid, spaces and newlines around": "  " + GOOD + "\n",
    "valid, NaN in an extra field (Python's json reads it)": event(x="NaN"),
    "valid, week date": event(event_time='"2026-W48-4T20:15:03Z"'),
    "valid, time with a space and no seconds": event(event_time='"2026-11-26 20:15+01:00"'),
    "valid, seven fraction digits": event(event_time='"2026-11-26T20:15:03.1234567Z"'),
    "valid, escaped unicode": event(sensor_id='"caf\\u00e9"'),
    "valid, an id that starts with a unicode letter": event(event_id='"\u00e9t\u00e9"'),
    "not json": "hello",
    "empty message": "",
    "a list": "[1,2]",
    "a list holding an event": "[" + GOOD + "]",
    "a number": "42",
    "json null": "null",
    "truncated": '{"event_id":"e","sensor_id":',
    "trailing garbage": GOOD + " trailing",
    "two objects": GOOD + GOOD,
    "trailing comma": GOOD[:-1] + ",}",
    "trailing comma with a space": GOOD[:-1] + ", }",
    "lower-case nan in an extra field": event(x="nan"),
    "inf as the value": event(value="inf"),
    "single quotes": GOOD.replace('"', "'"),
    "comment inside": '{"event_id":"e", /* hi */ "sensor_id":"s",' + T + ',"value":1}',
    "unquoted field name": '{event_id:"e","sensor_id":"s",' + T + ',"value":1}',
    "missing value": event(value=None),
    "null value": event(value="null"),
    "missing event_id": event(event_id=None),
    "missing event_time": event(event_time=None),
    "value as string": event(value='"21.3"'),
    "value as bool": event(value="true"),
    "NaN": event(value="NaN"),
    "Infinity": event(value="-Infinity"),
    "a number beyond a double": event(value="1e400"),
    "an integer beyond a double": event(value="1" + "0" * 400),
    "numeric event_id": event(event_id="7"),
    "object sensor_id": event(sensor_id='{"a":1}'),
    "empty event_id": event(event_id='" "'),
    "unicode-space event_id": event(event_id='"\u2003"'),
    "lone surrogate in sensor_id": event(sensor_id='"x\\ud800"'),
    "site as number": event(site="5"),
    "time without zone": event(event_time='"2026-11-26T20:15:03"'),
    "time as words": event(event_time='"yesterday"'),
    "time as epoch": event(event_time="1764188103"),
    "hour 24": event(event_time='"2026-11-26T24:00:00Z"'),
    "february 30": event(event_time='"2026-02-30T00:00:00Z"'),
    "a time before year 1 in UTC": event(event_time='"0001-01-01T00:00:00+01:00"'),
    "impossible temperature": event(value="900", sensor_type='"temperature"'),
    "duplicate key, the last one wrong": event()[:-1] + ',"value":"x"}',
    # Records that once failed the whole batch, and their neighbours.
    "a thousand opening brackets": "[" * 1000,
    "nested a thousand deep": "[" * 1000 + "]" * 1000,
    "an extra field nested to the limit": event(x="[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)),
    "an extra field nested past the limit": event(x="[" * MAX_DEPTH + "]" * MAX_DEPTH),
    "an extra field nested a thousand deep": event(x="[" * 1000 + "]" * 1000),
    "brackets inside a string do not nest": event(sensor_id='"' + "[" * 1000 + '"', x="[[1]]"),
    "an integer of 5,000 digits as the value": event(value="1" * 5000),
    "an integer of 5,000 digits in an extra field": event(x="-" + "9" * 5000),
    "a time DuckDB's window arithmetic overflows on": event(event_time='"-290308-12-21T19:59:05.224192Z"'),
}
RAW: dict[str, bytes | None] = {name: text.encode() for name, text in CASES.items()}
RAW["not utf-8"] = b'\xff\xfe{"event_id":"e"}'
RAW["latin-1 inside"] = ('{"event_id":"e","sensor_id":"caf\xe9",' + T + ',"value":1}').encode("latin-1")
RAW["no value at all (a tombstone)"] = None


def parse(values: list[bytes | None], window: float = 60) -> tuple[list[dict], RecordParser]:
    parser = RecordParser(DEFAULT_VALID_RANGES, window)
    rows = sorted(parser.parse(records(values)).to_pylist(), key=lambda r: r["kafka_offset"])
    return rows, parser


def reference(raw: bytes | None) -> str | None:
    return validate(raw, DEFAULT_VALID_RANGES)[1] if raw is not None else "not_json"


@pytest.fixture(scope="module")
def parsed() -> dict[str, dict]:
    rows, _ = parse(list(RAW.values()))
    return dict(zip(RAW, rows, strict=True))


@pytest.mark.parametrize("name", list(RAW))
def test_the_sink_and_the_reference_validator_agree(parsed, name):
    assert parsed[name]["error"] == reference(RAW[name])


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a thousand opening brackets", "too_deep"),
        ("nested a thousand deep", "too_deep"),
        ("an extra field nested to the limit", None),
        ("an extra field nested past the limit", "too_deep"),
        ("an extra field nested a thousand deep", "too_deep"),
        ("brackets inside a string do not nest", None),
        ("an integer of 5,000 digits as the value", "value_not_finite"),
        ("an integer of 5,000 digits in an extra field", None),
        ("a time DuckDB's window arithmetic overflows on", "bad_event_time"),
    ],
)
def test_deep_and_huge_records_get_the_stated_reason(parsed, name, reason):
    """The README's edge cases: nesting deeper than MAX_DEPTH is `too_deep`, an integer too large for a
    double is `value_not_finite` however many digits it has, and neither fails the batch."""
    assert parsed[name]["error"] == reason


def test_a_batch_the_fast_statement_fails_on_is_judged_by_the_rules(caplog):
    """Should DuckDB's statement fail on some record, the rules judge the whole batch: the same
    verdicts, nothing lost, no failed batch. (The failure here is a real one: the window arithmetic
    run on every row, as it once was, overflows on a time 290,000 years BC.)"""
    parser = RecordParser(DEFAULT_VALID_RANGES, 60)
    old = "CASE WHEN event_time >= $earliest AND event_time < $latest THEN make_timestamp("
    assert old in parser._sql
    parser._sql = parser._sql.replace(old, "CASE WHEN true THEN make_timestamp(")
    values = [
        RAW[name] for name in ("valid", "a time DuckDB's window arithmetic overflows on", "not json", "valid")
    ]
    rows = parser.parse(records(values)).sort_by("kafka_offset").to_pylist()
    assert [r["error"] for r in rows] == [None, "bad_event_time", "not_json", None]
    assert (parser.judged, parser.statement_failures) == (len(values), 1)
    assert "the fast parse failed" in caplog.text


def test_long_windows_starting_before_year_1_are_the_same_on_both_paths():
    """A week-long window holding 0001-01-03 starts in year 0: the fast path and the rules' path
    (the same time spelled with a space) give the same window, in microseconds."""
    values = [event(event_time=f'"{t}"').encode() for t in ("0001-01-03T00:00:00Z", "0001-01-03 00:00:00Z")]
    parser = RecordParser(DEFAULT_VALID_RANGES, 7 * 86400)
    table = parser.parse(records(values)).sort_by("kafka_offset")
    assert parser.judged == 1 and table["error"].null_count == 2
    starts = table["window_start"].cast(pa.int64()).to_pylist()
    assert starts[0] == starts[1] < -62135596800_000_000  # before 0001-01-01


def test_no_record_is_dropped_and_bad_ones_keep_their_bytes(parsed):
    assert len(parsed) == len(RAW)
    for name, row in parsed.items():
        if row["error"]:
            assert row["raw_value"] == RAW[name], name
        else:
            assert row["raw_value"] is None  # valid rows do not carry their bytes into the merge


def test_valid_record_fields_and_window(parsed):
    row = parsed["valid"]
    assert (row["event_id"], row["sensor_id"], row["value"], row["unit"]) == ("e1", "s1", 21.7, "C")
    assert row["event_time"].isoformat() == "2026-11-26T20:15:03.120000+00:00"
    assert row["window_start"].isoformat() == "2026-11-26T20:15:00+00:00"
    assert parsed["valid, zone offset"]["event_time"].isoformat() == "2026-11-26T18:15:03+00:00"
    assert parsed["valid, week date"]["event_time"].isoformat() == "2026-11-26T20:15:03+00:00"
    assert parsed["valid, escaped unicode"]["sensor_id"] == "caf\u00e9"


def test_windows_are_epoch_aligned_before_1970_too():
    times = ["1969-12-31T23:59:59.500Z", "2026-11-26T20:15:03.120Z"]
    rows, _ = parse([event(event_time=f'"{t}"').encode() for t in times], window=10)
    assert [r["window_start"].isoformat() for r in rows] == [
        "1969-12-31T23:59:50+00:00",
        "2026-11-26T20:15:00+00:00",
    ]


def test_the_producers_events_take_the_fast_path():
    """Canonical events are parsed in one DuckDB statement; none falls to the per-record reference."""
    sim = Simulator(200, datetime(2026, 1, 1, tzinfo=UTC), 0.001, seed=5)
    values = [encode(r.event) for r in sim.readings(2_000)]
    rows, parser = parse(values)
    assert parser.judged == 0
    assert all(r["error"] is None for r in rows)
    assert [r["event_id"] for r in rows] == [json.loads(v)["event_id"] for v in values]


def test_ranges_from_settings_are_read_as_data_not_sql():
    """A sensor type with a quote in its name and an open bound: the same verdicts as the reference."""
    ranges = {"it's": (float("-inf"), 10.0), "temperature": (-50.0, float("inf"))}
    values = [event(value=v, sensor_type=t).encode()
              for v in ("-1e90", "10", "10.5", "1e90")
              for t in ('"it\'s"', '"temperature"', '"other"')]  # fmt: skip
    rows = RecordParser(ranges, 60).parse(records(values)).sort_by("kafka_offset").to_pylist()
    assert [r["error"] for r in rows] == [validate(v, ranges)[1] for v in values]
    assert [r["error"] for r in rows].count(
        "out_of_range"
    ) == 3  # 10.5 and 1e90 for it's, -1e90 for temperature


def test_the_parser_delivers_the_declared_batch():
    """What the merge is handed: the columns and types of `sink.batch.BATCH_SCHEMA`, in its order."""
    for values in ([GOOD.encode()], [b"hello"], [GOOD.encode(), b"hello"]):
        table = RecordParser(DEFAULT_VALID_RANGES, 60).parse(records(values))
        assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in BATCH_SCHEMA]


def _mutated(rng: random.Random) -> bytes:
    """An event with random fields wrong, written in random ways, sometimes damaged."""
    pools = {
        "event_id": ["e1", " ", "", "\u2003", "\u00e9", " x", 7, None, True],
        "sensor_id": ["s1", "", "\t", "a\u0000b", {"a": 1}, None],
        "event_time": ["2026-11-26T20:15:03.120Z", "2026-11-26 20:15:03Z", "2026-11-26T20:15:03+0200",
                       "2026-11-26T24:00:00Z", "2026-11-26T20:15:60Z", "20261126T201503Z", "x", "", 17,
                       "2026-11-26T20:15:03.120z", "9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00Z"],
        "value": [21.7, 3, -0.0, 1e308, 2**60, -300, 900, True, None, "1", [1], float("nan"), float("inf")],
        "sensor_type": ["temperature", "humidity", None, 5, "", "Temperature"],
        "unit": ["C", 5, None], "site": ["a", [], None],
    }  # fmt: skip
    doc = {}
    for key, pool in pools.items():
        roll = rng.random()
        if roll < 0.85:
            doc[key] = pool[0] if roll < 0.6 else rng.choice(pool)
    if rng.random() < 0.1:
        doc["extra"] = rng.choice([float("nan"), [1, None], "inf", {"x": float("inf")}])
    text = json.dumps(doc, allow_nan=True, separators=rng.choice([(",", ":"), (", ", ": ")]),
                      ensure_ascii=rng.random() < 0.5)  # fmt: skip
    roll, at = rng.random(), rng.randrange(len(text))
    if roll < 0.05:
        text = text[:-1] + ",}"
    elif roll < 0.08:
        text = text[:-1] + ', "value": "dup"}'
    elif roll < 0.11:
        text = text.replace("NaN", "nan").replace("Infinity", "inf")
    elif roll < 0.14:
        text = text[:at] + text[at + 1 :]
    elif roll < 0.17:
        text = text[:at] + rng.choice('{}[],:"\\ 0aeE.-+tn') + text[at:]
    return text.encode()


def test_the_sink_agrees_with_the_reference_on_thousands_of_damaged_events():
    """Seeded random damage: the same reason for every bad record, the same fields for every good one."""
    rng = random.Random(11)
    values = [_mutated(rng) for _ in range(4_000)]
    rows, parser = parse(values)
    valid = 0
    for raw, row in zip(values, rows, strict=True):
        expected = reference_row(raw, DEFAULT_VALID_RANGES, 60)
        assert {k: row[k] for k in JUDGED} == expected, raw
        valid += expected["error"] is None
    # Both sides of the check are exercised: many valid events, many bad ones, both paths used.
    assert 500 < valid < len(values) - 500
    assert 0 < parser.judged < len(values)

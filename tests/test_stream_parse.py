"""Parsing in Spark: every record leaves valid or with a reason, and the reasons match the rules.

The Spark parser and the plain-Python reference (`sensorstream.schema.validate`) must agree on
every kind of input, good and bad.
"""

from __future__ import annotations

import pytest

from sensorstream.config import DEFAULT_VALID_RANGES
from sensorstream.schema import validate
from sensorstream.sink.batch import BATCH_SCHEMA
from sensorstream.stream.parse import parse_records, with_window

pytestmark = pytest.mark.integration

T = '"event_time":"2026-11-26T20:15:03.120Z"'
GOOD = '{"event_id":"e1","sensor_id":"s1",' + T + ',"value":21.7,"sensor_type":"temperature","unit":"C"}'

CASES = {
    "valid": GOOD,
    "valid, zone offset": '{"event_id":"e","sensor_id":"s","event_time":"2026-11-26T20:15:03+02:00","value":1}',
    "valid, extra fields ignored": '{"event_id":"e","sensor_id":"s",' + T + ',"value":1,"x":[1,{"y":2}]}',
    "valid, integer value": '{"event_id":"e","sensor_id":"s",' + T + ',"value":3}',
    "not json": "hello",
    "empty message": "",
    "a list": "[1,2]",
    "a number": "42",
    "json null": "null",
    "truncated": '{"event_id":"e","sensor_id":',
    "trailing garbage": GOOD + " trailing",
    "single quotes": GOOD.replace('"', "'"),
    "comment inside": '{"event_id":"e", /* hi */ "sensor_id":"s",' + T + ',"value":1}',
    "unquoted field name": '{event_id:"e","sensor_id":"s",' + T + ',"value":1}',
    "missing value": '{"event_id":"e","sensor_id":"s",' + T + "}",
    "null value": '{"event_id":"e","sensor_id":"s",' + T + ',"value":null}',
    "missing event_id": '{"sensor_id":"s",' + T + ',"value":1}',
    "missing event_time": '{"event_id":"e","sensor_id":"s","value":1}',
    "value as string": '{"event_id":"e","sensor_id":"s",' + T + ',"value":"21.3"}',
    "value as bool": '{"event_id":"e","sensor_id":"s",' + T + ',"value":true}',
    "NaN": '{"event_id":"e","sensor_id":"s",' + T + ',"value":NaN}',
    "Infinity": '{"event_id":"e","sensor_id":"s",' + T + ',"value":-Infinity}',
    "numeric event_id": '{"event_id":7,"sensor_id":"s",' + T + ',"value":1}',
    "object sensor_id": '{"event_id":"e","sensor_id":{"a":1},' + T + ',"value":1}',
    "empty event_id": '{"event_id":" ","sensor_id":"s",' + T + ',"value":1}',
    "site as number": '{"event_id":"e","sensor_id":"s",' + T + ',"value":1,"site":5}',
    "time without zone": '{"event_id":"e","sensor_id":"s","event_time":"2026-11-26T20:15:03","value":1}',
    "time as words": '{"event_id":"e","sensor_id":"s","event_time":"yesterday","value":1}',
    "time as epoch": '{"event_id":"e","sensor_id":"s","event_time":1764188103,"value":1}',
    "impossible temperature": '{"event_id":"e","sensor_id":"s",'
    + T
    + ',"value":900,"sensor_type":"temperature"}',
}
RAW = {name: text.encode() for name, text in CASES.items()}
RAW["not utf-8"] = b'\xff\xfe{"event_id":"e"}'
RAW["latin-1 inside"] = ('{"event_id":"e","sensor_id":"caf\xe9",' + T + ',"value":1}').encode("latin-1")


@pytest.fixture(scope="module")
def parsed(spark):
    rows = [("sensor-data", 0, i, None, None, raw) for i, raw in enumerate(RAW.values())]
    df = spark.createDataFrame(
        rows, "topic string, partition int, offset long, timestamp timestamp, key binary, value binary"
    )
    out = with_window(parse_records(df, DEFAULT_VALID_RANGES), 60).toArrow().to_pylist()
    return dict(zip(RAW, out, strict=True))


@pytest.mark.parametrize("name", list(RAW))
def test_spark_and_reference_validator_agree(parsed, name):
    _, expected = validate(RAW[name], DEFAULT_VALID_RANGES)
    assert parsed[name]["error"] == expected


def test_no_record_is_dropped_and_bad_ones_keep_their_bytes(parsed):
    assert len(parsed) == len(RAW)
    for name, row in parsed.items():
        if row["error"]:
            assert row["raw_value"] == RAW[name], name
        else:
            assert row["raw_value"] is None  # valid rows do not carry their bytes to the driver


def test_valid_record_fields_and_window(parsed):
    row = parsed["valid"]
    assert (row["event_id"], row["sensor_id"], row["value"], row["unit"]) == ("e1", "s1", 21.7, "C")
    assert row["event_time"].isoformat() == "2026-11-26T20:15:03.120000+00:00"
    assert row["window_start"].isoformat() == "2026-11-26T20:15:00+00:00"
    assert parsed["valid, zone offset"]["event_time"].isoformat() == "2026-11-26T18:15:03+00:00"


def test_the_session_is_sized_for_a_small_machine_and_keeps_any_state_in_rocksdb(spark):
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"  # not Spark's 200
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    provider = spark.conf.get("spark.sql.streaming.stateStore.providerClass")
    assert provider.endswith(".RocksDBStateStoreProvider")


def test_the_parser_delivers_the_declared_batch(spark):
    """What the sink is handed: the columns and types of `sink.batch.BATCH_SCHEMA`, in its order."""
    df = spark.createDataFrame(
        [("sensor-data", 0, 0, None, None, GOOD.encode())],
        "topic string, partition int, offset long, timestamp timestamp, key binary, value binary",
    )
    table = with_window(parse_records(df, DEFAULT_VALID_RANGES), 60).toArrow()
    assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in BATCH_SCHEMA]

"""What Spark does in the stream: read Kafka, hand the sink each record untouched.

Parsing and validation are the sink's (see test_sink_parse.py); Spark's part is the Kafka source,
the checkpoint and the session, sized for a small machine.
"""

from __future__ import annotations

import pytest

from sensorstream.config import DEFAULT_VALID_RANGES
from sensorstream.sink.batch import BATCH_SCHEMA, RAW_SCHEMA
from sensorstream.sink.parse import RecordParser
from sensorstream.stream.job import as_raw
from sensorstream.stream.spark import CHECKPOINT_FILE_MANAGER

pytestmark = pytest.mark.integration

GOOD = b'{"event_id":"e1","sensor_id":"s1","event_time":"2026-11-26T20:15:03.120Z","value":21.7}'
KAFKA_ROW = "topic string, partition int, offset long, timestamp timestamp, timestampType int, key binary, value binary"


def test_the_session_is_sized_for_a_small_machine_and_keeps_any_state_in_rocksdb(spark):
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"  # not Spark's 200
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    provider = spark.conf.get("spark.sql.streaming.stateStore.providerClass")
    assert provider.endswith(".RocksDBStateStoreProvider")


def test_the_offset_and_commit_logs_are_written_without_forking_the_jvm(spark, tmp_path):
    """Spark's default log writer runs `readlink` in a child process on each rename (~85 ms a log on
    this machine); the session names Hadoop's FileSystem one, a class this Spark must still have."""
    manager = spark.conf.get("spark.sql.streaming.checkpointFileManagerClass")
    assert manager == CHECKPOINT_FILE_MANAGER
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(str(tmp_path))
    hadoop_conf = spark._jsparkSession.sessionState().newHadoopConf()
    made = jvm.org.apache.spark.sql.execution.streaming.checkpointing.CheckpointFileManager.create(
        path, hadoop_conf
    )
    assert made.getClass().getName() == CHECKPOINT_FILE_MANAGER


def test_spark_hands_the_sink_kafkas_records_untouched(spark):
    """The columns of `sink.batch.RAW_SCHEMA`, the bytes as Kafka holds them, bad ones included."""
    rows = [("sensor-data", 1, 7, None, 0, b"k", GOOD), ("sensor-data", 0, 3, None, 0, None, b"\xffnot json")]
    table = as_raw(spark.createDataFrame(rows, KAFKA_ROW)).toArrow()
    assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in RAW_SCHEMA]
    assert table.column("raw_value").to_pylist() == [GOOD, b"\xffnot json"]
    assert table.column("kafka_key").to_pylist() == [b"k", None]

    parsed = RecordParser(DEFAULT_VALID_RANGES, 60).parse(table)
    assert parsed.schema == BATCH_SCHEMA
    assert set(parsed.column("error").to_pylist()) == {None, "not_utf8"}

"""The streaming job: Kafka -> parse/validate -> window assignment -> foreachBatch merge into DuckDB.

Spark's Kafka source owns the offsets (checkpointed under ``CHECKPOINT_DIR``); after a crash it
replays the uncommitted micro-batch with the same ``batch_id`` and the same offsets, and the sink's
ledger turns that replay into a no-op or a first write. ``maxOffsetsPerTrigger`` bounds each batch
so a backlog drains in steady steps.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from sensorstream.config import Settings, spark_interval
from sensorstream.sink.merge import BatchMerger, BatchResult
from sensorstream.stream.parse import parse_records, with_window

log = logging.getLogger(__name__)

QUERY_NAME = "sensorstream"


def kafka_stream(spark: SparkSession, settings: Settings) -> DataFrame:
    reader = spark.readStream.format("kafka")
    for key, value in settings.spark_kafka_options.items():
        reader = reader.option(key, value)
    return (
        reader.option("subscribe", settings.topic)
        .option("startingOffsets", settings.starting_offsets)
        .option("maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger))
        # A topic whose retention deleted unread data should not stop the plant's dashboard; the
        # gap is logged by Spark. Exactly-once holds for everything still in Kafka.
        .option("failOnDataLoss", "false")
        .load()
    )


def parsed_stream(spark: SparkSession, settings: Settings) -> DataFrame:
    return with_window(
        parse_records(kafka_stream(spark, settings), settings.valid_ranges), settings.slide or settings.window
    )


class StreamJob:
    """Start, watch and stop the query; ``on_batch`` observers get each :class:`BatchResult`."""

    def __init__(
        self, spark: SparkSession, settings: Settings, merger: BatchMerger, query_name: str = QUERY_NAME
    ):
        self.spark = spark
        self.settings = settings
        self.merger = merger
        self.query_name = query_name
        self.query: StreamingQuery | None = None
        self.on_batch: list[Callable[[BatchResult], None]] = []
        self._stop = threading.Event()

    @property
    def checkpoint(self) -> Path:
        return Path(self.settings.checkpoint_dir) / self.query_name

    def _ledger_name(self) -> str:
        # The checkpoint's query id survives restarts and changes when the checkpoint is reset.
        meta = json.loads((self.checkpoint / "metadata").read_text())
        return f"{self.query_name}/{meta['id']}"

    def _process(self, df: DataFrame, batch_id: int) -> None:
        self.merger.query_name = self._ledger_name()
        if self.merger.is_committed(batch_id):
            # A replay of a batch the store already holds. Consume the DataFrame anyway: a
            # foreachBatch that skips its input can fail Spark's state commit validation.
            df.write.format("noop").mode("overwrite").save()
            log.info("batch %d already committed; skipped", batch_id)
            return
        started = time.perf_counter()
        table = df.toArrow()
        spark_ms = (time.perf_counter() - started) * 1000
        result = self.merger.merge(batch_id, table, spark_ms=spark_ms)
        log.info(
            "batch %d: %d in, %d new, %d dup, %d late, %d dead, %d windows; spark %.0f ms, sink %.0f ms; "
            "latency p50 %s; watermark %s",
            batch_id, result.input_rows, result.new_readings - result.late_rows, result.duplicate_rows,
            result.late_rows, result.dead_letters, result.windows_updated, result.spark_ms, result.sink_ms,
            f"{result.latency_p50_ms / 1000:.2f}s" if result.latency_p50_ms is not None else "n/a",
            result.watermark.strftime("%H:%M:%S") if result.watermark else "none",
            extra={"batch": result.as_log()} if _json_logs() else None,
        )  # fmt: skip
        for observer in self.on_batch:
            try:
                observer(result)
            except Exception:  # an observer (metrics, alerts) must never fail a committed batch
                log.exception("batch observer failed")

    def start(self) -> StreamingQuery:
        self.checkpoint.mkdir(parents=True, exist_ok=True)
        self.query = (
            parsed_stream(self.spark, self.settings)
            .writeStream.queryName(self.query_name)
            .foreachBatch(self._process)
            .option("checkpointLocation", str(self.checkpoint.resolve()))
            .trigger(processingTime=spark_interval(self.settings.trigger))
            .start()
        )
        log.info(
            "stream started: topic %s -> %s (window %s, lateness %ss, trigger %ss)",
            self.settings.topic, self.settings.db, self.settings.window_interval,
            self.settings.allowed_lateness, self.settings.trigger,
        )  # fmt: skip
        return self.query

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def run_until_stopped(self, install_signals: bool = True, timeout: float | None = None) -> None:
        """Block until SIGINT/SIGTERM (or ``timeout``), then stop after the batch in flight."""
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGTERM, self.request_stop)
        query = self.query or self.start()
        deadline = time.monotonic() + timeout if timeout else None
        while not self._stop.is_set():
            try:
                if query.awaitTermination(0.5):
                    break  # the query ended by itself
            except StreamingQueryException:
                break  # it failed: reported below in one line, not with Spark's whole plan
            if deadline and time.monotonic() > deadline:
                break
        self.stop()
        error = query.exception()
        if error is not None:
            raise RuntimeError(f"the streaming query failed: {_root_cause(error)}")

    def stop(self, grace: float = 60.0) -> None:
        """Let the running micro-batch finish (its transaction commits), then stop the query."""
        query = self.query
        if query is None or not query.isActive:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with suppress(Exception):
                if not query.status.get("isTriggerActive"):
                    break
            time.sleep(0.05)
        query.stop()
        log.info("stream stopped")

    def wait_idle(self, timeout: float = 120.0, min_offsets: int = 0) -> None:
        """Wait until the query has processed everything the topic held when its last batch planned.

        Caught up = the last batch's end offsets equal the latest offsets the source saw, and no
        trigger is running. (Spark's idle progress events come only every 10 s; this does not wait.)
        ``min_offsets``: also wait until the end offsets of all partitions add up to at least this
        (for callers that just produced that many messages and must not see a stale progress).
        """
        deadline = time.monotonic() + timeout
        query = self.query
        assert query is not None
        while time.monotonic() < deadline:
            if query.exception():
                raise RuntimeError(f"the streaming query failed: {_root_cause(query.exception())}")
            last = query.lastProgress
            if last and last.get("sources"):
                source = last["sources"][0]
                end = source.get("endOffset")
                at_end = end == source.get("latestOffset") and _offset_sum(end) >= min_offsets
                status = query.status
                if at_end and not status.get("isTriggerActive") and not status.get("isDataAvailable"):
                    return
            time.sleep(0.2)
        raise TimeoutError(f"stream did not catch up within {timeout}s")


def _root_cause(error: object) -> str:
    """The first meaningful line of a Spark/Py4J error: what failed, without the query plan."""
    text = str(getattr(error, "desc", None) or error)
    for marker in ("StoreWriteError: ", "StoreLockedError: ", "SchemaError: "):
        if marker in text:
            return text.split(marker, 1)[1].splitlines()[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else text


def _json_logs() -> bool:
    # The full batch record goes into JSON logs; on a terminal the one-line summary is enough.
    from sensorstream.logs import JsonFormatter

    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def _offset_sum(offsets: object) -> int:
    """Sum of a Kafka source offset JSON ({"topic": {"0": 12, ...}}), as progress reports it."""
    if isinstance(offsets, str):
        offsets = json.loads(offsets)
    if not isinstance(offsets, dict):
        return 0
    return sum(int(o) for parts in offsets.values() for o in parts.values())

"""The streaming job: Kafka -> foreachBatch -> the sink (parse, validate, merge into DuckDB).

Spark reads the records and hands each micro-batch over as Kafka delivered it (coordinates and
bytes): parsing and validating in Spark cost ~20 us of CPU per record, the same in DuckDB ~4 us
(see ``sink.parse``). Spark's Kafka source owns the offsets (checkpointed under
``CHECKPOINT_DIR``); after a crash it replays the uncommitted micro-batch with the same
``batch_id`` and the same offsets, and the sink's ledger turns that replay into a no-op or a first
write. ``maxOffsetsPerTrigger`` bounds each batch so a backlog drains in steady steps.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from sensorstream.config import Settings, spark_interval
from sensorstream.sink.base import BatchResult, Sink, ledger_name
from sensorstream.sink.batch import RAW_SCHEMA

log = logging.getLogger(__name__)

QUERY_NAME = "sensorstream"
ABANDONED_BATCH_WAIT = 10.0  # seconds; see StreamJob.stop
OBSERVER_DRAIN_WAIT = 5.0  # seconds for the observers of the last batches, on stop


class StreamFailedError(RuntimeError):
    """The streaming query failed; the message names the root cause (a Spark or a sink error)."""


class StopRequested(Exception):
    """Raised by the batch function for a batch that starts after a stop was requested.

    Nothing of that batch is written; Spark records no commit for it, so the next start replays it
    with the same id and offsets. Stopping this way needs no race with Spark's trigger loop.
    """


def stopped_on_request(error: object) -> bool:
    """Did the query end because a batch was refused or abandoned on stop (no failure)?"""
    return StopRequested.__name__ in str(getattr(error, "desc", None) or error)


class _RefusedBatchFilter(logging.Filter):
    """Py4J logs every exception of a Python callback with its traceback; a refused batch is none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StopRequested))


_REFUSED_BATCH_FILTER = _RefusedBatchFilter()


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


# Spark's Kafka source columns, in the order of RAW_SCHEMA's names.
_KAFKA_COLUMNS = ("topic", "partition", "offset", "timestamp", "key", "value")


def as_raw(kafka_df: DataFrame) -> DataFrame:
    """Kafka source rows -> ``RAW_SCHEMA``'s columns: a projection, no per-record expression."""
    names = zip(_KAFKA_COLUMNS, RAW_SCHEMA.names, strict=True)
    return kafka_df.select(*(F.col(kafka).alias(name) for kafka, name in names))


class _Observers:
    """Hands each committed batch's result to the observers on a thread of their own.

    Spark waits for ``foreachBatch`` to return before it writes the commit log and plans the next
    trigger, so work done there is latency every event pays. The observers (metrics, the lag probe
    that asks the broker for its high watermarks, the alert rules) need not hold the next batch:
    they run here, in order, one result after another.
    """

    def __init__(self, observers: list[Callable[[BatchResult], None]]) -> None:
        self.observers = observers
        self._queue: queue.Queue[BatchResult] = queue.Queue()
        self._thread: threading.Thread | None = None

    def notify(self, result: BatchResult) -> None:
        if not self.observers:
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="batch-observers", daemon=True)
            self._thread.start()
        self._queue.put(result)

    def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until every result handed over has been observed."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self) -> None:
        while True:
            result = self._queue.get()
            try:
                for observer in self.observers:
                    try:
                        observer(result)
                    except Exception:  # an observer (metrics, alerts) must never fail a committed batch
                        log.exception("batch observer failed")
            finally:
                self._queue.task_done()


class StreamJob:
    """Start, watch and stop the query; ``on_batch`` observers get each :class:`BatchResult`
    (on a thread of their own, after the batch committed: see :class:`_Observers`)."""

    def __init__(self, spark: SparkSession, settings: Settings, sink: Sink, query_name: str = QUERY_NAME):
        self.spark = spark
        self.settings = settings
        self.sink = sink
        self.query_name = query_name
        self._ledger: Sink | None = None  # the sink keyed by this run's ledger name (see _run_sink)
        self.query: StreamingQuery | None = None
        self.on_batch: list[Callable[[BatchResult], None]] = []
        self._observers = _Observers(self.on_batch)
        # Guards the hand-over between a running batch and stop(): see _process and stop.
        self._gate = threading.Condition()
        self._in_flight: int | None = None
        self._stopping = False
        self._abandoned = False
        # PySpark pins threads (ClientServer), whose callbacks log through "py4j.clientserver".
        for name in ("py4j.clientserver", "py4j.java_gateway"):
            logging.getLogger(name).addFilter(_REFUSED_BATCH_FILTER)  # added once: same object

    @property
    def checkpoint(self) -> Path:
        return Path(self.settings.checkpoint_dir) / self.query_name

    def _run_sink(self) -> Sink:
        """The sink keyed by ``<query_name>/<the checkpoint's query id>``: the id survives restarts
        and changes when the checkpoint is reset. Spark writes it when the query starts, so it is
        read at the run's first batch, once."""
        if self._ledger is None:
            meta = json.loads((self.checkpoint / "metadata").read_text())
            self._ledger = self.sink.for_query(ledger_name(self.query_name, meta["id"]))
        return self._ledger

    def _process(self, df: DataFrame, batch_id: int) -> None:
        with self._gate:
            if self._stopping:
                raise StopRequested(f"batch {batch_id} not started: the job is stopping")
            self._in_flight = batch_id
        try:
            self._merge(df, batch_id)
        except Exception:
            if self._abandoned:
                # stop() cancelled this batch's Spark jobs after its grace: nothing was written.
                # `from None`: Py4J hands the formatted traceback to Spark, and a chained Java stack
                # trace in it made Spark's message regex overflow the JVM thread's stack.
                raise StopRequested(f"batch {batch_id} abandoned: the job is stopping") from None
            raise
        finally:
            with self._gate:
                self._in_flight = None
                self._gate.notify_all()

    def _merge(self, df: DataFrame, batch_id: int) -> None:
        sink = self._run_sink()
        if sink.is_committed(batch_id):
            # A replay of a batch the store already holds. Consume the DataFrame anyway: a
            # foreachBatch that skips its input can fail Spark's state commit validation.
            df.write.format("noop").mode("overwrite").save()
            log.info("batch %d already committed; skipped", batch_id)
            return
        started = time.perf_counter()
        table = df.toArrow()
        spark_ms = (time.perf_counter() - started) * 1000
        result = sink.merge_records(batch_id, table, spark_ms=spark_ms)
        log.info(
            "batch %d: %d in, %d new, %d dup, %d late, %d dead, %d windows; spark %.0f ms, sink %.0f ms; "
            "latency p50 %s; watermark %s",
            batch_id, result.input_rows, result.new_readings - result.late_rows, result.duplicate_rows,
            result.late_rows, result.dead_letters, result.windows_updated, result.spark_ms, result.sink_ms,
            f"{result.latency_p50_ms / 1000:.2f}s" if result.latency_p50_ms is not None else "n/a",
            result.watermark.strftime("%H:%M:%S") if result.watermark else "none",
            extra={"batch": result.as_log()} if _json_logs() else None,
        )  # fmt: skip
        self._observers.notify(result)

    def start(self) -> StreamingQuery:
        self._stopping = self._abandoned = False
        self._ledger = None  # a checkpoint reset since the last run names a new ledger
        self.checkpoint.mkdir(parents=True, exist_ok=True)
        self.query = (
            as_raw(kafka_stream(self.spark, self.settings))
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

    def run_until_stopped(self, stop: threading.Event, timeout: float | None = None) -> None:
        """Block until ``stop`` is set (or ``timeout``), then stop after the batch in flight.

        Raises RuntimeError, in one line, when the query failed by itself.
        """
        query = self.query or self.start()
        deadline = time.monotonic() + timeout if timeout else None
        # Wait on the event, not in awaitTermination: a signal then wakes us at once instead of
        # after the JVM call returns.
        while not stop.wait(0.5):
            if not query.isActive:
                break  # the query ended by itself (a failure is reported below in one line)
            if deadline and time.monotonic() > deadline:
                break
        self.stop()
        self.raise_failure()

    def raise_failure(self) -> None:
        """RuntimeError naming the root cause if the query failed (a batch refused on stop is no failure)."""
        error = self.query.exception() if self.query is not None else None
        if error is not None and not stopped_on_request(error):
            raise StreamFailedError(f"the streaming query failed: {_root_cause(error)}")

    def stop(self, grace: float | None = None) -> None:
        """Let the batch in flight commit, refuse any later one, then stop the query.

        A batch that reaches ``_process`` after this point raises :class:`StopRequested` before it
        writes anything, so Spark cannot slip in a batch that ``query.stop()`` then cuts in half.
        A batch still running after ``grace`` (default ``STOP_GRACE``) is abandoned: ``query.stop()``
        cancels its Spark jobs, it commits nothing and is replayed on restart. (One already inside
        the DuckDB merge, the short last step, still finishes: the merge is not interrupted.)
        """
        query = self.query
        if query is None or not query.isActive:
            return
        grace = self.settings.stop_grace if grace is None else grace
        started = time.monotonic()
        with self._gate:
            self._stopping = True
            if not self._gate.wait_for(lambda: self._in_flight is None, timeout=grace):
                self._abandoned = True
                log.warning(
                    "batch %s did not finish within %.1f s of the stop; abandoning it (replayed on restart)",
                    self._in_flight, grace,
                )  # fmt: skip
        waited = time.monotonic() - started
        try:
            query.stop()
        except Exception:  # spark.sql.streaming.stopTimeout passed (see session.QUERY_STOP_TIMEOUT_MS)
            log.debug("Spark's query thread is still finishing its trigger; it commits nothing more")
        with self._gate:
            # An abandoned batch leaves _process once its cancelled Spark job fails (or its merge
            # ends); the caller closes the store next, which must not happen under it.
            self._gate.wait_for(lambda: self._in_flight is None, timeout=ABANDONED_BATCH_WAIT)
        # The last results' observers write to the store too (the lag column); before it closes.
        self._observers.drain(OBSERVER_DRAIN_WAIT)
        log.info(
            "stream stopped (%.2f s for the batch in flight, %.2f s to stop the query)",
            waited, time.monotonic() - started - waited,
        )  # fmt: skip

    def wait_idle(
        self, timeout: float = 120.0, min_offsets: int = 0, stop: threading.Event | None = None
    ) -> None:
        """Wait until the query has processed everything the topic held when its last batch planned.

        Caught up = the last batch's end offsets equal the latest offsets the source saw, and no
        trigger is running. (Spark's idle progress events come only every 10 s; this does not wait.)
        ``min_offsets``: also wait until the end offsets of all partitions add up to at least this
        (for callers that just produced that many messages and must not see a stale progress).
        ``stop``: return early once it is set (a signal).
        """
        deadline = time.monotonic() + timeout
        query = self.query
        assert query is not None
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                return
            if query.exception():
                raise StreamFailedError(f"the streaming query failed: {_root_cause(query.exception())}")
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

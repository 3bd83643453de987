"""The per-batch merge into DuckDB: SQL over a staging table, in one transaction.

:class:`BatchMerger` is the DuckDB :class:`~sensorstream.sink.base.Sink`. Its steps, each a method
of that name and one or two SQL statements, in this order: ``_dead_letters`` (bad records with
their reasons), ``_stage`` (valid, deduplicated, late or not), ``_readings``, ``_late_events``,
``_merge_windows``, the judge (``sink.judge``: anomalies and per-sensor state), ``_finalise``
(watermark, final windows), ``_latency``, ``_end_offsets``, then ``ledger.record`` (the batch's
``sink_commits`` and ``pipeline_metrics`` rows).

Why the windows are merged here and not in a Spark stateful operator: Spark drops rows behind
the watermark inside its operators and only counts them, so it cannot tell *which* events were
late. Here the watermark is ours, derived from the ledger, so every batch knows exactly which
of its events are late, and a replayed batch (same ``batch_id``, same offsets) classifies them
the same way:

* ``watermark(batch N) = max(watermark(N-1), max event_time through batch N-1 - ALLOWED_LATENESS)``
  (the rule Spark uses: the watermark moves between batches, never inside one).
* An event whose window has ended at or before the watermark is **late**: the window is final,
  so the event goes to ``late_events`` (and ``readings`` with ``is_late``), never into the window.
  (With sliding windows: when the latest window holding it has ended.)
* Records arrive raw (Kafka's bytes) and are parsed and validated first, by ``sink.parse``, in
  DuckDB and outside the transaction.
* ``event_id`` is deduplicated within the batch and against ``readings``, so an event counts once
  however many copies Kafka carries and across restarts.
* Everything, including the ``sink_commits`` ledger row, commits in one transaction; a batch id
  already in the ledger is skipped.

The work per batch is proportional to the batch, not to the store (days of readings):

* A copy of an event carries the same ``event_time`` as the original (Kafka redelivery, producer
  retries and upstream resends repeat the message), so the batch is deduplicated only against the
  readings whose event times fall in the batch's own event-time ranges. Readings are appended
  roughly in event-time order, so DuckDB's zone maps skip every other row group: no index, no
  scan of the store. A copy is recognised as long as its original is retained (``RETENTION``),
  whether it comes a second or many batches (or restarts) later, and also after its window is
  final.
* Windows are merged incrementally: the batch's count, mean, min, max and sum of squared
  deviations per window are combined with the stored ones (Chan et al.'s parallel variance), so
  ``readings`` is never re-read. This is safe under replay because a batch applies at most once
  (the ledger), and across a reset checkpoint because only deduplicated new events are added.
* Finalisation is bounded by time in the same way, and readings are judged against a per-sensor
  state of one row each (``sink.judge``), not against the history in the store.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorstream.config import Settings
from sensorstream.sink import ledger
from sensorstream.sink.base import BatchResult, StoreWriteError, is_disk_error
from sensorstream.sink.batch import EPOCH
from sensorstream.sink.judge import Judge
from sensorstream.sink.parse import RecordParser
from sensorstream.store.db import BatchWriteError, write_transaction

log = logging.getLogger(__name__)


class BatchMerger:
    """Writes Spark micro-batches into the store, exactly once, on the writer's connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, settings: Settings, query_name: str = "sensorstream"):
        """``query_name`` keys the ledger; the job passes ``<name>/<checkpoint's query id>`` so
        that batch ids of a reset checkpoint (which restart at 0) are never mistaken for batches
        already committed. Data stays exact across such a reset: readings dedup by event_id and
        windows are recomputed, never added to."""
        self.con = con
        self.settings = settings
        self.query_name = query_name
        self.window = timedelta(seconds=settings.window)
        self.slide = timedelta(seconds=settings.window_step)
        self.lateness = timedelta(seconds=settings.allowed_lateness)
        self.judge = Judge(settings)
        self.parser = RecordParser(settings.valid_ranges, settings.window_step)

    def for_query(self, query_name: str) -> BatchMerger:
        """A merger on the same connection and rules whose ledger is ``query_name``; this one is unchanged."""
        bound = copy.copy(self)
        bound.query_name = query_name
        return bound

    # --- ledger ----------------------------------------------------------------------------------
    def is_committed(self, batch_id: int) -> bool:
        row = (
            self.con.cursor()
            .execute(
                "SELECT 1 FROM sink_commits WHERE query_name = ? AND batch_id = ?",
                [self.query_name, batch_id],
            )
            .fetchall()
        )
        return bool(row)

    def _state(
        self, cur: duckdb.DuckDBPyConnection
    ) -> tuple[datetime | None, datetime | None, dict[str, int]]:
        """(watermark for the next batch, max event time so far, offsets done), from the last batch."""
        # This query's last batch; for a new checkpoint, the last batch of any earlier one, so the
        # watermark does not fall back to the epoch and re-open final windows.
        row = cur.execute(
            """
            SELECT watermark, max_event_time, end_offsets FROM sink_commits
            ORDER BY query_name = $q DESC, CASE WHEN query_name = $q THEN batch_id END DESC NULLS LAST,
                     committed_at DESC
            LIMIT 1
            """,
            {"q": self.query_name},
        ).fetchall()
        if not row:
            return None, None, {}
        watermark, max_event_time, offsets = row[0]
        candidates = [t for t in (watermark, max_event_time - self.lateness if max_event_time else None) if t]
        return (max(candidates) if candidates else None), max_event_time, json.loads(offsets or "{}")

    # --- the merge -------------------------------------------------------------------------------
    def merge_records(self, batch_id: int, records: pa.Table, spark_ms: float = 0.0) -> BatchResult:
        """Parse Spark's raw Kafka records (``RAW_SCHEMA``), then merge them; what the stream calls.

        The parse runs before the write transaction, on the parser's own connection: readers and
        the store's housekeeping never wait for it. Its time counts in the sink's.
        """
        started = time.perf_counter()
        batch = self.parser.parse(records)
        return self.merge(batch_id, batch, spark_ms, parse_ms=(time.perf_counter() - started) * 1000)

    def merge(
        self, batch_id: int, batch: pa.Table, spark_ms: float = 0.0, parse_ms: float = 0.0
    ) -> BatchResult:
        """Merge one parsed micro-batch (``BATCH_SCHEMA``) in one transaction."""
        started = time.perf_counter()
        try:
            with write_transaction(self.con, f"batch {batch_id}") as tx:
                result = self._merge(tx.cur, batch_id, batch)
                if not result.skipped:
                    result.spark_ms = spark_ms
                    result.sink_ms = parse_ms + (time.perf_counter() - started) * 1000
                    ledger.record(tx.cur, result)
        except BatchWriteError as exc:
            if is_disk_error(exc.__cause__):
                raise StoreWriteError(
                    f"cannot write the store {self.settings.db}: {exc.__cause__}. Nothing of batch {batch_id} "
                    "was written; fix the disk or permissions and restart, the batch is replayed."
                ) from exc.__cause__
            raise
        return result

    def _merge(self, cur: duckdb.DuckDBPyConnection, batch_id: int, batch: pa.Table) -> BatchResult:
        """The merge's named steps, in order, inside the batch's transaction (see the module doc)."""
        result = BatchResult(batch_id=batch_id, query_name=self.query_name, input_rows=batch.num_rows)
        if cur.execute(
            "SELECT 1 FROM sink_commits WHERE query_name = ? AND batch_id = ?", [self.query_name, batch_id]
        ).fetchall():
            result.skipped = True
            return result
        watermark, max_before, offsets_before = self._state(cur)
        wm = watermark or EPOCH
        result.watermark = watermark
        cur.register("batch", batch)
        # A failed step aborts the transaction; the cursor (and its registration) is closed then.
        result.dead_letters = self._dead_letters(cur, batch_id)
        batch_max = self._stage(cur, batch, wm, result)
        self._readings(cur, batch_id)
        self._late_events(cur, batch_id, wm)
        result.windows_updated = self._merge_windows(cur, self._window_us, wm)
        result.anomalies = self.judge.judge(cur, batch_id)
        self._finalise(cur, wm, max_before, batch_max, result)
        self._latency(cur, result)
        self._end_offsets(cur, offsets_before, result)
        cur.unregister("batch")
        return result

    @property
    def _window_us(self) -> int:
        return int(self.window.total_seconds() * 1_000_000)

    def _dead_letters(self, cur: duckdb.DuckDBPyConnection, batch_id: int) -> int:
        """Every record that failed validation, with its reason and raw bytes."""
        return cur.execute(
            """
            INSERT INTO dead_letters
            SELECT kafka_topic, kafka_partition, kafka_offset, kafka_key, raw_value, error, $batch_id, now()
            FROM batch WHERE error IS NOT NULL
            ON CONFLICT DO NOTHING
            """,
            {"batch_id": batch_id},
        ).fetchall()[0][0]

    def _stage(
        self, cur: duckdb.DuckDBPyConnection, batch: pa.Table, wm: datetime, result: BatchResult
    ) -> datetime | None:
        """The batch's valid events, one copy per event_id (the first in Kafka order), minus those
        already stored at the same event times; late when their window ended at or before the
        watermark. Returns the newest on-time event time."""
        valid = batch.filter(pc.is_null(batch["error"]))
        times = (
            valid["event_time"]
            .cast(pa.timestamp("us", tz="UTC"))
            .cast(pa.int64())
            .to_numpy(zero_copy_only=False)
        )
        ranges, range_params = _time_ranges(times, "event_time")
        cur.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE stage AS
            SELECT b.* EXCLUDE (error, raw_value, kafka_topic),
                   b.window_start + to_microseconds($window_us) <= $wm AS is_late
            FROM batch b
            WHERE b.error IS NULL
              AND NOT EXISTS (
                  SELECT 1 FROM (SELECT event_id FROM readings WHERE {ranges}) r
                  WHERE r.event_id = b.event_id)
            QUALIFY row_number() OVER (PARTITION BY b.event_id ORDER BY b.kafka_partition, b.kafka_offset) = 1
            """,
            {"window_us": self._window_us, "wm": wm, **range_params},
        )
        result.valid_rows = batch.num_rows - result.dead_letters
        counts = cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE is_late), max(event_time) FILTER (WHERE NOT is_late) FROM stage"
        ).fetchall()[0]
        result.new_readings, result.late_rows, batch_max = counts
        result.duplicate_rows = result.valid_rows - result.new_readings
        return batch_max

    def _readings(self, cur: duckdb.DuckDBPyConnection, batch_id: int) -> None:
        """Append the staged events; in event-time order, so each row group covers a short span
        and zone maps stay tight."""
        cur.execute(
            """
            INSERT INTO readings BY NAME
            SELECT event_id, sensor_id, event_time, value, sensor_type, unit, site, window_start, is_late,
                   kafka_partition, kafka_offset, kafka_timestamp, $batch_id AS batch_id, now() AS ingested_at
            FROM stage ORDER BY event_time
            """,
            {"batch_id": batch_id},
        )

    def _late_events(self, cur: duckdb.DuckDBPyConnection, batch_id: int, wm: datetime) -> None:
        """The staged events whose window was already final, with the watermark that made them late."""
        cur.execute(
            """
            INSERT INTO late_events
            SELECT event_id, sensor_id, event_time, value, window_start, $wm, kafka_partition, kafka_offset,
                   $batch_id, now()
            FROM stage WHERE is_late ORDER BY event_time
            """,
            {"wm": wm, "batch_id": batch_id},
        )

    def _finalise(
        self, cur: duckdb.DuckDBPyConnection, wm: datetime, max_before: datetime | None,
        batch_max: datetime | None, result: BatchResult,
    ) -> None:  # fmt: skip
        """Move the watermark and mark the windows it passed final.

        Windows that ended at or before this batch's watermark were finalised by an earlier batch
        (and no batch opens a window the watermark has passed), so only the range in between is
        looked at.
        """
        candidates = [t for t in (max_before, batch_max) if t is not None]
        result.max_event_time = max(candidates) if candidates else None
        moved = result.max_event_time - self.lateness if result.max_event_time else None
        next_wm = max(t for t in (wm, moved) if t is not None)
        result.next_watermark = next_wm if next_wm > EPOCH else None
        if result.next_watermark is not None and result.next_watermark > wm:
            result.windows_finalized = cur.execute(
                "UPDATE window_stats SET is_final = true, updated_at = now() "
                "WHERE window_end > $wm AND window_end <= $next AND NOT is_final",
                {"wm": wm, "next": result.next_watermark},
            ).fetchall()[0][0]

    def _end_offsets(
        self, cur: duckdb.DuckDBPyConnection, before: dict[str, int], result: BatchResult
    ) -> None:
        """Cumulative: the highest offset done per partition, including partitions idle in this batch."""
        result.end_offsets = dict(before)
        for p, o in cur.execute(
            "SELECT kafka_partition, max(kafka_offset) FROM batch GROUP BY ALL"
        ).fetchall():
            result.end_offsets[str(p)] = max(o, result.end_offsets.get(str(p), -1))

    def _merge_windows(self, cur: duckdb.DuckDBPyConnection, window_us: int, wm: datetime) -> int:
        """Fold the batch's new on-time events into their windows; returns the windows touched.

        ``stage.window_start`` is the latest window holding the event (its only window when
        tumbling); with SLIDE an event sits in ceil(WINDOW / SLIDE) windows, the earlier ones SLIDE
        apart. Windows the watermark already passed are final and never touched again. ``m2`` is
        the window's sum of squared deviations from its mean: two parts (n_a, mean_a, m2_a) and
        (n_b, mean_b, m2_b) combine exactly into n = n_a + n_b, mean = mean_a + d * n_b / n,
        m2 = m2_a + m2_b + d^2 * n_a * n_b / n with d = mean_b - mean_a; stddev = sqrt(m2 / (n - 1)).
        """
        slide_us = int(self.slide.total_seconds() * 1_000_000)
        cur.execute(
            """
            CREATE OR REPLACE TEMP TABLE batch_windows AS
            SELECT s.sensor_id, s.window_start - to_microseconds(k * $s) AS ws,
                   max(s.sensor_type) AS sensor_type, max(s.site) AS site, count(*) AS n,
                   avg(s.value) AS mean, var_pop(s.value) * count(*) AS m2,
                   min(s.value) AS lo, max(s.value) AS hi
            FROM stage s, range(0, $n) AS t(k)
            WHERE NOT s.is_late
              AND s.window_start - to_microseconds(k * $s) > s.event_time - to_microseconds($w)
              AND s.window_start - to_microseconds(k * $s) + to_microseconds($w) > $wm
            GROUP BY ALL
            """,
            {"w": window_us, "s": slide_us, "n": -(-window_us // slide_us), "wm": wm},
        )
        # `window_stats.x` is the stored window, `excluded.x` the batch's part; each SET sees the old row.
        return cur.execute(
            """
            INSERT INTO window_stats (sensor_id, window_start, window_end, sensor_type, site, reading_count,
                avg_value, min_value, max_value, stddev_value, is_final, updated_at, m2_value)
            SELECT sensor_id, ws, ws + to_microseconds($w), sensor_type, site, n, mean, lo, hi,
                   CASE WHEN n > 1 THEN sqrt(m2 / (n - 1)) END, false, now(), m2
            FROM batch_windows
            ON CONFLICT (sensor_id, window_start) DO UPDATE SET
                sensor_type = greatest(window_stats.sensor_type, excluded.sensor_type),
                site = greatest(window_stats.site, excluded.site),
                reading_count = window_stats.reading_count + excluded.reading_count,
                avg_value = window_stats.avg_value + (excluded.avg_value - window_stats.avg_value)
                    * excluded.reading_count / (window_stats.reading_count + excluded.reading_count),
                min_value = least(window_stats.min_value, excluded.min_value),
                max_value = greatest(window_stats.max_value, excluded.max_value),
                m2_value = window_stats.m2_value + excluded.m2_value
                    + (excluded.avg_value - window_stats.avg_value) ** 2
                    * window_stats.reading_count * excluded.reading_count
                    / (window_stats.reading_count + excluded.reading_count),
                stddev_value = sqrt((window_stats.m2_value + excluded.m2_value
                    + (excluded.avg_value - window_stats.avg_value) ** 2
                    * window_stats.reading_count * excluded.reading_count
                    / (window_stats.reading_count + excluded.reading_count))
                    / (window_stats.reading_count + excluded.reading_count - 1)),
                updated_at = excluded.updated_at
            """,
            {"w": window_us},
        ).fetchall()[0][0]

    def _latency(self, cur: duckdb.DuckDBPyConnection, result: BatchResult) -> None:
        """Commit time minus event time (and minus Kafka's append time) for this batch's new events."""
        row = cur.execute(
            """
            SELECT quantile_cont(epoch_ms(event_time), [0.5, 0.05]), min(epoch_ms(event_time)),
                   quantile_cont(epoch_ms(kafka_timestamp), [0.5, 0.05]), min(epoch_ms(kafka_timestamp))
            FROM stage WHERE NOT is_late
            """
        ).fetchall()[0]
        now_ms = time.time() * 1000
        if row[0] is not None:
            result.latency_p50_ms, result.latency_p95_ms = (now_ms - q for q in row[0])
            result.latency_max_ms = now_ms - row[1]
        if row[2] is not None:
            result.kafka_latency_p50_ms, result.kafka_latency_p95_ms = (now_ms - q for q in row[2])
            result.kafka_latency_max_ms = now_ms - row[3]


# At most this many separate event-time ranges per lookup: the filter stays short, and a batch of
# events scattered over the whole store still reads at most this many stretches of it.
MAX_RANGES = 32
# Event times closer than this share one range (one scan of the readings in between is cheaper
# than another range in the filter).
RANGE_GAP_US = 10_000_000


def _time_ranges(times_us: np.ndarray, target: str, gap_us: int = RANGE_GAP_US) -> tuple[str, dict[str, Any]]:
    """A filter on ``target`` covering every one of ``times_us`` (microseconds), as a few closed ranges.

    Returns SQL like ``(t BETWEEN $r0a AND $r0b OR t BETWEEN $r1a AND $r1b)`` and its parameters.
    The bounds are parameters, not subqueries: DuckDB prunes row groups by their min/max (zone
    maps) only for values known when the query is planned. Ranges are cut at the widest gaps wider
    than ``gap_us`` between consecutive values (at most MAX_RANGES ranges). Computed here from the
    batch's Arrow column: the same in SQL (a sort and two window functions) cost ~20 ms a batch.
    """
    t = np.unique(times_us)
    if t.size == 0:
        return "false", {}
    gaps = np.diff(t)
    cuts = np.flatnonzero(gaps > gap_us)
    if cuts.size > MAX_RANGES - 1:
        cuts = np.sort(cuts[np.argsort(-gaps[cuts], kind="stable")[: MAX_RANGES - 1]])
    starts, ends = np.concatenate(([t[0]], t[cuts + 1])), np.concatenate((t[cuts], [t[-1]]))
    params: dict[str, Any] = {}
    terms = []
    for i, (lo, hi) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        params[f"r{i}a"] = EPOCH + timedelta(microseconds=lo)
        params[f"r{i}b"] = EPOCH + timedelta(microseconds=hi)
        terms.append(f"{target} BETWEEN $r{i}a AND $r{i}b")
    return "(" + " OR ".join(terms) + ")", params

"""Everything monitoring runs beside the job: metrics endpoint, Spark's progress, lag and alerts."""

from __future__ import annotations

import logging
import threading

import duckdb

from sensorstream.config import Settings
from sensorstream.monitor.alerts import AlertRules
from sensorstream.monitor.lag import LAST_END_OFFSETS_SQL, TopicLag, end_offsets
from sensorstream.monitor.metrics import PipelineMetrics
from sensorstream.sink import ledger
from sensorstream.sink.base import BatchResult, ledger_name
from sensorstream.store.background import Periodic

log = logging.getLogger(__name__)


class MonitorService:
    def __init__(self, con: duckdb.DuckDBPyConnection, settings: Settings, job) -> None:
        self.con = con
        self.settings = settings
        self.job = job
        self.metrics = PipelineMetrics()
        self.alerts = AlertRules(settings.alert_lag_batches, settings.stale_after, settings.alert_min_lag)
        self.lag = TopicLag(settings)
        self._end_offsets: dict[str, int] | None = None
        self._tick = Periodic("monitor-lag", 5.0, self._on_tick)
        self._progress_lock = threading.Lock()
        self._progress_seen: int | None = None  # the last batch whose progress was recorded

    def start(self) -> MonitorService:
        last = self.con.cursor().execute(LAST_END_OFFSETS_SQL).fetchall()
        self._end_offsets = end_offsets(last[0][0]) if last else {}
        self.metrics.serve(self.settings.host, self.settings.metrics_port)
        self.job.on_batch.append(self._on_batch)
        self._tick.start()
        if self.settings.metrics_port:
            log.info(
                "prometheus metrics at http://%s:%d/metrics", self.settings.host, self.settings.metrics_port
            )
        return self

    def stop(self) -> None:
        self._tick.stop()
        self.metrics.stop()
        self.lag.close()

    def _on_batch(self, result: BatchResult) -> None:
        self.metrics.observe(result)
        self._end_offsets = result.end_offsets  # cumulative per partition (see sink.merge)
        lag = self.lag.lag(self._end_offsets)
        total = sum(lag.values())
        self.metrics.set_lag(lag)
        self.alerts.on_batch(total)
        self._export_alerts()
        ledger.annotate(self.con, result.query_name, result.batch_id, consumer_lag=total)
        self._record_progress()

    def _record_progress(self) -> None:
        """Spark's own view of its newest finished trigger (input and processed rates, trigger time)
        into that batch's metrics row.

        Polled after each batch (then usually the one before it: its trigger has ended) and on the
        tick (the last one before the stream went idle), not heard from a StreamingQueryListener:
        PySpark builds a listener's event with a Py4J call per field, which cost the JVM a tenth of
        a core at 5 K events/s and the batch's thread the GIL; ``lastProgress`` is two calls and one
        JSON text. A batch whose trigger ended between two polls keeps these columns empty.
        """
        query = self.job.query
        if query is None:
            return
        with self._progress_lock:
            try:
                p = query.lastProgress
            except Exception:  # the JVM is going away with the job; nothing to record
                return
            if p is None or p.batchId == self._progress_seen or p.name != self.job.query_name:
                return
            self._progress_seen = p.batchId
            if not p.numInputRows:
                return
            self.metrics.rows_per_second.labels("input").set(p.inputRowsPerSecond or 0)
            self.metrics.rows_per_second.labels("processed").set(p.processedRowsPerSecond or 0)
            ledger.annotate(
                # The progress names the query and its checkpoint's id, as the ledger does.
                self.con, ledger_name(p.name, p.id), p.batchId,
                input_rows_per_second=p.inputRowsPerSecond,
                processed_rows_per_second=p.processedRowsPerSecond,
                trigger_ms=p.durationMs.get("triggerExecution"),
            )  # fmt: skip

    def _on_tick(self) -> None:
        if self._end_offsets is not None:
            lag = self.lag.lag(self._end_offsets)
            self.metrics.set_lag(lag)
            self.alerts.on_tick(sum(lag.values()))
            self._export_alerts()
        self._record_progress()  # after the lag: a failed write here must not cost the alerts a tick

    def _export_alerts(self) -> None:
        for rule, on in self.alerts.firing.items():
            self.metrics.alerts.labels(rule).set(1 if on else 0)

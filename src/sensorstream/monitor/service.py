"""Everything monitoring runs beside the job: metrics endpoint, progress listener, lag and alerts."""

from __future__ import annotations

import logging

import duckdb

from sensorstream.config import Settings
from sensorstream.monitor.alerts import AlertRules
from sensorstream.monitor.lag import LAST_END_OFFSETS_SQL, TopicLag, end_offsets
from sensorstream.monitor.metrics import PipelineMetrics
from sensorstream.sink import ledger
from sensorstream.sink.base import BatchResult
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
        self._listener = None

    def start(self) -> MonitorService:
        from sensorstream.monitor.listener import ProgressListener

        last = self.con.cursor().execute(LAST_END_OFFSETS_SQL).fetchall()
        self._end_offsets = end_offsets(last[0][0]) if last else {}
        self.metrics.serve(self.settings.host, self.settings.metrics_port)
        self.job.on_batch.append(self._on_batch)
        self._listener = ProgressListener(self.con, self.metrics, self.job.query_name)
        self.job.spark.streams.addListener(self._listener)
        self._tick.start()
        if self.settings.metrics_port:
            log.info(
                "prometheus metrics at http://%s:%d/metrics", self.settings.host, self.settings.metrics_port
            )
        return self

    def stop(self) -> None:
        self._tick.stop()
        if self._listener is not None:
            self._listener.close()
            self.job.spark.streams.removeListener(self._listener)
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
        ledger.annotate(self.con, result.batch_id, consumer_lag=total)

    def _on_tick(self) -> None:
        if self._end_offsets is None:
            return
        lag = self.lag.lag(self._end_offsets)
        self.metrics.set_lag(lag)
        self.alerts.on_tick(sum(lag.values()))
        self._export_alerts()

    def _export_alerts(self) -> None:
        for rule, on in self.alerts.firing.items():
            self.metrics.alerts.labels(rule).set(1 if on else 0)

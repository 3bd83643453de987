"""A StreamingQueryListener that adds Spark's own view of each batch to `pipeline_metrics`.

The sink already wrote the batch's row in its transaction; Spark reports its progress (input and
processed rates, trigger duration) only after the batch, so this fills in those columns.
"""

from __future__ import annotations

import logging

import duckdb
from pyspark.sql.streaming import StreamingQueryListener

from sensorstream.monitor.metrics import PipelineMetrics
from sensorstream.sink import ledger
from sensorstream.store.db import writes_held
from sensorstream.stream.job import stopped_on_request

log = logging.getLogger(__name__)


class ProgressListener(StreamingQueryListener):
    def __init__(self, con: duckdb.DuckDBPyConnection, metrics: PipelineMetrics, query_name: str) -> None:
        self.con = con
        self.metrics = metrics
        self.query_name = query_name
        self.closed = False

    def close(self) -> None:
        """No more writes: Spark may still deliver a queued event after removeListener, and the
        store connection closes right after the monitor stops."""
        with writes_held():
            self.closed = True

    def onQueryStarted(self, event) -> None:
        pass

    def onQueryIdle(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        if event.exception and not stopped_on_request(event.exception):
            log.error("streaming query terminated with an error: %s", event.exception)

    def onQueryProgress(self, event) -> None:
        p = event.progress
        if p.name != self.query_name or not p.numInputRows:
            return
        self.metrics.rows_per_second.labels("input").set(p.inputRowsPerSecond or 0)
        self.metrics.rows_per_second.labels("processed").set(p.processedRowsPerSecond or 0)
        try:
            ledger.annotate(
                self.con, p.batchId, unless=lambda: self.closed,
                input_rows_per_second=p.inputRowsPerSecond,
                processed_rows_per_second=p.processedRowsPerSecond,
                trigger_ms=p.durationMs.get("triggerExecution"),
            )  # fmt: skip
        except Exception:  # a listener must never take the job down
            log.exception("could not record progress of batch %s", p.batchId)

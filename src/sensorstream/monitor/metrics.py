"""Prometheus metrics of the streaming job, served on 127.0.0.1:METRICS_PORT (0 = off).

Names follow Prometheus conventions so an existing Prometheus + Grafana can scrape them:
``sensorstream_events_total{outcome}``, ``sensorstream_batch_duration_seconds``,
``sensorstream_e2e_latency_seconds{quantile,clock}``, ``sensorstream_consumer_lag{partition}``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from sensorstream.sink.base import BatchResult

OUTCOMES = ("input", "valid", "new", "duplicate", "late", "dead_letter", "anomaly")


class MetricsPortError(RuntimeError):
    """The Prometheus endpoint cannot listen on SENSORSTREAM_METRICS_PORT."""


class PipelineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("sensorstream_events", "Kafka records by outcome", ["outcome"], registry=r)
        self.batches = Counter("sensorstream_batches", "Committed micro-batches", registry=r)
        self.batch_duration = Histogram(
            "sensorstream_batch_duration_seconds", "Spark + sink time per micro-batch", registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )  # fmt: skip
        self.stage_seconds = Gauge(
            "sensorstream_batch_stage_seconds", "Last batch's time per stage", ["stage"], registry=r
        )
        self.latency = Gauge(
            "sensorstream_e2e_latency_seconds", "Commit time minus event time (clock=event) or Kafka append time "
            "(clock=kafka), last batch", ["quantile", "clock"], registry=r,
        )  # fmt: skip
        self.latency_hist = Histogram(
            "sensorstream_e2e_latency_p50_seconds", "Per-batch median event->commit latency", registry=r,
            buckets=(0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60),
        )  # fmt: skip
        self.lag = Gauge(
            "sensorstream_consumer_lag",
            "Records in Kafka not yet committed to the store",
            ["partition"],
            registry=r,
        )
        self.lag_total = Gauge(
            "sensorstream_consumer_lag_total", "Sum of consumer lag over partitions", registry=r
        )
        self.watermark = Gauge(
            "sensorstream_watermark_seconds", "Event-time watermark (Unix seconds)", registry=r
        )
        self.last_batch = Gauge(
            "sensorstream_last_batch_timestamp_seconds", "When the last batch committed", registry=r
        )
        self.rows_per_second = Gauge(
            "sensorstream_rows_per_second", "Spark's input and processed rates", ["kind"], registry=r
        )
        self.alerts = Gauge("sensorstream_alert", "1 while an alert rule fires", ["rule"], registry=r)
        for outcome in OUTCOMES:
            self.events.labels(outcome)  # export zeros before the first batch
        self._server = None

    def observe(self, r: BatchResult) -> None:
        import time

        for outcome, n in (
            ("input", r.input_rows), ("valid", r.valid_rows), ("new", r.new_readings - r.late_rows),
            ("duplicate", r.duplicate_rows), ("late", r.late_rows), ("dead_letter", r.dead_letters),
            ("anomaly", r.anomalies),
        ):  # fmt: skip
            self.events.labels(outcome).inc(n)
        self.batches.inc()
        self.batch_duration.observe((r.spark_ms + r.sink_ms) / 1000)
        self.stage_seconds.labels("spark").set(r.spark_ms / 1000)
        self.stage_seconds.labels("sink").set(r.sink_ms / 1000)
        for clock, values in (
            ("event", (r.latency_p50_ms, r.latency_p95_ms, r.latency_max_ms)),
            ("kafka", (r.kafka_latency_p50_ms, r.kafka_latency_p95_ms, r.kafka_latency_max_ms)),
        ):
            for quantile, ms in zip(("0.5", "0.95", "max"), values, strict=True):
                if ms is not None:
                    self.latency.labels(quantile, clock).set(ms / 1000)
        if r.latency_p50_ms is not None:
            self.latency_hist.observe(r.latency_p50_ms / 1000)
        if r.next_watermark is not None:
            self.watermark.set(r.next_watermark.timestamp())
        self.last_batch.set(time.time())

    def set_lag(self, lag: dict[int, int]) -> None:
        for partition, n in lag.items():
            self.lag.labels(str(partition)).set(n)
        self.lag_total.set(sum(lag.values()))

    def serve(self, host: str, port: int) -> None:
        if port:
            try:
                self._server, _ = start_http_server(port, addr=host, registry=self.registry)
            except OSError as exc:  # one sentence for the operator, like the read API's busy port
                raise MetricsPortError(
                    f"the metrics endpoint cannot listen on {host}:{port} ({exc.strerror}); another "
                    "process holds that port. Set SENSORSTREAM_METRICS_PORT to a free port (0 turns it off)."
                ) from exc

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

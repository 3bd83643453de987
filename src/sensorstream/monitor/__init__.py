"""Monitoring: Prometheus metrics, Spark progress, consumer lag, alerts and `sensorstream status`."""

"""sensorstream: Kafka -> Spark Structured Streaming -> DuckDB -> live dashboard."""

__version__ = "0.1.0"

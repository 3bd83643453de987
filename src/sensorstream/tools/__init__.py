"""Tooling beside the runtime: benchmarks, fault injection and local Kafka/Spark launchers."""

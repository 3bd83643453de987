"""Tooling beside the runtime: benchmarks, fault injection and a local Spark cluster. The runtime never imports it."""

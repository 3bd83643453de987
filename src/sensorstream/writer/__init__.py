"""The writer process: one stream job, its sink, the store service and monitoring, wired together."""

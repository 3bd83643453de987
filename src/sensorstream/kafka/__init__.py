"""Kafka as the pipeline sees it: topics, the consumer, a local KRaft broker and the `kafka` commands."""

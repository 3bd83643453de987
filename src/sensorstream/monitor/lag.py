"""Consumer lag of the streaming job: the topic's high watermarks minus the last batch's end.

Spark's Kafka source keeps its offsets in the checkpoint, not in a consumer group, so the lag is
computed against the end offsets each batch records in the ``sink_commits`` ledger.
"""

from __future__ import annotations

import json
import logging

from confluent_kafka import Consumer, TopicPartition

from sensorstream.config import Settings

log = logging.getLogger(__name__)
_quiet = logging.getLogger("sensorstream.monitor.librdkafka")
_quiet.setLevel(logging.CRITICAL)


class TopicLag:
    """Reads high watermarks with one long-lived consumer that never joins a group."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic
        self._consumer = Consumer(
            {**settings.kafka_client_config, "group.id": "sensorstream-lag-probe", "enable.auto.commit": False,
             "logger": _quiet}
        )  # fmt: skip

    def high_watermarks(self, timeout: float = 5.0) -> dict[int, int]:
        meta = self._consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
        if meta is None or meta.error is not None:
            return {}
        return {
            p: self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=timeout, cached=False
            )[1]
            for p in sorted(meta.partitions)
        }

    def lag(self, end_offsets: dict[str, int] | str | None, timeout: float = 5.0) -> dict[int, int]:
        """Per-partition lag given the max offset processed per partition (as the ledger stores it)."""
        if isinstance(end_offsets, str):
            end_offsets = json.loads(end_offsets)
        done = {int(p): int(o) + 1 for p, o in (end_offsets or {}).items()}
        return {p: max(high - done.get(p, 0), 0) for p, high in self.high_watermarks(timeout).items()}

    def close(self) -> None:
        self._consumer.close()

"""Consumer lag of the streaming job: the topic's high watermarks minus the last batch's end.

Spark's Kafka source keeps its offsets in the checkpoint, not in a consumer group, so the lag is
computed against the end offsets each batch records in the ``sink_commits`` ledger. The one lag
calculation: monitoring, ``sensorstream status``, the benchmarks and the fault runs use it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from sensorstream.config import Settings
from sensorstream.kafka.topics import QUIET_LOG

log = logging.getLogger(__name__)

# The last committed batch's end offsets, per partition (inclusive: the last offset processed).
LAST_END_OFFSETS_SQL = "SELECT end_offsets FROM sink_commits ORDER BY committed_at DESC LIMIT 1"


def end_offsets(value: dict[str, int] | str | None) -> dict[str, int]:
    """The ledger's ``end_offsets`` (JSON text or already parsed); ``{}`` before the first batch."""
    if isinstance(value, str):
        return json.loads(value or "{}")
    return dict(value or {})


def lag_per_partition(high_watermarks: dict[int, int], done: dict[str, int] | str | None) -> dict[int, int]:
    """Records not yet committed per partition: the high watermark (next offset to be written)
    minus one past the last offset processed."""
    next_offsets = {int(p): int(o) + 1 for p, o in end_offsets(done).items()}
    return {p: max(high - next_offsets.get(p, 0), 0) for p, high in high_watermarks.items()}


class TopicLag:
    """Reads high watermarks with one long-lived consumer that never joins a group."""

    def __init__(self, settings: Settings | None = None, *, client_config: dict[str, Any] | None = None,
                 topic: str | None = None) -> None:  # fmt: skip
        """From the settings, or (tools probing another broker) a client config and a topic."""
        config = client_config if client_config is not None else settings.kafka_client_config  # type: ignore[union-attr]
        self.topic = topic or settings.topic  # type: ignore[union-attr]
        self._consumer = Consumer(
            {**config, "group.id": "sensorstream-lag-probe", "enable.auto.commit": False, "logger": QUIET_LOG}
        )

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

    def lag(self, done: dict[str, int] | str | None, timeout: float = 5.0) -> dict[int, int]:
        """Per-partition lag given the max offset processed per partition (as the ledger stores it)."""
        return lag_per_partition(self.high_watermarks(timeout), done)

    def __enter__(self) -> TopicLag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

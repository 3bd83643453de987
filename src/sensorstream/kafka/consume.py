"""Reading the topic back: a consumer-group reader for ``sensorstream consume``, and group lag.

Offsets are stored only after the caller has taken a message from :func:`consume` and committed
when it ends, so a message counts as consumed once it was handed over; :func:`lag` then says how
far a group is behind (high watermark minus committed offset, per partition).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from sensorstream.kafka.topics import QUIET_LOG

log = logging.getLogger(__name__)
_librdkafka_log = QUIET_LOG

DEFAULT_GROUP = "sensorstream-consume"
StartAt = Literal["committed", "beginning", "latest"]


def consume(
    client_config: dict[str, Any],
    topic: str,
    *,
    group: str = DEFAULT_GROUP,
    start: StartAt = "committed",
    max_messages: int | None = None,
    idle_timeout: float | None = None,
    stop: threading.Event | None = None,
) -> Iterator[Message]:
    """Yield messages of ``topic`` as a member of ``group``.

    ``start``: ``committed`` resumes where the group left off (the beginning for a new group),
    ``beginning`` and ``latest`` ignore the committed offsets. Ends after ``max_messages``, after
    ``idle_timeout`` seconds without a message, or when ``stop`` is set; commits on the way out.
    """
    consumer = Consumer(
        {
            **client_config,
            "group.id": group,
            "auto.offset.reset": "earliest",
            # Store an offset only once the caller has the message; commit those in the background.
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "logger": _librdkafka_log,
        }
    )

    def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
        if start != "committed":
            for tp in partitions:
                tp.offset = OFFSET_BEGINNING if start == "beginning" else OFFSET_END
            c.assign(partitions)

    consumer.subscribe([topic], on_assign=on_assign)
    seen = 0
    last = time.monotonic()
    try:
        while max_messages is None or seen < max_messages:
            if stop is not None and stop.is_set():
                break
            msg = consumer.poll(0.2)
            if msg is None:
                if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                    break
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            last = time.monotonic()
            yield msg
            consumer.store_offsets(msg)
            seen += 1
    finally:
        with contextlib.suppress(KafkaException):  # "no offset to commit" is fine
            consumer.commit(asynchronous=False)
        consumer.close()


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    low: int
    high: int
    committed: int | None  # None: the group has committed nothing for this partition

    @property
    def lag(self) -> int:
        # Without a commit the group would start at the low watermark (auto.offset.reset=earliest).
        return self.high - (self.committed if self.committed is not None else self.low)


def lag_details(
    client_config: dict[str, Any], topic: str, group: str = DEFAULT_GROUP, timeout: float = 10.0
) -> list[PartitionLag]:
    """Watermarks and committed offset of every partition of ``topic`` for ``group``."""
    consumer = Consumer(
        {**client_config, "group.id": group, "enable.auto.commit": False, "logger": _librdkafka_log}
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaException(meta.error if meta else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
        wanted = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        rows = []
        for tp in _committed(consumer, wanted, timeout):
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
            rows.append(PartitionLag(tp.partition, low, high, tp.offset if tp.offset >= 0 else None))
        return rows
    finally:
        consumer.close()


# On a fresh broker the offsets topic and its coordinator appear only with the first group:
# these errors mean "ask again shortly", not "no such group".
_COORDINATOR_SETTLING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}


def _committed(consumer: Consumer, wanted: list[TopicPartition], timeout: float) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.committed(wanted, timeout=max(deadline - time.monotonic(), 1.0))
        except KafkaException as exc:
            if exc.args[0].code() not in _COORDINATOR_SETTLING or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def lag(
    client_config: dict[str, Any], topic: str, group: str = DEFAULT_GROUP, timeout: float = 10.0
) -> dict[int, int]:
    """Per-partition lag of ``group`` on ``topic``: high watermark minus committed offset."""
    return {row.partition: row.lag for row in lag_details(client_config, topic, group, timeout)}


def as_json(msg: Message) -> dict[str, Any]:
    """One message as a JSON-able dict; a value that is not UTF-8 comes as ``value_hex``."""
    key = msg.key()
    value = msg.value() or b""
    doc: dict[str, Any] = {
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp_ms": msg.timestamp()[1],
        "key": key.decode("utf-8", "backslashreplace") if key is not None else None,
    }
    try:
        doc["value"] = value.decode("utf-8")
    except UnicodeDecodeError:
        doc["value"] = None
        doc["value_hex"] = value.hex()
    return doc

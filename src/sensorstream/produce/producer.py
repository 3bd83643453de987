"""Our Kafka producer: a thin confluent-kafka wrapper with safe defaults and delivery counts.

Idempotent with ``acks=all`` so a retry never duplicates or reorders a partition; large batches,
a short linger and lz4 because sensor JSON is small and repetitive (see ``bench/kafka.py`` for the
numbers behind these values).
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from sensorstream.kafka.topics import QUIET_LOG

log = logging.getLogger(__name__)

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "delivery.report.only.error": True,
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    # Enough room that a tight loop rarely hits BufferError, bounded so memory stays bounded.
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 512 * 1024,
    "message.timeout.ms": 120_000,
}

POLL_INTERVAL = 0.05  # seconds between serving delivery reports while sending
FLUSH_MARGIN = 5.0  # seconds beyond message.timeout.ms for the last delivery reports
INTERRUPTED_FLUSH = 10.0  # seconds a Ctrl-C'd run waits for what it queued

# librdkafka logs every refused connection while a broker is down; our counts say what matters.
_librdkafka_log = QUIET_LOG


class EventProducer:
    """Send raw messages to one topic and count what the broker acknowledged.

    Delivery reports come only for failures (``delivery.report.only.error``): a Python callback
    per acknowledged message cost a third of the throughput. A message is acknowledged once it is
    neither failed nor still in librdkafka's hands, so ``acked`` is exact after :meth:`flush`
    (also on ``with`` exit) and a live, slightly conservative count before it.
    """

    def __init__(
        self, client_config: dict[str, Any], topic: str, overrides: dict[str, Any] | None = None
    ) -> None:
        self.topic = topic
        self.config = {**client_config, **PRODUCER_DEFAULTS, **(overrides or {})}
        self._producer = Producer(
            {**self.config, "logger": _librdkafka_log, "on_delivery": self._on_delivery}
        )
        self.sent = 0
        self.failed = 0
        self.bytes_sent = 0
        self.last_error: KafkaError | None = None
        self._next_poll = 0.0

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        self.failed += 1
        if self.last_error is None or self.last_error.code() != err.code():
            log.warning("delivery failed: %s", err)
        self.last_error = err

    def send(self, value: bytes, key: bytes | None = None) -> None:
        """Queue one message; waits (serving delivery reports) only when the local queue is full."""
        while True:
            try:
                self._producer.produce(self.topic, value, key)
                break
            except BufferError:
                self._producer.poll(0.05)
        self.sent += 1
        self.bytes_sent += len(value)
        # Serve delivery reports as we go so the counts stay live, but not per message: each poll
        # is a round trip into librdkafka, and at 100k msgs/s that alone costs a good share.
        now = time.monotonic()
        if now >= self._next_poll:
            self._producer.poll(0)
            self._next_poll = now + POLL_INTERVAL

    def poll(self, timeout: float = 0) -> None:
        self._producer.poll(timeout)

    @property
    def acked(self) -> int:
        return self.sent - self.failed - len(self._producer)

    @property
    def in_flight(self) -> int:
        return len(self._producer)

    @property
    def answer_timeout(self) -> float:
        """Seconds by which librdkafka has answered for every queued message: delivered, or failed
        with a report (``message.timeout.ms``), plus a margin for the report to arrive."""
        return int(self.config.get("message.timeout.ms", 300_000)) / 1000 + FLUSH_MARGIN

    def flush(self, timeout: float | None = None) -> int:
        """Wait for every delivery report; returns how many messages are still undelivered.

        By default as long as librdkafka may keep a message (:attr:`answer_timeout`), so what is
        left after it is none: a shorter wait (it was 60 s, against 120 s of retries) counted
        messages still being retried after a broker restart as undelivered, and a run ended
        without them.
        """
        left = self._producer.flush(self.answer_timeout if timeout is None else timeout)
        if left:
            log.warning("%d message(s) still had no answer from the broker when the wait ended", left)
        return left

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.flush()

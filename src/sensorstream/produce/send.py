"""``produce(settings, plan)``: run one plan against Kafka and return what was sent.

The CLI, the ``run`` command, the tests and the benchmarks all come through here, so the counts
a test checks are the counts a user sees.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sensorstream.config import Settings
from sensorstream.produce import dataset
from sensorstream.produce.file_source import count_lines, file_messages
from sensorstream.produce.inject import Injector
from sensorstream.produce.messages import Outgoing
from sensorstream.produce.plan import DEFAULT_RATE, ProducePlan, ProduceSummary
from sensorstream.produce.producer import INTERRUPTED_FLUSH, EventProducer
from sensorstream.produce.progress import ProgressLine
from sensorstream.produce.rate import TokenBucket
from sensorstream.produce.simulator import Simulator

log = logging.getLogger(__name__)


def _rate(plan: ProducePlan) -> float:
    if plan.rate is not None:
        return plan.rate
    return DEFAULT_RATE if plan.source == "simulator" else 0.0


def _messages(
    plan: ProducePlan, settings: Settings, start: datetime
) -> tuple[int | None, Iterator[Outgoing]]:
    """(how many readings, if known; the labelled messages) for the plan's source."""
    if plan.file is not None:
        lines = count_lines(plan.file)
        total = lines if plan.count is None else min(plan.count, lines)
        messages = file_messages(plan.file, settings.valid_ranges)
        return total, (m for _, m in zip(range(total), messages, strict=False))
    if plan.dataset is not None:
        total, readings = dataset.readings(plan.dataset, start, plan.speed, plan.seed, limit=plan.count)
    else:
        rate = _rate(plan)
        total = plan.count
        if total is None and plan.duration is not None and rate > 0:
            total = round(rate * plan.duration)
        # Event times advance as the sends do, so they track the wall clock at the chosen rate.
        interval = 1.0 / rate if rate > 0 else 0.001
        sim = Simulator(
            plan.sensors, start, interval, plan.seed, settings.valid_ranges, natural=plan.natural_faults
        )
        readings = sim.readings(total)
        if rate > 0:
            # Send each reading when its event time comes. A token bucket over all messages would
            # let the injected extras (duplicates, malformed) slow the readings down, and event
            # time would fall further behind the wall clock the longer the run goes.
            readings = (replace(r, due=(r.event_time - start).total_seconds()) for r in readings)
    injector = Injector(plan.injection, total, plan.seed, settings.valid_ranges)
    return total, injector.run(readings)


def produce(
    settings: Settings,
    plan: ProducePlan,
    *,
    progress: bool = False,
    stop: threading.Event | None = None,
    producer_config: dict[str, Any] | None = None,
) -> ProduceSummary:
    """Send the plan's messages; returns once all are acknowledged (or failed), or on ``stop``.

    ``stop`` (or Ctrl-C) ends the run early; what was queued is still flushed and counted.
    """
    topic = plan.topic or settings.topic
    start = plan.start or datetime.now(UTC)
    total, messages = _messages(plan, settings, start)
    rate = _rate(plan)
    bucket = TokenBucket(rate) if rate > 0 and plan.source != "dataset" else None
    summary = ProduceSummary(topic=topic, source=plan.source)
    producer = EventProducer(settings.kafka_client_config, topic, producer_config)
    t0 = time.monotonic()
    deadline = t0 + plan.duration if plan.duration is not None else None
    with ProgressLine(total, enabled=progress) as line:
        try:
            for msg in messages:
                if (stop is not None and stop.is_set()) or (deadline and time.monotonic() >= deadline):
                    summary.interrupted = stop is not None and stop.is_set()
                    break
                if msg.due is not None:
                    _sleep_until(t0 + msg.due, stop)
                elif bucket is not None:
                    bucket.take()
                producer.send(msg.value, msg.key)
                summary.kinds[msg.kind] += 1
                line.update(producer.sent, producer.acked, producer.failed)
        except KeyboardInterrupt:
            summary.interrupted = True
            log.info("interrupted; flushing what was queued")
        left = producer.flush(INTERRUPTED_FLUSH if summary.interrupted else None)
        summary.elapsed = time.monotonic() - t0
        line.update(producer.sent, producer.acked, producer.failed, force=True)
    summary.acked, summary.failed, summary.bytes = producer.acked, producer.failed + left, producer.bytes_sent
    log.info(
        "produced %d message(s) to %s in %.1fs: %d acked, %d failed",
        summary.sent, topic, summary.elapsed, summary.acked, summary.failed,
    )  # fmt: skip
    return summary


def _sleep_until(when: float, stop: threading.Event | None) -> None:
    delay = when - time.monotonic()
    if delay <= 0:
        return
    if stop is not None:
        stop.wait(delay)
    else:
        time.sleep(delay)

"""broker-restart: the broker goes away while the producer sends and the stream job reads.

1. **single**: one broker, restarted (SIGTERM, start again) while producing and streaming.
2. **3-node**: a KRaft cluster of 3 (topic RF 3, 6 partitions, ``min.insync.replicas=2``); one
   node is killed with SIGKILL for 30 s (quick: 10 s) while producing, then started again.

The producer is the project's own (idempotent, ``acks=all``, 120 s delivery timeout), so it retries
through the outage. Afterwards the topic is read back with a plain consumer: every message must be
there exactly as often as it was sent. The stream job keeps running throughout (a fault that kills
it fails the scenario); the store must then equal the expectation.

Event time advances at half the producer's pace, so partitions stalled behind a failed leader
(up to 50 s) stay inside ``ALLOWED_LATENESS`` and no reading may turn late; the expectation checks
that this holds for its bounds.
"""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient

from sensorstream.tools.faults.env import Workspace, api_up, api_url, caught_up, read_topic, wait_until
from sensorstream.tools.faults.scenario import (
    Background,
    FaultOptions,
    ScenarioResult,
    for_kafka,
    start_reader,
    summary_numbers,
)
from sensorstream.tools.reference import Expectation, StreamSpec, build, topic_check

STALL_BOUND_S = 50.0  # the longest partition stall the expected result is valid for


def run(opts: FaultOptions, nodes: int = 1) -> ScenarioResult:
    name = "broker-restart" if nodes == 1 else "broker-kill-3node"
    outage = 10.0 if opts.quick else 30.0
    events = opts.size(200_000, 20_000) if nodes == 1 else opts.size(150_000, 20_000)
    rate = 1_000.0 if opts.quick else 2_500.0
    restarts = 1 if opts.quick or nodes > 1 else 2
    result = ScenarioResult(
        name,
        faults=f"{restarts} broker restart(s) while producing and streaming" if nodes == 1
        else f"kill -9 of 1 of 3 brokers for {outage:.0f}s while producing and streaming",
    )  # fmt: skip
    with Workspace(name, opts.settings, opts.workdir, opts.keep) as ws:
        try:
            kafka = ws.kafka(brokers=nodes)
            bootstrap = kafka.bootstrap_servers
            topic = ws.topic(
                bootstrap, "faults-broker", partitions=3 if nodes == 1 else 6, replication=min(nodes, 3)
            )
            ranges = opts.settings.valid_ranges
            spec = StreamSpec(
                events=events, seed=opts.seed, step_ms=500.0 / rate, sensors=300, late=0.0, malformed=0.005
            )
            messages = build(spec, ranges)
            ahead = int(rate * STALL_BOUND_S)
            expected = Expectation(messages, ranges, behind=5_000 + ahead, ahead=ahead)

            env = ws.stream_env(bootstrap, topic, max_offsets_per_trigger=5_000)
            job = ws.start_stream(env)
            wait_until(lambda: api_up(api_url(env)), 180, "the read API", job)
            reader = start_reader(ws, env)
            producer = Background(ws, for_kafka(opts.settings, bootstrap, topic), messages, rate).start()
            produce_s = len(messages) / rate
            outages: list[float] = []
            for k in range(restarts):
                time.sleep(produce_s * (0.25 if k == 0 else 0.35))
                t0 = time.monotonic()
                if nodes == 1:
                    kafka.stop()
                    time.sleep(2.0)
                    kafka.start()
                else:
                    kafka.kill(2)
                    time.sleep(outage)
                    kafka.start_node(2)
                outages.append(round(time.monotonic() - t0, 1))
            summary = producer.join(produce_s * 3 + 300)
            result.events, result.numbers = summary.sent, summary_numbers(summary)
            result.numbers["outage_seconds"] = outages
            result.checks["producer: every message acked"] = (
                summary.acked == len(messages) and summary.failed == 0
            )
            result.checks["stream job survived"] = job.alive
            wait_until(lambda: caught_up(api_url(env), bootstrap, topic), 600, "the job to catch up", job)
            result.reader = reader.stop([])
            if nodes > 1:
                result.numbers["isr_after"] = _min_isr(bootstrap, topic)
                result.checks["ISR back to 3"] = result.numbers["isr_after"] == 3
            code = job.terminate()
            result.checks["stream job stopped cleanly (exit 0)"] = code == 0
            topic_counts = topic_check(messages, read_topic(bootstrap, topic))
            result.numbers.update(topic_counts)
            result.checks["topic: nothing lost, nothing doubled"] = (
                topic_counts["topic_lost"] == 0 and topic_counts["topic_doubled"] == 0
            )
            result.verdict = expected.compare(env["SENSORSTREAM_DB"])
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        ws.failed = not result.passed
    return result.finish()


def _min_isr(bootstrap: str, topic: str, timeout: float = 60.0) -> int:
    """The smallest in-sync replica set over the topic's partitions, once it stops growing."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        parts = admin.list_topics(topic, timeout=10).topics[topic].partitions.values()
        smallest = min(len(p.isrs) for p in parts)
        if smallest >= 3 or time.monotonic() > deadline:
            return smallest
        time.sleep(1.0)

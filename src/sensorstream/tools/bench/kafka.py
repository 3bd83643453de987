"""Kafka benchmark: our producer and a plain confluent-kafka consumer vs Kafka's own perf tools.

Both sides get the same broker, topic layout, record count and the very same ~200-byte event
payloads (Java's ``ProducerPerformance`` reads them from ``--payload-file``), and the same
producer settings (``acks=all``, idempotence, compression, linger, batch size), so the ratio
measures the client, not the configuration. Each run starts a throwaway broker on a free port in
a temp dir unless ``--bootstrap-servers`` points at one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import random
import re
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException
from rich.console import Console
from rich.table import Table

from sensorstream.config import Settings
from sensorstream.jvm.classpath import ensure_jars, java_binary
from sensorstream.kafka.broker import LocalKafka
from sensorstream.kafka.topics import create_topic, require_broker
from sensorstream.produce import ProducePlan, produce
from sensorstream.produce.producer import PRODUCER_DEFAULTS, EventProducer
from sensorstream.produce.simulator import Simulator
from sensorstream.tools.ports import free_block

MIB = 1024 * 1024  # Kafka's perf tools report "MB" as MiB
DISTINCT_PAYLOADS = 10_000
# What both producers run with: our defaults, spelled the same way for the Java client.
SHARED_PRODUCER_PROPS = {
    k: PRODUCER_DEFAULTS[k]
    for k in ("acks", "enable.idempotence", "compression.type", "linger.ms", "batch.size")
}

# Prefetch deep: librdkafka's default of 100 k queued messages per partition left our consumer
# waiting on fetches (about 0.2 M msgs/s here); a deeper queue let it read at about 0.8 M msgs/s.
CONSUMER_PROPS = {
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "queued.min.messages": 1_000_000,
    "queued.max.messages.kbytes": 256 * 1024,
}

console = Console(stderr=True)


# --- the broker ----------------------------------------------------------------------------------
@contextlib.contextmanager
def bench_broker(settings: Settings, bootstrap_servers: str | None, port: int | None) -> Iterator[str]:
    if bootstrap_servers:
        # Said at once, in one sentence, before any producer or job waits for it.
        require_broker({**settings.kafka_client_config, "bootstrap.servers": bootstrap_servers})
        yield bootstrap_servers
        return
    with tempfile.TemporaryDirectory(prefix="sensorstream-bench-") as tmp:
        broker = LocalKafka(Path(tmp) / "kafka", port=port or free_block(2), cache_dir=settings.cache_dir)
        console.print(f"starting a throwaway broker on {broker.bootstrap_servers} in {tmp}")
        try:
            yield broker.start()
        finally:
            broker.stop()


# --- payloads ------------------------------------------------------------------------------------
def event_payloads(record_size: int, n: int = DISTINCT_PAYLOADS, seed: int = 0) -> list[tuple[bytes, bytes]]:
    """``n`` real simulator events as (key, value), each padded to exactly ``record_size`` bytes.

    The padding is an extra field (consumers ignore unknown fields) of random hex, so it does not
    compress better than real data would.
    """
    rng = random.Random(seed)
    sim = Simulator(100, datetime.now(UTC) - timedelta(hours=1), 0.01, seed=seed)
    out = []
    for reading in sim.readings(n):
        bare = json.dumps({**reading.event, "pad": ""}, separators=(",", ":"))
        missing = record_size - len(bare.encode())
        if missing < 0:
            raise RuntimeError(f"--record-size {record_size} is smaller than one event ({len(bare)} bytes)")
        padded = {**reading.event, "pad": "".join(rng.choice("0123456789abcdef") for _ in range(missing))}
        value = json.dumps(padded, separators=(",", ":")).encode()
        assert len(value) == record_size
        out.append((reading.key, value))
    return out


# --- Kafka's own tools -----------------------------------------------------------------------------
def _java(settings: Settings, main_class: str, args: list[str], timeout: float) -> str:
    ensure_jars(settings.cache_dir, "kafka")
    classpath = str(Path(settings.cache_dir) / "jars" / "kafka" / "*")
    cmd = [java_binary(), "-Xmx1g", "-cp", classpath, main_class, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{main_class} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def java_producer(settings: Settings, bootstrap: str, topic: str, records: int, payload_file: Path) -> dict:
    props = {**SHARED_PRODUCER_PROPS, "bootstrap.servers": bootstrap}
    out = _java(
        settings,
        "org.apache.kafka.tools.ProducerPerformance",
        ["--topic", topic, "--num-records", str(records), "--throughput", "-1",
         "--payload-file", str(payload_file), "--producer-props",
         *(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in props.items())],
        timeout=900,
    )  # fmt: skip
    # The last line: "N records sent, R records/sec (M MB/sec), L ms avg latency, ..."
    match = re.findall(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)", out)
    if not match:
        raise RuntimeError(f"could not read ProducerPerformance's result:\n{out[-2000:]}")
    sent, rate, mib = match[-1]
    return {"records": int(sent), "msgs_per_s": float(rate), "mib_per_s": float(mib)}


def java_consumer(settings: Settings, bootstrap: str, topic: str, records: int) -> dict:
    out = _java(
        settings,
        "org.apache.kafka.tools.ConsumerPerformance",
        ["--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(records),
         "--group", f"bench-java-{uuid.uuid4().hex[:8]}", "--timeout", "60000"],
        timeout=900,
    )  # fmt: skip
    rows = list(csv.reader(line for line in out.splitlines() if "," in line))
    header = [h.strip() for h in rows[0]]
    values = dict(zip(header, (v.strip() for v in rows[-1]), strict=False))
    # fetch.* excludes the group join (rebalance), which our consumer's clock excludes too.
    return {
        "records": int(values["data.consumed.in.nMsg"]),
        "msgs_per_s": float(values["fetch.nMsg.sec"]),
        "mib_per_s": float(values["fetch.MB.sec"]),
        "msgs_per_s_with_join": float(values["nMsg.sec"]),
    }


# --- ours ----------------------------------------------------------------------------------------
def our_producer(conf: dict[str, Any], topic: str, records: int, payloads: list[tuple[bytes, bytes]]) -> dict:
    """Our EventProducer in a tight loop over pre-built events: the client's own throughput."""
    producer = EventProducer(conf, topic)
    n = len(payloads)
    send = producer.send
    start = time.perf_counter()
    for i in range(records):
        key, value = payloads[i % n]
        send(value, key)
    left = producer.flush(120)
    elapsed = time.perf_counter() - start
    if left or producer.failed:
        raise RuntimeError(f"our producer lost messages: {left} undelivered, {producer.failed} failed")
    return _rates(producer.acked, producer.bytes_sent, elapsed)


def our_pipeline(settings: Settings, bootstrap: str, topic: str, records: int) -> dict:
    """``produce()`` end to end: simulate, build and encode each event, send (progress off)."""
    bench_settings = settings.model_copy(update={"bootstrap_servers": bootstrap})
    bench_settings.__dict__.pop("kafka_client_config", None)  # a cached_property of the original
    summary = produce(bench_settings, ProducePlan(sensors=100, count=records, rate=0, topic=topic))
    return _rates(summary.acked, summary.bytes, summary.elapsed)


def our_consumer(conf: dict[str, Any], topic: str, records: int) -> dict:
    """A plain confluent-kafka consumer reading ``records`` messages in batches."""
    consumer = Consumer({**conf, **CONSUMER_PROPS, "group.id": f"bench-ours-{uuid.uuid4().hex[:8]}"})
    consumer.subscribe([topic])
    seen = size = 0
    start = None
    deadline = time.monotonic() + 600
    try:
        while seen < records and time.monotonic() < deadline:
            batch = consumer.consume(num_messages=10_000, timeout=1.0)
            if batch and start is None:
                start = time.perf_counter()  # after the group join, like Java's fetch.* numbers
            for msg in batch:
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(msg.error())
                    continue
                seen += 1
                size += len(msg.value())
        elapsed = time.perf_counter() - (start or time.perf_counter())
    finally:
        consumer.close()
    return _rates(seen, size, elapsed)


def _rates(messages: int, size: int, elapsed: float) -> dict:
    return {
        "records": messages,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(messages / elapsed, 1) if elapsed else 0.0,
        "mib_per_s": round(size / MIB / elapsed, 2) if elapsed else 0.0,
    }


# --- the run -------------------------------------------------------------------------------------
def run_bench(
    settings: Settings,
    records: int = 1_000_000,
    record_size: int = 200,
    bootstrap_servers: str | None = None,
    port: int | None = None,
    report: Path = Path("reports/bench-kafka.json"),
    pipeline_records: int | None = None,
) -> dict:
    """Run every comparison, print the table, write ``report``; returns the report."""
    payloads = event_payloads(record_size)
    partitions = settings.partitions
    run_id = uuid.uuid4().hex[:8]
    with bench_broker(settings, bootstrap_servers, port) as bootstrap, tempfile.TemporaryDirectory() as tmp:
        conf = {**settings.kafka_client_config, "bootstrap.servers": bootstrap}
        topics = {name: f"bench-{name}-{run_id}" for name in ("java", "ours", "pipeline")}
        for topic in topics.values():
            create_topic(conf, topic, partitions)
        payload_file = Path(tmp) / "payloads.txt"
        payload_file.write_bytes(b"\n".join(value for _, value in payloads))

        console.print(f"producer: Kafka's ProducerPerformance, {records:,} x {record_size} B")
        java_prod = java_producer(settings, bootstrap, topics["java"], records, payload_file)
        console.print("producer: ours")
        ours_prod = our_producer(conf, topics["ours"], records, payloads)
        n_pipeline = pipeline_records or max(records // 5, 1)
        console.print(f"producer: produce() end to end, {n_pipeline:,} simulated events")
        pipeline = our_pipeline(settings, bootstrap, topics["pipeline"], n_pipeline)
        console.print("consumer: Kafka's ConsumerPerformance")
        java_cons = java_consumer(settings, bootstrap, topics["ours"], records)
        console.print("consumer: confluent-kafka")
        ours_cons = our_consumer(conf, topics["ours"], records)

    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "records": records,
        "record_size": record_size,
        "partitions": partitions,
        "broker": bootstrap_servers or "throwaway local KRaft broker",
        "producer_settings": SHARED_PRODUCER_PROPS,
        "our_consumer_settings": CONSUMER_PROPS,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "host": socket.gethostname(),
        },
        "producer": {
            "java": java_prod,
            "ours": ours_prod,
            "ratio": round(ours_prod["msgs_per_s"] / java_prod["msgs_per_s"], 3),
            "target_ratio": 0.7,
        },
        "produce_pipeline": pipeline,
        "consumer": {
            "java": java_cons,
            "ours": ours_cons,
            "ratio": round(ours_cons["msgs_per_s"] / java_cons["msgs_per_s"], 3),
        },
    }
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2) + "\n")
    _print_table(result)
    console.print(f"report: {report}")
    return result


def _print_table(result: dict) -> None:
    table = Table(title=f"Kafka throughput, {result['records']:,} records of {result['record_size']} B")
    for col in ("what", "msgs/s", "MiB/s", "vs Kafka's tool"):
        table.add_column(col, justify="left" if col == "what" else "right")
    prod, cons = result["producer"], result["consumer"]
    rows = [
        ("ProducerPerformance (Java)", prod["java"], ""),
        ("our producer (EventProducer)", prod["ours"], f"{prod['ratio']:.2f}x"),
        ("produce() end to end, simulator", result["produce_pipeline"], ""),
        ("ConsumerPerformance (Java)", cons["java"], ""),
        ("confluent-kafka consumer", cons["ours"], f"{cons['ratio']:.2f}x"),
    ]
    for what, numbers, ratio in rows:
        table.add_row(what, f"{numbers['msgs_per_s']:,.0f}", f"{numbers['mib_per_s']:,.1f}", ratio)
    Console().print(table)

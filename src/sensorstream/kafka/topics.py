"""Topics on any Kafka cluster: create, list, describe, and a check that fails at once when one is missing.

The broker here runs with ``auto.create.topics.enable=false`` (a typo in a topic name should not
create a topic), so a producer or a stream pointed at a missing topic would otherwise wait for
metadata that never comes: ``require_topic`` turns that into one sentence at start-up.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

# librdkafka logs every refused connection while the broker boots; keep that out of our output.
QUIET_LOG = logging.getLogger("sensorstream.kafka.librdkafka")
QUIET_LOG.setLevel(logging.CRITICAL)

# The topic settings `describe` shows (the rest is in `kafka-configs.sh --describe`).
SHOWN_CONFIGS = (
    "retention.ms",
    "retention.bytes",
    "cleanup.policy",
    "min.insync.replicas",
    "compression.type",
)


class TopicError(RuntimeError):
    """A topic is missing, or the cluster refused an operation on it."""


@dataclass
class TopicInfo:
    name: str
    partitions: int
    replication_factor: int
    leaders: dict[int, int] = field(default_factory=dict)  # partition -> broker id (-1: none)
    in_sync: dict[int, int] = field(default_factory=dict)  # partition -> replicas in sync
    configs: dict[str, str] = field(default_factory=dict)


def _admin(client_config: dict) -> AdminClient:
    return AdminClient({**client_config, "logger": QUIET_LOG})


def list_topics(client_config: dict, timeout: float = 10.0) -> list[TopicInfo]:
    """Every topic but Kafka's internal ones, by name."""
    md = _metadata(_admin(client_config), client_config, timeout)
    return [
        _info(t)
        for name, t in sorted(md.topics.items())
        if not name.startswith("__")  # __consumer_offsets and friends
    ]


def describe_topic(client_config: dict, topic: str, timeout: float = 10.0) -> TopicInfo:
    """Partitions, leaders, in-sync replicas and the main settings of ``topic``."""
    require_topic(client_config, topic, timeout)
    admin = _admin(client_config)
    info = _info(admin.list_topics(topic, timeout=timeout).topics[topic])
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=timeout)
    info.configs = {k: entries[k].value for k in SHOWN_CONFIGS if k in entries}
    return info


def create(
    client_config: dict,
    topic: str,
    partitions: int,
    replication_factor: int = 1,
    retention_ms: int | None = None,
) -> bool:
    """Create ``topic``; False when it already exists (its settings are left as they are)."""  # fmt: skip
    config = {"retention.ms": str(retention_ms)} if retention_ms is not None else None
    try:
        return create_topic(client_config, topic, partitions, replication_factor, config=config)
    except KafkaException as exc:
        raise TopicError(f"could not create topic {topic!r}: {exc.args[0].str()}") from exc


def require_topic(client_config: dict, topic: str, timeout: float = 10.0) -> None:
    """Raise :class:`TopicError` with one sentence saying what to do when ``topic`` does not exist."""
    md = _metadata(_admin(client_config), client_config, timeout)
    if topic not in md.topics:
        raise TopicError(
            f"topic {topic!r} does not exist on {client_config['bootstrap.servers']}: create it with "
            f"`sensorstream kafka topic create {topic}` (or set SENSORSTREAM_TOPIC to an existing one; "
            "`sensorstream kafka topic list` shows them)"
        )


def _info(t) -> TopicInfo:
    parts = t.partitions
    return TopicInfo(
        name=t.topic,
        partitions=len(parts),
        replication_factor=max((len(p.replicas) for p in parts.values()), default=0),
        leaders={p.id: p.leader for p in parts.values()},
        in_sync={p.id: len(p.isrs) for p in parts.values()},
    )


def unreachable(bootstrap_servers: str, why: str) -> str:
    """The one sentence for "no broker answers", whichever command met it."""
    return (
        f"Kafka at {bootstrap_servers} does not answer ({why}): start it with `sensorstream kafka start` "
        "or set SENSORSTREAM_BOOTSTRAP_SERVERS"
    )


def _metadata(admin: AdminClient, client_config: dict, timeout: float):
    """The cluster's metadata, or :class:`TopicError` saying that no broker answers."""
    if all_refuse(client_config["bootstrap.servers"]):
        # The admin client would retry them until its timeout (10 s) and then say the same.
        raise TopicError(unreachable(client_config["bootstrap.servers"], "connection refused"))
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopicError(unreachable(client_config["bootstrap.servers"], exc.args[0].str())) from exc


def all_refuse(bootstrap_servers: str, timeout: float = 1.0) -> bool:
    """Does every bootstrap server refuse a TCP connection (nothing listens: Kafka is not running)?

    Anything else (an address that does not resolve or answer, a malformed entry) is left to the
    admin client, which waits its timeout and names the error itself.
    """
    for entry in bootstrap_servers.split(","):
        host, _, port = entry.strip().rsplit("://", 1)[-1].rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except ConnectionRefusedError:
            continue
        except (OSError, ValueError):
            return False
        return False
    return True


def require_broker(client_config: dict, timeout: float = 10.0) -> None:
    """Raise :class:`TopicError` with one sentence when no broker answers at the bootstrap servers."""
    _metadata(_admin(client_config), client_config, timeout)


def answering(client_config: dict, timeout: float = 3.0) -> bool:
    """Does a broker answer metadata requests at ``client_config``'s bootstrap servers?"""
    try:
        AdminClient({**client_config, "logger": QUIET_LOG}).list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


def create_topic(
    client_config: dict,
    topic: str,
    partitions: int,
    replication_factor: int = 1,
    config: dict[str, str] | None = None,
) -> bool:
    """Create ``topic`` if it does not exist; returns True when it was created."""
    admin = _admin(client_config)
    if topic in _metadata(admin, client_config, 10).topics:
        return False
    futures = admin.create_topics(
        [
            NewTopic(
                topic, num_partitions=partitions, replication_factor=replication_factor, config=config or {}
            )
        ],
        operation_timeout=30,
    )
    try:
        futures[topic].result()
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" in str(exc):
            return False
        raise
    # Metadata propagates asynchronously; wait until every partition has a leader.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=5).topics.get(topic)
        if md and len(md.partitions) == partitions and all(p.leader >= 0 for p in md.partitions.values()):
            break
        time.sleep(0.2)
    return True

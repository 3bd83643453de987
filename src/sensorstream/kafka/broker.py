"""A local Apache Kafka broker in KRaft mode, run from the Maven jars (no Docker, no Zookeeper).

One node by default (broker and controller combined); ``brokers=3`` starts a 3-node quorum on
loopback for the fault and scale-out tests. Node ``i`` listens on ``port + 2*i`` (clients) and
``port + 2*i + 1`` (controller). Each node keeps its data, pid file and logs under
``<data_dir>/node-<i>``; ``stop`` sends SIGTERM, waits for a clean shutdown, and only then kills.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from sensorstream.jvm import cds
from sensorstream.jvm.classpath import ensure_jars, java_binary
from sensorstream.kafka.topics import QUIET_LOG
from sensorstream.procs import alive, port_in_use, read_pid, supervised

log = logging.getLogger(__name__)

LOG4J2 = """\
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = org.apache.kafka
logger.kafka.level = INFO
"""

JVM_OPTS = [
    "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
]  # fmt: skip


class BrokerError(RuntimeError):
    pass


@dataclass(frozen=True)
class Node:
    node_id: int
    port: int
    controller_port: int
    dir: Path

    @property
    def pid_file(self) -> Path:
        return self.dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / "server.log"

    def pid(self) -> int | None:
        return read_pid(self.pid_file)


def port_of(bootstrap_servers: str) -> int:
    first = bootstrap_servers.split(",")[0].strip()
    try:
        return int(first.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        raise BrokerError(f"SENSORSTREAM_BOOTSTRAP_SERVERS={bootstrap_servers!r} has no host:port") from None


class LocalKafka:
    """Start, stop and inspect the local broker(s)."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 9092,
        brokers: int = 1,
        cache_dir: Path = Path(".cache"),
        jvm_options: list[str] | None = None,
    ):
        """``jvm_options``: the nodes' own (default: map the broker's class archive, if trained)."""
        if brokers < 1:
            raise BrokerError("--brokers must be at least 1")
        self.data_dir = Path(data_dir)
        self.port = port
        self.cache_dir = Path(cache_dir)
        self.jvm_options = jvm_options
        self.nodes = [
            Node(i + 1, port + 2 * i, port + 2 * i + 1, self.data_dir / f"node-{i + 1}")
            for i in range(brokers)
        ]
        # A data dir formatted for another cluster size must not be reused silently.
        self._layout_file = self.data_dir / "layout"

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 90.0, tied: bool = False) -> str:
        """Start the nodes not running yet; return the bootstrap servers once all answer.

        ``tied``: the nodes stop (SIGTERM) when this process dies, for a foreground supervisor
        (``kafka start --foreground`` under systemd); otherwise they outlive the command.
        """
        running = [n for n in self.nodes if n.pid()]
        if running and len(running) == len(self.nodes):
            self.wait_ready(timeout)
            return self.bootstrap_servers
        java = java_binary()
        for node in self.nodes:
            if node.pid():
                continue
            for port in (node.port, node.controller_port):
                if port_in_use(port):
                    raise BrokerError(
                        f"port {port} on 127.0.0.1 is already in use, so Kafka cannot start there: "
                        "stop whatever holds it (`sensorstream kafka stop`, or find it with `ss -ltnp`) "
                        "or choose another port with --port / SENSORSTREAM_BOOTSTRAP_SERVERS"
                    )
        classpath = self._classpath()
        self._format(java, classpath)
        for node in self.nodes:
            if not node.pid():
                self._launch(java, classpath, node, tied)
        self.wait_ready(timeout)
        log.info(
            "kafka ready at %s (%d node(s), data in %s)",
            self.bootstrap_servers,
            len(self.nodes),
            self.data_dir,
        )
        return self.bootstrap_servers

    def _classpath(self) -> str:
        # Absolute: a class archive records the classpath it was trained on, and a node started
        # from another directory must still match it.
        return os.pathsep.join(str(p.resolve()) for p in ensure_jars(self.cache_dir, "kafka"))

    def class_archive(self, java: str) -> Path:
        """The nodes' class archive (see jvm/cds.py)."""
        return cds.archive_path(self.cache_dir, "kafka", java, ensure_jars(self.cache_dir, "kafka"))

    def _jvm_options(self, java: str) -> list[str]:
        own = cds.use_options(self.class_archive(java)) if self.jvm_options is None else self.jvm_options
        # KAFKA_OPTS, as Kafka's own start scripts read it: options for one environment (the tests').
        return [*JVM_OPTS, *own, *shlex.split(os.environ.get("KAFKA_OPTS", ""))]

    def _properties(self, node: Node) -> str:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        rf = min(3, len(self.nodes))
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={node.node_id}",
                f"controller.quorum.voters={voters}",
                f"listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{node.port}",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={(node.dir / 'data').resolve()}",
                "num.partitions=3",
                f"default.replication.factor={rf}",
                f"min.insync.replicas={2 if rf >= 3 else 1}",
                f"offsets.topic.replication.factor={rf}",
                f"transaction.state.log.replication.factor={rf}",
                f"transaction.state.log.min.isr={2 if rf >= 3 else 1}",
                f"share.coordinator.state.topic.replication.factor={rf}",
                f"share.coordinator.state.topic.min.isr={2 if rf >= 3 else 1}",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "log.retention.hours=168",
                "log.segment.bytes=134217728",
                "num.network.threads=2",
                "num.io.threads=4",
                "",
            ]
        )

    def _format(self, java: str, classpath: str) -> None:
        layout = f"{len(self.nodes)}@{self.port}"
        if self._layout_file.exists() and self._layout_file.read_text().strip() != layout:
            raise BrokerError(
                f"{self.data_dir} holds a Kafka cluster laid out as {self._layout_file.read_text().strip()} "
                f"(nodes@port), not {layout}. Use another data dir or delete it."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_file = self.data_dir / "cluster.id"
        if not cluster_file.exists():
            # Kafka wants a base64 UUID (22 chars); uuid4's urlsafe form is exactly that.
            import base64

            cluster_file.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
        cluster_id = cluster_file.read_text().strip()
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            props = node.dir / "server.properties"
            props.write_text(self._properties(node))
            (node.dir / "log4j2.properties").write_text(LOG4J2.format(log=node.log_file.resolve()))
            if (node.dir / "data" / "meta.properties").exists():
                continue
            result = subprocess.run(
                # `--cluster-id=<id>`, not `-t <id>`: a base64 id starting with "-" (1 in 64) would
                # otherwise be parsed as an option ("expected one argument").
                [java, *self._log_opts(node), "-cp", classpath, "kafka.tools.StorageTool", "format",
                 f"--cluster-id={cluster_id}", "-c", str(props), "--ignore-formatted"],
                capture_output=True, text=True,
            )  # fmt: skip
            if result.returncode != 0:
                raise BrokerError(
                    f"formatting Kafka storage in {node.dir} failed:\n{result.stdout}{result.stderr}"
                )
        self._layout_file.write_text(layout)

    def _log_opts(self, node: Node) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={(node.dir / 'log4j2.properties').resolve()}",
            f"-Dkafka.logs.dir={node.dir.resolve()}",
        ]

    def _launch(self, java: str, classpath: str, node: Node, tied: bool = False) -> None:
        out = open(node.dir / "stdout.log", "ab")  # noqa: SIM115 - handed to the child process
        # A new session: the broker outlives `sensorstream kafka start` and is not hit by its Ctrl-C
        # (or, tied, is stopped by its supervisor alone, which waits for its clean shutdown).
        session = supervised() if tied else {"start_new_session": True}
        proc = subprocess.Popen(
            [java, *self._jvm_options(java), *self._log_opts(node), "-cp", classpath, "kafka.Kafka", str(node.dir / "server.properties")],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **session,
        )  # fmt: skip
        out.close()
        node.pid_file.write_text(str(proc.pid))

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Block until every node answers metadata requests (or one of them dies)."""
        deadline = time.monotonic() + timeout
        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap_servers, "log_level": 0, "logger": QUIET_LOG}
        )
        while True:
            dead = [n for n in self.nodes if not n.pid()]
            if dead:
                tail = _tail(dead[0].log_file) or _tail(dead[0].dir / "stdout.log")
                raise BrokerError(
                    f"Kafka node {dead[0].node_id} exited during start-up; last log lines:\n{tail}"
                )
            try:
                md = admin.list_topics(timeout=2)
                if len(md.brokers) >= len(self.nodes) and md.controller_id != -1:
                    return
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"Kafka did not become ready within {timeout:.0f}s; see {self.nodes[0].log_file}"
                )
            time.sleep(0.3)

    def stop(self, timeout: float = 30.0, node_ids: list[int] | None = None) -> list[int]:
        """SIGTERM each node, wait for a clean exit, SIGKILL only as a last resort."""
        signalled: list[tuple[Node, int]] = []
        targets = [n for n in self.nodes if node_ids is None or n.node_id in node_ids]
        for node in targets:
            pid = node.pid()
            if pid:
                os.kill(pid, signal.SIGTERM)
                signalled.append((node, pid))
        deadline = time.monotonic() + timeout
        # Pair each pid with its own node: a node that exits at once must not shift the others.
        for node, pid in signalled:
            while alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.2)
            if alive(pid):
                log.warning("kafka node %d did not stop in %.0fs; killing it", node.node_id, timeout)
                os.kill(pid, signal.SIGKILL)
            _reap(pid)
        for node in targets:
            node.pid_file.unlink(missing_ok=True)
        return [pid for _, pid in signalled]

    def watch(self, stop: threading.Event, poll: float = 1.0) -> int:
        """Block until ``stop`` is set (0) or a node exits by itself (1, its log's tail logged)."""
        while not stop.wait(poll):
            dead = [n for n in self.nodes if not n.pid()]
            if dead:
                tail = _tail(dead[0].log_file) or _tail(dead[0].dir / "stdout.log")
                log.error("kafka node %d exited; last log lines:\n%s", dead[0].node_id, tail)
                return 1
        return 0

    def kill(self, node_id: int) -> None:
        """kill -9 one node (fault injection)."""
        node = self.nodes[node_id - 1]
        pid = node.pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)

    def start_node(self, node_id: int, timeout: float = 90.0) -> None:
        java = java_binary()
        classpath = self._classpath()
        node = self.nodes[node_id - 1]
        if not node.pid():
            self._launch(java, classpath, node)
        self.wait_ready(timeout)

    def status(self) -> dict:
        nodes = [{"node_id": n.node_id, "port": n.port, "pid": n.pid()} for n in self.nodes]
        answering = False
        topics: dict[str, int] = {}
        if any(n["pid"] for n in nodes):
            try:
                admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "logger": QUIET_LOG})
                md = admin.list_topics(timeout=3)
                answering = True
                topics = {t: len(m.partitions) for t, m in md.topics.items() if not t.startswith("__")}
            except KafkaException:
                pass
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "nodes": nodes,
            "answering": answering,
            "topics": topics,
        }


def train_class_archive(cache_dir: Path, data_dir: Path, port: int) -> Path | None:
    """Start a node that dumps its classes at exit, create a topic and write and read a few records
    through it, stop it cleanly; the archive, if dumped (see jvm/cds.py)."""
    from confluent_kafka import Consumer, Producer

    from sensorstream.kafka.topics import create_topic

    java = java_binary()
    archive = LocalKafka(data_dir, port=port, cache_dir=cache_dir).class_archive(java)
    if archive.is_file():
        return archive
    dump = cds.training_file(archive)
    broker = LocalKafka(data_dir, port=port, cache_dir=cache_dir, jvm_options=cds.dump_options(dump))
    broker.start()
    try:
        conf = {"bootstrap.servers": broker.bootstrap_servers, "logger": QUIET_LOG}
        create_topic(conf, "cds", 1)
        producer = Producer(conf)
        for i in range(100):
            producer.produce("cds", str(i).encode())
        producer.flush(30)
        consumer = Consumer({**conf, "group.id": "cds", "auto.offset.reset": "earliest"})
        consumer.subscribe(["cds"])
        consumer.consume(100, timeout=10)
        consumer.commit(asynchronous=False)
        consumer.close()
    finally:
        broker.stop(timeout=300)  # the dump is written as the JVM exits
    return archive if cds.finish_training(dump, archive) else None


def _reap(pid: int) -> None:
    # Our own children (started by this process) must be waited on, or they linger as zombies.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""

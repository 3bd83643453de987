"""One scenario's world: its temp dir, ports, brokers and processes, all torn down on exit.

Everything a scenario starts is registered here the moment it starts, so a failing assertion, a
timeout or Ctrl-C still stops brokers and kills the stream job (the Python driver and the Spark
JVM it launched).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition

from sensorstream.config import ENV_PREFIX, Settings, load_settings, settings_env
from sensorstream.kafka.broker import LocalKafka
from sensorstream.kafka.topics import create_topic
from sensorstream.monitor.lag import LAST_END_OFFSETS_SQL, TopicLag, end_offsets
from sensorstream.tools.ports import free_block, free_port

log = logging.getLogger(__name__)


@dataclass
class StreamProc:
    """A ``python -m sensorstream stream`` child in its own process group, with its log file."""

    proc: subprocess.Popen
    log_path: Path
    started: float = field(default_factory=time.time)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the driver and its JVM at once, as in a crash (the JVM has its own session, so
        it is not in the driver's group; left alone it would exit when its stdin closes)."""
        jvms = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        children = jvms.read_text().split() if jvms.exists() else []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        self.proc.wait()

    def terminate(self, grace: float = 90.0) -> int:
        """SIGTERM (the job finishes its batch and stops), then SIGKILL after ``grace``."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("stream %d did not stop in %.0fs; killing it", self.proc.pid, grace)
        self.kill9()  # also whatever is left of the group (a JVM that outlived its driver)
        return self.proc.returncode

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise TimeoutError(
                f"the stream job did not finish within {timeout:.0f}s; log: {self.log_path}"
            ) from None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class Workspace:
    """Temp dir, brokers, stream processes and the reader of one scenario (a context manager)."""

    def __init__(self, name: str, settings: Settings, base: Path | None = None, keep: bool = False) -> None:
        root = Path(base) if base else Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
        self.settings = settings
        self.keep = keep
        self.rng = random.Random()
        self._stack = ExitStack()
        self._procs: list[StreamProc] = []
        self.cache_dir = Path(settings.cache_dir).resolve()
        self.failed = False

    # --- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.failed = self.failed or exc_type is not None
        # Stream jobs first (they hold the store and read from the brokers), then the rest in reverse.
        self._kill_all()
        self._stack.close()
        if self.failed or self.keep:
            log.warning("kept %s for inspection", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def on_exit(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` at teardown (after the processes are killed, before the dir is removed)."""
        self._stack.callback(fn)

    def _kill_all(self) -> None:
        for sp in self._procs:
            sp.kill9()

    # --- Kafka -------------------------------------------------------------------------------------
    def kafka(self, brokers: int = 1) -> LocalKafka:
        """A broker (or a 3-node cluster) on free ports, stopped at teardown."""
        port = free_block(2 * brokers, rng=self.rng)
        kafka = LocalKafka(
            self.dir / f"kafka-{brokers}", port=port, brokers=brokers, cache_dir=self.cache_dir
        )
        self._stack.callback(kafka.stop)
        kafka.start()
        return kafka

    @staticmethod
    def topic(bootstrap: str, name: str, partitions: int = 3, replication: int = 1) -> str:
        create_topic({"bootstrap.servers": bootstrap}, name, partitions, replication)
        return name

    # --- the stream job ----------------------------------------------------------------------------
    def stream_env(self, bootstrap: str, topic: str, tag: str = "job", **settings: Any) -> dict[str, str]:
        """SENSORSTREAM_* for a stream job with its own DB, checkpoints, API port and data dir."""
        base = {
            "bootstrap_servers": bootstrap, "topic": topic, "data_dir": self.dir / tag,
            "db": self.dir / tag / "store.duckdb", "checkpoint_dir": self.dir / tag / "checkpoints",
            "cache_dir": self.cache_dir, "spark_master": "local[2]", "shuffle_partitions": 2,
            "trigger": "500 ms", "metrics_port": 0, "api_port": free_port(rng=self.rng),
            "pg_port": 0, "log_level": "INFO",
        }  # fmt: skip
        base.update(settings)
        return settings_env(load_settings(**base), base={})

    def start_stream(self, env: dict[str, str], *args: str) -> StreamProc:
        log_dir = Path(env[f"{ENV_PREFIX}DATA_DIR"])
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"stream-{len(self._procs)}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sensorstream", "stream", *args],
                env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # one group: kill9() takes the JVM with it
            )  # fmt: skip
        sp = StreamProc(proc, log_path)
        self._procs.append(sp)
        return sp


def api_url(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env[f'{ENV_PREFIX}API_PORT']}"


def commits(env: dict[str, str]) -> int:
    """Micro-batches Spark has marked done in the job's checkpoint."""
    path = Path(env[f"{ENV_PREFIX}CHECKPOINT_DIR"]) / "sensorstream" / "commits"
    return len(list(path.glob("[0-9]*")))


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: StreamProc | None = None) -> float:
    """Poll ``check`` every 50 ms; returns the time (epoch s) it became true. Fails if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.time()
        if proc is not None and not proc.alive:
            raise RuntimeError(
                f"the stream job exited ({proc.proc.returncode}) while waiting for {what}:\n{proc.log_tail()}"
            )
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def api_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def store_offsets(url: str) -> dict[str, int] | None:
    """The last committed batch's end offsets per partition, through the job's read API."""
    try:
        r = httpx.post(
            f"{url}/sql", json={"sql": LAST_END_OFFSETS_SQL},
            timeout=5.0, trust_env=False,
        )  # fmt: skip
        rows = r.json()["rows"] if r.status_code == 200 else None
    except httpx.HTTPError:
        return None
    return end_offsets(rows[0][0]) if rows else {}


def topic_ends(bootstrap: str, topic: str) -> dict[str, int]:
    """High watermark per partition (the next offset to be written)."""
    with TopicLag(client_config={"bootstrap.servers": bootstrap}, topic=topic) as probe:
        return {str(p): high for p, high in probe.high_watermarks(timeout=10).items()}


def caught_up(url: str, bootstrap: str, topic: str) -> bool:
    """The store has committed every message the topic holds."""
    done = store_offsets(url)
    if done is None:
        return False
    with TopicLag(client_config={"bootstrap.servers": bootstrap}, topic=topic) as probe:
        return sum(probe.lag(done, timeout=10).values()) == 0


def read_topic(bootstrap: str, topic: str, timeout: float = 120.0) -> Counter[bytes]:
    """Every message value in the topic, counted (read back with our own consumer, not Spark)."""
    ends = topic_ends(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"faults-read-{os.getpid()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.assign([TopicPartition(topic, int(p), 0) for p in ends])
    values: Counter[bytes] = Counter()
    pos = dict.fromkeys(ends, 0)
    deadline = time.monotonic() + timeout
    try:
        while any(pos[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=1.0):
                if msg.error():
                    continue
                values[msg.value()] += 1
                pos[str(msg.partition())] = msg.offset() + 1
    finally:
        consumer.close()
    return values

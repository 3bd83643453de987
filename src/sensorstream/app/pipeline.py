"""`sensorstream run`: broker, producer, stream job and dashboard together; Ctrl-C stops them all.

Each part runs as its own process (the same commands a user can run one by one), supervised
here: if one dies, the others are stopped and the exit code says so. The broker is stopped only
if this command started it.

The parts run in their own sessions (``procs.supervised``): Ctrl-C or a group SIGTERM reaches only
this supervisor, which then sends each part one SIGTERM - all at once, since each stops on its
own terms (the stream after its batch commits) - and stops the broker last. A second signal sends
a second SIGTERM: each part's fast stop. Exit 0 when stopped on request.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sensorstream.config import Settings, settings_env
from sensorstream.procs import exit_code, own_terminal_group, supervised
from sensorstream.stopping import StopSignals
from sensorstream.store.db import connect

log = logging.getLogger(__name__)


@dataclass
class Part:
    name: str
    proc: subprocess.Popen


@dataclass
class Pipeline:
    settings: Settings
    sensors: int = 20
    rate: float = 200.0
    late: float = 0.01
    duplicates: float = 0.01
    out_of_order: float = 0.05
    malformed: float = 0.005
    dashboard: bool = True
    parts: list[Part] = field(default_factory=list)
    _started_broker: object | None = None
    _fast: bool = False

    def __post_init__(self) -> None:
        self._signals = StopSignals("the pipeline", on_fast=self._fast_stop)

    def _spawn(self, name: str, *args: str) -> Part:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sensorstream", *args], env=settings_env(self.settings), **supervised()
        )
        part = Part(name, proc)
        self.parts.append(part)
        return part

    def start_broker(self) -> None:
        from sensorstream.kafka.broker import LocalKafka, port_of
        from sensorstream.kafka.topics import answering, create_topic

        local = {"localhost", "127.0.0.1", "::1"}
        host = self.settings.bootstrap_servers.split(",")[0].rsplit(":", 1)[0]
        # A broker already answering there is used as it is, whoever started it.
        if host in local and not answering(self.settings.kafka_client_config):
            broker = LocalKafka(
                self.settings.data_dir / "kafka", port=port_of(self.settings.bootstrap_servers),
                cache_dir=self.settings.cache_dir,
            )  # fmt: skip
            self._started_broker = broker  # before start(): a Ctrl-C during it still stops it
            broker.start()
            log.info("kafka started at %s", broker.bootstrap_servers)
        else:
            log.info("kafka at %s is up; using it (not stopped at the end)", self.settings.bootstrap_servers)
        create_topic(self.settings.kafka_client_config, self.settings.topic, self.settings.partitions,
                     self.settings.replication_factor)  # fmt: skip

    def start(self) -> None:
        # The store first, in a moment: locked by another pipeline or not a DuckDB file, that is one
        # sentence now instead of a broker started and a stream part failing seconds later.
        connect(self.settings.db).close()
        self.start_broker()
        if self._signals.requested.is_set():
            return  # Ctrl-C while the broker started (it takes seconds): start nothing more
        self._spawn("stream", "stream")
        self._spawn(
            "producer", "produce", "--quiet", "--sensors", str(self.sensors), "--rate", str(self.rate),
            "--late", str(self.late), "--duplicates", str(self.duplicates),
            "--out-of-order", str(self.out_of_order), "--malformed", str(self.malformed),
        )  # fmt: skip
        if self.dashboard:
            self._spawn("dashboard", "dashboard")

    def run(self, on_ready: Callable[[], None] = lambda: None) -> int:
        """Start everything, call ``on_ready``, run until Ctrl-C / SIGTERM or a part ends; the exit code.

        The signal handlers are in place before anything starts, so a Ctrl-C during start-up stops
        what has started instead of leaving it behind.
        """
        with own_terminal_group(), self._signals:
            try:
                self.start()
            except BaseException:
                self.stop()
                raise
            if not self._signals.requested.is_set():
                on_ready()
            return self.supervise()

    def supervise(self) -> int:
        """Wait for a stop request or for a part to end; then stop everything. Returns the exit code."""
        code = 0
        while not self._signals.requested.wait(0.5):
            ended = next((p for p in self.parts if p.proc.poll() is not None), None)
            if ended is not None:
                code = exit_code(ended.proc.returncode)
                # Exit 0 means someone stopped that part on purpose (a SIGTERM to it): no failure.
                log.log(
                    logging.ERROR if code else logging.INFO,
                    "%s exited with code %s; stopping the pipeline", ended.name, ended.proc.returncode,
                )  # fmt: skip
                break
        self.stop()
        return code

    def _fast_stop(self) -> None:
        self._fast = True
        for part in self.parts:
            if part.proc.poll() is None:
                part.proc.send_signal(signal.SIGTERM)  # the second one: each part's fast stop

    def stop(self, grace: float = 60.0) -> None:
        """SIGTERM to every running part at once, wait for all (SIGKILL after ``grace``), then the broker."""
        running = [p for p in self.parts if p.proc.poll() is None]
        for part in running:
            part.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for part in running:
            try:
                part.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", part.name, grace)
                part.proc.kill()
                part.proc.wait()
        if self._started_broker is not None:
            self._started_broker.stop(timeout=5.0 if self._fast else 30.0)
        if running or self._started_broker is not None:  # a start that failed at once has nothing to say
            log.info("pipeline stopped")

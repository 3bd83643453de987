"""`sensorstream run`: broker, producer, stream job and dashboard together; Ctrl-C stops them all.

Each part runs as its own process (the same commands a user can run one by one), supervised
here: if one dies, the others are stopped and the exit code says so. The broker is stopped only
if this command started it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from sensorstream.config import ENV_PREFIX, Settings

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
    _stopping: bool = False

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name, value in self.settings.model_dump().items():
            if value is None or isinstance(value, dict):
                continue
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env

    def _spawn(self, name: str, *args: str) -> Part:
        proc = subprocess.Popen([sys.executable, "-m", "sensorstream", *args], env=self._env())
        part = Part(name, proc)
        self.parts.append(part)
        return part

    def start_broker(self) -> None:
        from sensorstream.kafka.broker import LocalKafka, create_topic, port_of

        local = {"localhost", "127.0.0.1", "::1"}
        host = self.settings.bootstrap_servers.split(",")[0].rsplit(":", 1)[0]
        if host in local:
            broker = LocalKafka(
                self.settings.data_dir / "kafka", port=port_of(self.settings.bootstrap_servers),
                cache_dir=self.settings.cache_dir,
            )  # fmt: skip
            already = broker.status()["answering"]
            broker.start()
            if not already:
                self._started_broker = broker
            log.info("kafka %s at %s", "reused" if already else "started", broker.bootstrap_servers)
        create_topic(self.settings.kafka_client_config, self.settings.topic, self.settings.partitions,
                     self.settings.replication_factor)  # fmt: skip

    def start(self) -> None:
        self.start_broker()
        self._spawn("stream", "stream")
        self._spawn(
            "producer", "produce", "--quiet", "--sensors", str(self.sensors), "--rate", str(self.rate),
            "--late", str(self.late), "--duplicates", str(self.duplicates),
            "--out-of-order", str(self.out_of_order), "--malformed", str(self.malformed),
        )  # fmt: skip
        if self.dashboard:
            self._spawn("dashboard", "dashboard")

    def supervise(self) -> int:
        """Wait for Ctrl-C / SIGTERM or for a part to die; then stop everything. Returns the exit code."""
        signal.signal(signal.SIGTERM, lambda *_: self._request_stop())
        code = 0
        try:
            while not self._stopping:
                for part in self.parts:
                    if part.proc.poll() is not None:
                        log.error(
                            "%s exited with code %s; stopping the pipeline", part.name, part.proc.returncode
                        )
                        code = part.proc.returncode or 1
                        self._stopping = True
                        break
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        self.stop()
        return code

    def _request_stop(self) -> None:
        self._stopping = True

    def stop(self, grace: float = 60.0) -> None:
        # Producer first (no new data), then the stream (finishes its batch), then the dashboard.
        for part in sorted(self.parts, key=lambda p: ["producer", "stream", "dashboard"].index(p.name)):
            if part.proc.poll() is None:
                part.proc.send_signal(signal.SIGTERM)
                try:
                    part.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %.0fs; killing it", part.name, grace)
                    part.proc.kill()
                    part.proc.wait()
        if self._started_broker is not None:
            self._started_broker.stop()
        log.info("pipeline stopped")

"""A Spark standalone cluster on loopback, run from the pyspark install (no separate Spark download).

``sensorstream cluster start`` launches a master and N workers with pyspark's own ``spark-class``
(``SPARK_HOME`` = the pyspark package, which ships ``bin/`` and ``jars/``); each runs detached in
its own session with its pid file and log under ``data/spark-cluster``. Point the unchanged job at
it with ``SENSORSTREAM_SPARK_MASTER=spark://127.0.0.1:<port>``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sensorstream.jvm.classpath import java_binary
from sensorstream.procs import alive, port_in_use, read_pid

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    pass


def spark_home() -> Path:
    import pyspark

    home = Path(pyspark.__file__).resolve().parent
    if not (home / "bin" / "spark-class").exists():
        raise ClusterError(f"{home} has no bin/spark-class; is pyspark installed from a full wheel?")
    return home


@dataclass(frozen=True)
class Daemon:
    name: str  # master, worker-1, ...
    dir: Path

    @property
    def pid_file(self) -> Path:
        return self.dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / f"{self.name}.log"

    def pid(self) -> int | None:
        return read_pid(self.pid_file)


class SparkCluster:
    """Start, stop and inspect a master and ``workers`` workers on 127.0.0.1."""

    def __init__(
        self, data_dir: Path, port: int = 7077, webui_port: int = 8080, workers: int = 2, cores: int = 1,
        memory: str = "1g",
    ) -> None:  # fmt: skip
        self.dir = Path(data_dir)
        self.port, self.webui_port = port, webui_port
        self.workers, self.cores, self.memory = workers, cores, memory
        self.master = Daemon("master", self.dir)
        self.worker_daemons = [Daemon(f"worker-{i + 1}", self.dir) for i in range(workers)]

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def webui(self) -> str:
        return f"http://127.0.0.1:{self.webui_port}"

    def _env(self) -> dict[str, str]:
        java = Path(java_binary()).resolve()
        return {
            **os.environ,
            "SPARK_HOME": str(spark_home()),
            "JAVA_HOME": os.environ.get("JAVA_HOME") or str(java.parent.parent),
            "SPARK_LOCAL_IP": "127.0.0.1",
            # Executors run Python only for UDFs (the job has none), but if one is added it must be
            # this venv's interpreter (pyarrow), not the system one.
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_DAEMON_MEMORY": "512m",  # master and worker daemons; executors get --memory
            "SPARK_NO_DAEMONIZE": "1",
        }

    def _launch(self, daemon: Daemon, args: list[str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(daemon.log_file, "ab") as out:
            # spark-class execs java, so the pid is the JVM's; a new session keeps it out of our Ctrl-C.
            proc = subprocess.Popen(
                [str(spark_home() / "bin" / "spark-class"), *args], env=self._env(), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        daemon.pid_file.write_text(str(proc.pid))

    def start(self, timeout: float = 90.0) -> str:
        """Start what is not running; return the master URL once every worker has registered."""
        if not self.master.pid():
            for port in (self.port, self.webui_port):
                if port_in_use(port):
                    raise ClusterError(
                        f"port {port} on 127.0.0.1 is in use; choose another with --port / --webui-port"
                    )
            self._launch(self.master, ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                       "--port", str(self.port), "--webui-port", str(self.webui_port)])  # fmt: skip
        self._wait(lambda s: s is not None, timeout, "the master")
        for i, daemon in enumerate(self.worker_daemons):
            if daemon.pid():
                continue
            work = self.dir / f"work-{i + 1}"
            work.mkdir(parents=True, exist_ok=True)
            self._launch(daemon, [
                "org.apache.spark.deploy.worker.Worker", self.url, "--cores", str(self.cores),
                "--memory", self.memory, "--host", "127.0.0.1", "--webui-port", "0", "--work-dir", str(work),
            ])  # fmt: skip
        self._wait(
            lambda s: s is not None and s.get("aliveworkers", 0) >= self.workers, timeout, "the workers"
        )
        log.info(
            "spark cluster up at %s (%d workers; UI %s; logs in %s)",
            self.url,
            self.workers,
            self.webui,
            self.dir,
        )
        return self.url

    def _wait(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready(self.state()):
            dead = [d for d in [self.master, *self.worker_daemons] if d.pid_file.exists() and not d.pid()]
            if dead:
                raise ClusterError(f"{dead[0].name} exited; see {dead[0].log_file}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{what} did not come up within {timeout:.0f}s; see {self.dir}")
            time.sleep(0.5)

    def state(self) -> dict[str, Any] | None:
        """The master's JSON status (workers, cores, running and finished apps), or None."""
        try:
            r = httpx.get(f"{self.webui}/json/", timeout=2.0, trust_env=False)
            return r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def stop(self, timeout: float = 30.0) -> list[str]:
        """SIGTERM workers, then the master; SIGKILL what is still up after ``timeout``."""
        stopped = []
        for daemon in [*self.worker_daemons, self.master]:
            pid = daemon.pid()
            if pid:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while alive(pid) and time.monotonic() < deadline:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
                    time.sleep(0.2)
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
                stopped.append(daemon.name)
            daemon.pid_file.unlink(missing_ok=True)
        return stopped

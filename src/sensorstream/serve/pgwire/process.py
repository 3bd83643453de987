"""The PostgreSQL endpoint's own process: protocol, authentication, parsing and translation.

Everything a PostgreSQL client can make the endpoint do before a query reaches DuckDB (hold a
socket, send start-up and SCRAM messages, have a statement parsed and translated, fill the
translation cache) costs this process, not the writer's: its memory, on CPU time the writer does
not want (``serve.child.start_up``), under a bound of its own (``SENSORSTREAM_PG_MEMORY_LIMIT``).
The queries themselves reach the writer's process over the read API's private socket
(``serve.backend``, through :class:`~sensorstream.serve.front.RemoteGate`), so both endpoints
share one guard, one set of limits and the writer's read slots.

Writer's side: :class:`PgProcess` (``StoreService`` starts it). It binds the port itself, so a
busy port is the writer's start-up error, and keeps its copy of the listening socket: when the
process exits on its own (its memory bound), the writer starts it again on the same socket and a
client's connection waits in the backlog instead of being refused.

Child's side: ``python -m sensorstream.serve.pgwire.process`` (see ``serve.child`` for the pipe).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
import time

from sensorstream.config import Settings, load_settings
from sensorstream.procs import host_port
from sensorstream.reads.gate import ReadGate
from sensorstream.reads.limits import ReadLimits
from sensorstream.reads.watchdog import rss as _rss
from sensorstream.serve import child
from sensorstream.serve.backend import ReadBackend
from sensorstream.serve.pgwire.server import PgServer, PgStartError, bind_socket

log = logging.getLogger(__name__)

MODULE = "sensorstream.serve.pgwire.process"
WHAT = "store's PostgreSQL endpoint"
OVER_MEMORY = 3  # the exit code for "over its memory bound": the writer starts it again
RESTART_PAUSE_S = 1.0
MEMORY_CHECK_S = 0.25


class PgProcess:
    """The endpoint in a process of its own: ``start()`` / ``stop()``, ``.address``, ``.pid``."""

    def __init__(self, gate: ReadGate, settings: Settings, *, port: int | None = None) -> None:
        self.gate, self.settings = gate, settings
        self.host = settings.pg_host
        self.port = settings.pg_port if port is None else port
        self.restarts = 0
        self._sock: socket.socket | None = None
        self._backend: ReadBackend | None = None
        self._child = child.ChildServer(MODULE, WHAT, settings, PgStartError)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)

    @property
    def pid(self) -> int | None:
        return self._child.pid

    def start(self, timeout: float = 30.0) -> PgProcess:
        if self._sock is not None:
            return self
        self._sock = bind_socket(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        try:
            self._backend = ReadBackend(self.gate).start()
            self._config = {"backend": self._backend.path, "limits": dataclasses.asdict(self.gate.limits)}
            self._child.start(self._config, self._sock.fileno(), timeout)
        except BaseException:
            self.stop()
            raise
        self._watch = threading.Thread(target=self._restart_on_exit, name="store-pg-watch", daemon=True)
        self._watch.start()
        log.info("store PostgreSQL endpoint on %s (process %s)", self.address, self.pid)
        return self

    def _restart_on_exit(self) -> None:
        """Start the process again whenever it leaves on its own (its memory bound, a crash)."""
        while not self._stopping.is_set():
            process = self._child.process
            if process is None:
                return
            code = process.wait()
            if self._stopping.wait(RESTART_PAUSE_S):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                log.warning("the %s process exited (code %s); starting it again", WHAT, code)
                self._child.stop(1.0)  # its pipes
                try:
                    assert self._sock is not None
                    self._child.start(self._config, self._sock.fileno(), 30.0)
                    self.restarts += 1
                except Exception as exc:
                    log.error("the %s could not be started again: %s", WHAT, exc)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the process (sessions in flight get their answers), then the backend."""
        self._stopping.set()
        with self._lock:
            self._child.stop(timeout)
        if self._watch is not None:
            self._watch.join(timeout)
        if self._backend is not None:
            self._backend.stop()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._backend = self._watch = None

    def __enter__(self) -> PgProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the endpoint's process ------------------------------------------------------------------------
def _bound_memory(limit: int) -> None:
    """On a daemon thread: leave with a sentence once resident memory passes ``limit``.

    A watchdog rather than RLIMIT_AS: the address space of a process with DuckDB, Arrow and a
    thread pool is several times its resident memory, and an allocation refused anywhere would be
    a traceback in whichever thread made it, not a sentence. Leaving returns every byte to the
    system at once; the writer starts the process again (sessions open now are dropped)."""

    def watch() -> None:
        while True:
            rss = _rss()
            if rss is not None and rss > limit:
                log.error(
                    "the %s's process holds %d MB, over its bound of %d MB (SENSORSTREAM_PG_MEMORY_LIMIT); "
                    "it exits, dropping its sessions, and the writer starts it again",
                    WHAT,
                    rss // 2**20,
                    limit // 2**20,
                )
                logging.shutdown()
                os._exit(OVER_MEMORY)
            time.sleep(MEMORY_CHECK_S)

    threading.Thread(target=watch, name="pg-memory", daemon=True).start()


def main() -> None:
    from sensorstream.serve.front import RemoteGate

    config = child.start_up(WHAT)  # from here on, on CPU time the writer does not want
    settings = load_settings()  # the writer passes its own through the environment
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _bound_memory(int(settings.pg_memory_limit))
    gate = RemoteGate(config["backend"], ReadLimits(**config["limits"]), what=WHAT)
    sock = socket.socket(fileno=int(config["fd"]))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the writer's Ctrl-C is the writer's to handle
    server = PgServer(None, settings, gate=gate, sock=sock).start()
    print(child.READY, flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    # Served and closed: tearing down DuckDB and Arrow at exit only delays the writer's own stop.
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()

"""A reader-facing server of the writer's, run in a process of its own (both sides of the pipe).

The read API (``serve.front``) and the PostgreSQL endpoint (``serve.pgwire.process``) each serve
outside clients from such a process, so what their clients cost (GIL time, memory, parsing) is
not the writer's. The writer binds the listening socket (a busy port is its start-up error),
starts the process with its settings in the environment (``settings_env``) and the socket's fd,
and writes one line of JSON on its stdin (the backend's socket, the limits). The process
(:func:`start_up`) serves on CPU time the writer does not want and prints :data:`READY` once it
serves. SIGTERM is the writer's stop (graceful); EOF on stdin means the
writer is gone, however it ended, and the process leaves at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from sensorstream.config import Settings, settings_env
from sensorstream.reads.priority import idle_process

log = logging.getLogger(__name__)

READY = "ready"


class ChildServer:
    """The writer's side: ``start(config, fd)`` waits for :data:`READY`; ``stop()`` is SIGTERM."""

    def __init__(self, module: str, what: str, settings: Settings, error: Callable[[str], Exception]) -> None:
        self.module, self.what, self.settings, self._error = module, what, settings, error
        self.process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, config: dict[str, Any], fd: int, timeout: float) -> None:
        # Its own session: a Ctrl-C to the writer's group reaches the writer, which stops this
        # process in its order. stdin stays open for its life: EOF tells it the writer is gone.
        self.process = child = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=settings_env(self.settings),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=(fd,),
            start_new_session=True,
        )
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(json.dumps({**config, "fd": fd}) + "\n")
        child.stdin.flush()
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(child.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not ready or ready[0].strip() != READY:
            raise self._error(
                f"the {self.what} process did not start within {timeout:g} s (its errors are above)"
            )

    def stop(self, timeout: float) -> None:
        child = self.process
        if child is None:
            return
        # SIGTERM: the process answers what is in flight (its reads still run in the writer's
        # process, whose backend stops after it), then exits. Its stdin closes only after that:
        # EOF means "the writer is gone" and makes it leave at once.
        with contextlib.suppress(OSError):
            child.terminate()
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the %s process did not stop within %.1f s; killing it", self.what, timeout)
            child.kill()
            child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self.process = None


# --- the child's side ------------------------------------------------------------------------------
def start_up(what: str) -> dict[str, Any]:
    """The child's first steps: the writer's one line of JSON (returned), the CPU given up to the
    writer, and the watch on the writer's pipe.

    Every thread of the process, and every thread it starts later, runs ``SCHED_IDLE``
    (``reads.priority.idle_process``): what outside clients make it do (protocol, authentication,
    parsing, HTTP, JSON) gets a core only when the writer's process and its JVM do not want it,
    and their wake-ups take the core from it at once. At nice 10, a hostile PostgreSQL client's
    work here took a quarter of a core or more, all of it from the two cores the stream's batches
    need. Its imports ran before this, at the writer's priority, so start-up stays quick.
    """
    config = json.loads(sys.stdin.readline())
    idle_process()
    exit_when_stdin_closes(what)
    return config


def leave(what: str, why: str, code: int = 0) -> NoReturn:
    """Leave at once: without the writer's process nothing here can be answered, and a client
    should find the server gone (connection refused), as it would had it run in that process,
    rather than get errors from a half of it. The writer's own stop is SIGTERM, never this."""
    log.info("the writer's process is gone (%s); the %s goes with it", why, what)
    logging.shutdown()
    os._exit(code)


def exit_when_stdin_closes(what: str) -> None:
    """On a daemon thread: the writer holds the pipe's other end, so EOF means it exited or died."""

    def wait() -> None:
        sys.stdin.read()
        leave(what, "its pipe closed")

    threading.Thread(target=wait, name="writer-watch", daemon=True).start()

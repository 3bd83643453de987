"""Test helpers for stopping real commands the ways supervisors do: a signal to the process or to
its group, Ctrl-C in a (pseudo-)terminal, ``timeout -s TERM``, SIGTERM to a container's PID 1.

Each command runs in its own session, so a signal to "its group" reaches exactly what a service
manager's would: the command and whatever it started in that group.
"""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import subprocess
import sys
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

STOP_WITHIN = 5.0  # seconds from the signal to the exit: the README's bound for every command


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sensorstream", *args]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    found, todo = [], children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children(child)
    return found


def java_descendants(pid: int) -> list[int]:
    """The Java processes under ``pid`` (the Spark JVM of a stream run through timeout or unshare)."""
    found = []
    for child in descendants(pid):
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == "java":
                found.append(child)
        except OSError:
            pass  # exited meanwhile
    return found


def gone(pids: list[int], timeout: float) -> bool:
    """Have all ``pids`` exited (zombies count as exited) within ``timeout`` seconds?"""
    from sensorstream.procs import alive

    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@dataclass
class Running:
    """A started command, its combined output (collected on a thread) and how it was launched."""

    proc: subprocess.Popen
    how: str
    master: int | None = None  # the pty's master side (how == "terminal")
    chunks: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        while True:
            try:
                data = (
                    os.read(self.master, 65536) if self.master is not None else self.proc.stdout.read1(65536)
                )
            except OSError:  # the pty's slave side closed: the command has exited
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def output(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    @property
    def target(self) -> int:
        """The pid a signal "to the process" goes to: the command itself (PID 1 inside unshare)."""
        if self.how == "pid1":
            deadline = time.monotonic() + 10
            while not children(self.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            return children(self.proc.pid)[0]
        return self.proc.pid

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        if self.master is not None:
            os.close(self.master)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def launch(cmd: list[str], env: dict[str, str], how: str = "plain", timeout_s: float = 0) -> Running:
    """Start ``cmd`` in a new session: ``plain``, on a ``terminal`` (a pty, so Ctrl-C is the tty's
    SIGINT to the foreground group), under ``timeout -s TERM timeout_s``, or as ``pid1`` of a new
    PID namespace (what a container's entrypoint is)."""
    full_env = {**os.environ, **env}
    if how == "terminal":
        master, slave = pty.openpty()

        def controlling_tty() -> None:  # runs after setsid: the pty becomes our terminal
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        proc = subprocess.Popen(
            cmd, env=full_env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            preexec_fn=controlling_tty,
        )  # fmt: skip
        os.close(slave)
        return Running(proc, how, master=master)
    if how == "timeout":
        # --preserve-status: timeout's own code is then the command's (not 124), which is what we test.
        cmd = ["timeout", "--preserve-status", "-s", "TERM", f"{timeout_s:g}", *cmd]
    elif how == "pid1":
        cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *cmd]
    proc = subprocess.Popen(
        cmd, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    return Running(proc, how)


def can_unshare_pid() -> bool:
    try:
        return (
            subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], timeout=20).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def ctrl_c(run: Running) -> None:
    """Type Ctrl-C on the command's terminal: the line discipline signals its foreground group."""
    assert run.master is not None
    os.write(run.master, b"\x03")


@dataclass
class Reader:
    """Hammers the read API from a thread; counts answers by status (connection errors apart)."""

    url: str
    ok: int = 0
    server_errors: list[int] = field(default_factory=list)
    unreachable: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        with httpx.Client(timeout=5, trust_env=False) as http:
            while not self._stop.is_set():
                try:
                    response = http.get(f"{self.url}/query/latest_windows", params={"limit": 50})
                except httpx.HTTPError:
                    self.unreachable += 1  # not started yet, or stopped: not an answer
                    self._stop.wait(0.05)
                    continue
                if response.status_code >= 500:
                    self.server_errors.append(response.status_code)
                else:
                    self.ok += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

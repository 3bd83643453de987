"""Local processes and ports: what the broker, the Spark cluster and the dashboard all need."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def alive(pid: int) -> bool:
    """Is ``pid`` a running process? A zombie (exited, not yet reaped) is not.

    A process whose main thread shows "Z" while its other threads still exit is alive: those
    threads still hold its files (a listening port, the store's lock) until the last one is gone.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().split(")")[-1].split()[0] != "Z":
                return True
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return os.path.exists(f"/proc/{pid}")  # gone in between: reaped


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process still runs, else ``None``."""
    try:
        pid = int(Path(pid_file).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Would a server fail to bind ``host:port`` now? (IPv6 too: SENSORSTREAM_HOST may be ``::1``.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Servers set it too, so a port in TIME_WAIT after a restart does not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def listening_socket(host: str, port: int, *, busy: Callable[[OSError], Exception]) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv4 or IPv6), not inherited by children.

    ``busy`` turns the bind error into the caller's one-sentence error (which setting to change).
    The caller calls ``listen`` itself (uvicorn and asyncio each want their own backlog/blocking).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # Lets a restarted writer reuse the port at once (TIME_WAIT), never two live listeners.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise busy(exc) from exc
    sock.set_inheritable(False)
    return sock


def host_port(host: str, port: int) -> str:
    """``host:port`` as a URL or client writes it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def supervised() -> dict[str, Any]:
    """``Popen`` arguments for a child that only its supervisor stops, and that never outlives it.

    Its own session keeps a signal to the supervisor's process group (Ctrl-C in a terminal,
    systemd's ``KillMode=control-group``) away from it, so the supervisor decides the order and
    sends each child exactly one SIGTERM (a second one means "fast stop" to our commands). If the
    supervisor itself is killed, Linux sends the child SIGTERM (``PR_SET_PDEATHSIG``). Linux ties
    that to the spawning *thread*: spawn from one that lives as long as the child (the main thread).
    """
    supervisor = os.getpid()
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child must not load libraries
    except (OSError, AttributeError):  # not Linux: the child still gets its own session
        prctl = None

    def terminate_with_supervisor() -> None:  # runs in the child between fork and exec
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor:  # the supervisor died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return {"start_new_session": True, "preexec_fn": terminate_with_supervisor}


def exit_code(returncode: int) -> int:
    """A child's exit status as ours: its own code, or 128 + N when signal N killed it (as shells say)."""
    return 128 - returncode if returncode < 0 else returncode


@contextlib.contextmanager
def own_terminal_group() -> Iterator[None]:
    """While inside, this process's group is its terminal's foreground group (when it has one).

    Ctrl-C signals the terminal's foreground group. Under `make run` that group holds make as
    well, and GNU make that sees SIGINT kills itself with it once its recipe ends, so `make run`
    failed however cleanly `run` stopped. With its own foreground group only `run` hears Ctrl-C and
    make sees the exit code. The terminal goes back to the previous group on the way out. A no-op
    without a terminal (systemd, a container) or in the background.
    """
    try:
        tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        yield
        return
    previous = os.getpgrp()
    try:
        if os.tcgetpgrp(tty) != previous:
            yield  # a background job: the terminal is someone else's
            return
        if previous != os.getpid():
            os.setpgid(0, 0)
        _set_foreground(tty, os.getpgrp())
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                _set_foreground(tty, previous)
    finally:
        os.close(tty)


def _set_foreground(tty: int, group: int) -> None:
    # A process not in the foreground gets SIGTTOU (stop) for tcsetpgrp unless it ignores it.
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(tty, group)
    finally:
        signal.signal(signal.SIGTTOU, old)

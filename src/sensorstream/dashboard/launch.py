"""Start and stop the Streamlit server for the dashboard.

``start_dashboard(settings)`` is what ``sensorstream run`` calls: it returns once the page answers
(``/_stcore/health`` = 200), so "running" printed after it is true. ``serve_dashboard`` is the
``sensorstream dashboard`` command: start, wait, stop Streamlit on SIGTERM/SIGINT, exit 0.

Streamlit runs in its own session (``procs.supervised``): a signal to our process group (Ctrl-C,
systemd) reaches only us, and we stop Streamlit with exactly one SIGTERM, which it handles cleanly.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx

from sensorstream.config import Settings, settings_env
from sensorstream.procs import exit_code, port_in_use, supervised
from sensorstream.stopping import StopSignals

APP = Path(__file__).with_name("page.py")


class DashboardStartError(RuntimeError):
    """The dashboard could not start: its port is taken, or Streamlit exited or did not answer."""


def dashboard_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.dashboard_port}"


def dashboard_command(settings: Settings) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", settings.host,
        "--server.port", str(settings.dashboard_port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        # A viewer's toolbar: no "Deploy" button, no developer menu, on a page for operators.
        "--client.toolbarMode", "viewer",
        # Watching files serves development only; in a pipeline it just costs inotify handles.
        "--server.fileWatcherType", "none",
    ]  # fmt: skip


def _busy(settings: Settings) -> DashboardStartError:
    return DashboardStartError(
        f"the dashboard cannot listen on {settings.host}:{settings.dashboard_port}: another process holds "
        "that port (a dashboard already running?): set SENSORSTREAM_DASHBOARD_PORT to a free port "
        "or stop that process"
    )


def start_dashboard(
    settings: Settings,
    *,
    timeout: float = 60.0,
    log: IO[Any] | int | None = None,
    stop: threading.Event | None = None,
) -> subprocess.Popen:
    """Start Streamlit on 127.0.0.1:DASHBOARD_PORT; return once ``/_stcore/health`` answers 200.

    ``log``: where Streamlit's output goes (a file, ``subprocess.DEVNULL``; default: inherited).
    ``stop``: stop waiting once it is set (a signal during start-up); the process is returned.
    Raises :class:`DashboardStartError` naming SENSORSTREAM_DASHBOARD_PORT when the port is taken.
    """
    if port_in_use(settings.dashboard_port, settings.host):
        raise _busy(settings)
    proc = subprocess.Popen(
        dashboard_command(settings),
        env=settings_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        stdin=subprocess.DEVNULL,
        **supervised(),
    )
    try:
        _wait_until_answering(proc, settings, timeout, stop or threading.Event())
    except BaseException:
        # Never leave a Streamlit behind: not on a timeout, not on Ctrl-C during the wait.
        stop_dashboard(proc)
        raise
    return proc


def _wait_until_answering(
    proc: subprocess.Popen, settings: Settings, timeout: float, stop: threading.Event
) -> None:
    health = f"{dashboard_url(settings)}/_stcore/health"
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=httpx.Timeout(2.0, connect=0.5), trust_env=False) as http:
        while True:
            code = proc.poll()
            if code is not None:
                # Lost a race for the port, or Streamlit failed to import the app.
                if port_in_use(settings.dashboard_port, settings.host):
                    raise _busy(settings)
                raise DashboardStartError(f"streamlit exited with code {code} before the dashboard answered")
            try:
                if http.get(health).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise DashboardStartError(f"the dashboard did not answer at {health} within {timeout:g} s")
            if stop.wait(0.2):
                return


def stop_dashboard(proc: subprocess.Popen, grace: float = 10.0) -> int:
    """SIGTERM (Streamlit shuts down cleanly on it), then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def serve_dashboard(settings: Settings, on_ready: Callable[[str], None] = print) -> int:
    """``sensorstream dashboard``: run until Ctrl-C / SIGTERM, which go on to Streamlit; exit code."""
    # Handlers go in before Streamlit starts: a SIGTERM during start-up must not kill us and
    # leave an orphaned Streamlit holding the port.
    signals = StopSignals("the dashboard", on_fast=lambda: proc is not None and proc.kill())
    proc: subprocess.Popen | None = None
    with signals:
        try:
            proc = start_dashboard(settings, stop=signals.requested)
            if not signals.requested.is_set():
                on_ready(dashboard_url(settings))
            while proc.poll() is None and not signals.requested.wait(0.2):
                pass
            return 0 if signals.requested.is_set() else exit_code(proc.returncode)
        finally:
            if proc is not None:
                stop_dashboard(proc)

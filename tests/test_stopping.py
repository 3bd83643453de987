"""The stop machinery's pure parts: StopSignals, supervised children, exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from sensorstream.procs import alive, exit_code
from sensorstream.stopping import StopSignals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_requests_a_stop_the_second_asks_for_a_fast_one(sig):
    fast = []
    before = signal.getsignal(sig)
    with StopSignals("the test", on_fast=lambda: fast.append(True)) as stop:
        assert signal.getsignal(sig) != before
        os.kill(os.getpid(), sig)
        assert stop.requested.wait(5) and stop.received == sig.name and not fast
        assert stop.elapsed() >= 0
        os.kill(os.getpid(), sig)
        deadline = time.monotonic() + 5
        while not fast and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fast == [True]
    assert signal.getsignal(sig) == before  # restored on exit


def test_a_stop_requested_from_code_looks_like_a_signal_and_happens_once():
    stop = StopSignals("the test")
    assert stop.elapsed() == 0.0
    stop.request("timeout")
    stop.request("later")
    assert stop.requested.is_set() and stop.received == "timeout"


def test_install_again_keeps_the_handler_to_restore():
    before = signal.getsignal(signal.SIGTERM)
    stop = StopSignals("the test").install()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a library replaced it (PySpark does for SIGINT)
    stop.install()
    assert signal.getsignal(signal.SIGTERM) == stop._handle
    stop.restore()
    assert signal.getsignal(signal.SIGTERM) == before


def test_exit_code_maps_a_killing_signal_like_a_shell():
    assert exit_code(0) == 0 and exit_code(3) == 3
    assert exit_code(-signal.SIGTERM) == 143 and exit_code(-signal.SIGKILL) == 137


def _sleeper_under(parent_code: str) -> subprocess.Popen:
    """A parent Python that starts a supervised `sleep` child, prints its pid, then runs ``parent_code``."""
    script = (
        "import subprocess, sys, time\n"
        "from sensorstream.procs import supervised\n"
        "child = subprocess.Popen(['sleep', '60'], **supervised())\n"
        "print(child.pid, flush=True)\n" + parent_code
    )
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )


@pytest.mark.process
def test_a_supervised_child_is_out_of_the_group_signal_but_dies_with_its_supervisor():
    parent = _sleeper_under("time.sleep(60)\n")
    try:
        child = int(parent.stdout.readline())
        assert os.getpgid(child) != os.getpgid(parent.pid)  # its own session: not in the group
        os.killpg(parent.pid, signal.SIGKILL)  # the supervisor's whole group dies at once
        parent.wait()
        deadline = time.monotonic() + 5
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child)  # PR_SET_PDEATHSIG: SIGTERM when the supervisor died
    finally:
        if parent.poll() is None:
            parent.kill()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0]


@pytest.mark.process
def test_a_process_whose_main_thread_is_gone_is_alive_while_another_thread_runs():
    """Its main thread shows "Z" but the other thread still holds the process's files (a port,
    the store's lock): only once every thread is gone is the process gone."""
    code = (
        "import ctypes, threading, time\n"
        "threading.Thread(target=time.sleep, args=(1.5,)).start()\n"
        "print('ready', flush=True)\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"  # the main thread alone ends
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        assert _state(proc.pid) == "Z" and alive(proc.pid)
        deadline = time.monotonic() + 5
        while alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(proc.pid) and _state(proc.pid) == "Z"  # every thread gone, not yet reaped
    finally:
        proc.wait(5)

"""`sensorstream run`, `dashboard` and the Kafka commands stop cleanly however they are stopped.

Exit 0 on request, within the bound, no traceback or ERROR line, and nothing left running: the
children each command started (Streamlit, the stream's JVM, the broker's JVM) are gone too.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
from pathlib import Path

import httpx
import pytest

from kit.stop import STOP_WITHIN, command, ctrl_c, descendants, gone, java_descendants, launch
from sensorstream.kafka.broker import LocalKafka
from sensorstream.procs import port_in_use, read_pid
from sensorstream.tools.ports import free_block, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def _wait_for(condition, timeout: float, what: str, run) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert run.proc.poll() is None, f"exited before {what}:\n{run.output}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s:\n{run.output}"
        time.sleep(0.1)


def _stop_and_check(run, send, bound: float = STOP_WITHIN) -> float:
    """Send the stop, wait, assert exit 0 within ``bound`` and a clean output; the seconds it took."""
    left_behind = descendants(run.proc.pid)
    signalled = time.monotonic()
    send(run)
    try:
        code = run.wait(120)
    finally:
        run.kill()
    took = time.monotonic() - signalled
    assert code == 0, f"exit code {code}:\n{run.output}"
    assert "Traceback" not in run.output and " ERROR " not in run.output, run.output
    assert took <= bound, f"exited {took:.1f} s after the signal:\n{run.output}"
    assert gone(left_behind, 10), f"left running: {left_behind}"
    return took


def _two_free_ports() -> int:
    return free_block(2)  # a broker's client and controller listeners


@pytest.mark.parametrize("how", ["SIGTERM to the group", "Ctrl-C in a terminal"])
def test_dashboard_stops_with_streamlit(how, tmp_path):
    port = free_port()
    env = {"SENSORSTREAM_DASHBOARD_PORT": str(port), "SENSORSTREAM_DATA_DIR": str(tmp_path / "data"),
           "SENSORSTREAM_API_PORT": str(free_port())}  # fmt: skip
    terminal = how.startswith("Ctrl-C")
    run = launch(command("dashboard"), env, "terminal" if terminal else "plain")
    health = f"http://127.0.0.1:{port}/_stcore/health"

    def answers() -> bool:
        try:
            return httpx.get(health, timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    _wait_for(answers, 90, "dashboard", run)
    _stop_and_check(run, ctrl_c if terminal else lambda r: os.killpg(r.proc.pid, signal.SIGTERM))
    assert not port_in_use(port)


@pytest.mark.broker
def test_kafka_foreground_stops_the_broker_on_a_group_sigterm(tmp_path):
    port = _two_free_ports()
    data = tmp_path / "data"
    env = {"SENSORSTREAM_DATA_DIR": str(data), "SENSORSTREAM_CACHE_DIR": str(ROOT / ".cache"),
           "SENSORSTREAM_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}  # fmt: skip
    run = launch(command("kafka", "start", "--foreground"), env)
    broker = LocalKafka(data / "kafka", port=port)
    _wait_for(lambda: "kafka up at" in run.output, 180, "broker", run)
    pid = read_pid(broker.nodes[0].pid_file)
    assert pid and pid in descendants(run.proc.pid)
    # Kafka's own clean shutdown (log flush, controller hand-off) takes seconds of its own.
    _stop_and_check(run, lambda r: os.killpg(r.proc.pid, signal.SIGTERM), bound=30)
    assert not broker.nodes[0].pid_file.exists() and not port_in_use(port)


@pytest.mark.broker
def test_kafka_stop_leaves_nothing_running(tmp_path):
    from typer.testing import CliRunner

    from sensorstream.cli import app

    port = _two_free_ports()
    data = tmp_path / "data"
    env = {"SENSORSTREAM_DATA_DIR": str(data), "SENSORSTREAM_CACHE_DIR": str(ROOT / ".cache"),
           "SENSORSTREAM_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}  # fmt: skip
    started = CliRunner().invoke(app, ["kafka", "start"], env=env)
    broker = LocalKafka(data / "kafka", port=port)
    pid = read_pid(broker.nodes[0].pid_file)
    try:
        assert started.exit_code == 0 and pid, started.output
        stopped = CliRunner().invoke(app, ["kafka", "stop"], env=env)
        assert stopped.exit_code == 0 and "stopped 1 kafka node" in stopped.output, stopped.output
        assert gone([pid], 5) and not broker.nodes[0].pid_file.exists() and not port_in_use(port)
        again = CliRunner().invoke(app, ["kafka", "stop"], env=env)
        assert again.exit_code == 0 and "not running" in again.output
    finally:
        broker.stop(timeout=10)


@pytest.mark.spark  # `run` starts the stream job
def test_make_run_stops_every_part_on_ctrl_c_with_exit_0(kafka, topic, tmp_path):
    """`make run` then Ctrl-C, with a broker already answering: `run` uses it, starts no broker of
    its own and leaves it running. (tests/test_acceptance.py stops the README's `make run`, which
    starts its own broker, the same way.) Before, the dashboard got the terminal's SIGINT first and
    `run` logged `ERROR dashboard exited with code 0` and exited 1, and make reported `Error 1`."""
    api, dashboard = free_port(), free_port()
    data = tmp_path / "data"
    env = {
        "SENSORSTREAM_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "SENSORSTREAM_TOPIC": topic,
        "SENSORSTREAM_DATA_DIR": str(data), "SENSORSTREAM_CACHE_DIR": str(ROOT / ".cache"),
        "SENSORSTREAM_API_PORT": str(api), "SENSORSTREAM_DASHBOARD_PORT": str(dashboard),
        "SENSORSTREAM_METRICS_PORT": "0", "SENSORSTREAM_SPARK_MASTER": "local[2]", "SENSORSTREAM_PG_PORT": "0",
    }  # fmt: skip
    # The Makefile's `run` recipe, without its `deps` step (the test environment has them).
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"run:\n\t{shlex.join(command('run', '--sensors', '5', '--rate', '100'))}\n")
    run = launch(["make", "--no-print-directory", "-f", str(makefile), "run"], env, "terminal")
    commits = data / "checkpoints" / "sensorstream" / "commits"
    _wait_for(lambda: any(commits.glob("[0-9]*")), 240, "committed batch", run)
    assert len(java_descendants(run.proc.pid)) == 1  # the stream's JVM (the broker is the fixture's)
    _stop_and_check(run, ctrl_c)
    assert "pipeline stopped" in run.output and "make:" not in run.output
    assert not port_in_use(api) and not port_in_use(dashboard)
    assert kafka.status()["answering"], "run stopped a broker it did not start"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.broker
@pytest.mark.spark
def test_faults_stopped_by_sigterm_stops_its_broker_and_stream_job(tmp_path):
    """A harness stopped by `timeout` or a CI runner (SIGTERM to it alone): the broker and stream
    job it started in sessions of their own go too, instead of holding their ports and a core."""
    env = {"SENSORSTREAM_DATA_DIR": str(tmp_path / "data"), "SENSORSTREAM_CACHE_DIR": str(ROOT / ".cache")}
    args = ["faults", "--scenario", "hostile-reader", "--quick", "--workdir", str(tmp_path)]
    run = launch(command(*args, "--report", str(tmp_path / "faults.json")), env)
    try:
        _wait_for(
            lambda: any("sensorstream stream" in _cmdline(p) for p in descendants(run.proc.pid)),
            180, "stream job", run,
        )  # fmt: skip
        started = descendants(run.proc.pid)
        assert java_descendants(run.proc.pid), "no broker JVM"
        run.proc.send_signal(signal.SIGTERM)
        run.wait(90)
    finally:
        run.kill()
    assert gone(started, 30), f"left running: {[_cmdline(p)[:80] for p in started if _cmdline(p)]}"
    assert "stopping what this command started" in run.output, run.output

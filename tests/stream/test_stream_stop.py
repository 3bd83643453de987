"""`sensorstream stream` loses and doubles nothing however it ends: kill -9, or any way a supervisor
stops it.

One stream, run again and again over the same store and checkpoint: each run works through a
backlog (small batches, back to back, a reader hammering the read API). The first two runs are
killed with SIGKILL after a few committed batches, mid-stream. Each later run is stopped in another
way - SIGTERM to its process group (systemd's default), Ctrl-C on its terminal, SIGINT to the
process, SIGTERM to a container's PID 1, two SIGTERMs (fast stop) and ``timeout -s TERM``.
Each stop: exit 0 within 5 s of the signal, no traceback or ERROR in the output, the Spark JVM gone
and no 5xx from the read API. A last run drains the topic; the tables then equal an uninterrupted
run's, so no kill or stop lost or doubled anything (a loss or a double is never undone by a later
run: what a run commits stays, and a committed batch is never replayed).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from kit.stop import (
    STOP_WITHIN,
    Reader,
    can_unshare_pid,
    command,
    ctrl_c,
    gone,
    java_descendants,
    launch,
)
from kit.stream import SNAPSHOT, build_stream, child_env, run_in_process, snapshot
from sensorstream.kafka.topics import create_topic
from sensorstream.tools.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH = 25  # messages per micro-batch: many short batches, so a signal finds one in flight

# (name, how the command runs, how it is stopped). "timeout" needs no sender: it fires by itself.
# SIGTERM to the process alone is the PID 1 case (a plain `kill PID` differs only in the namespace).
STOPS = [
    ("SIGTERM to the process group", "plain", lambda run: os.killpg(run.proc.pid, signal.SIGTERM)),
    ("Ctrl-C in a terminal", "terminal", ctrl_c),
    ("SIGINT to the process", "plain", lambda run: os.kill(run.target, signal.SIGINT)),
    ("SIGTERM to a container's PID 1", "pid1", lambda run: os.kill(run.target, signal.SIGTERM)),
    ("SIGTERM twice to the group (fast stop)", "plain", lambda run: _twice(run.proc.pid)),
    ("timeout -s TERM", "timeout", None),
]


def _twice(pgid: int) -> None:
    os.killpg(pgid, signal.SIGTERM)
    time.sleep(0.3)
    os.killpg(pgid, signal.SIGTERM)


def _commits(ckpt: Path) -> int:
    return len(list((ckpt / "sensorstream" / "commits").glob("[0-9]*")))


def _kill_minus_9_after(env: dict[str, str], ckpt: Path, commits: int) -> None:
    """Start the stream, SIGKILL it (the process alone, as the OOM killer does) once ``commits``
    batches are committed in all."""
    run = launch(command("stream"), env)
    try:
        deadline = time.monotonic() + 120
        while _commits(ckpt) < commits:
            assert run.proc.poll() is None, f"the stream exited early:\n{run.output}"
            assert time.monotonic() < deadline, f"{commits} batches not committed in 120 s:\n{run.output}"
            time.sleep(0.05)
        os.kill(run.proc.pid, signal.SIGKILL)
        run.wait(60)
    finally:
        run.kill()


# A JVM start per kill and per stop and one to drain: 22 min with seven stops on a loaded 2-core machine.
@pytest.mark.timeout(1500)
def test_kill_minus_9_and_every_way_of_stopping_keep_the_tables_exact(
    kafka, spark, topic, make_settings, tmp_path
):
    create_topic({"bootstrap.servers": kafka.bootstrap_servers}, topic, 3)
    stream = build_stream(sensors=8, minutes=6)
    total = stream.send(kafka.bootstrap_servers, topic, 0) + stream.send(kafka.bootstrap_servers, topic, 1)

    ref = make_settings(bootstrap_servers=kafka.bootstrap_servers, topic=topic, max_offsets_per_trigger=BATCH,
                        trigger="200 ms", db=tmp_path / "ref.duckdb", checkpoint_dir=tmp_path / "ref-ckpt")  # fmt: skip
    run_in_process(spark, ref, total)

    db, ckpt, api_port = tmp_path / "stops.duckdb", tmp_path / "stops-ckpt", free_port()
    # RETENTION 0: the fixed event stream is a day old; keep every reading.
    env = child_env(ref, db, ckpt, tmp_path / "data", api_port=str(api_port), retention="0")
    # kill -9 twice at fixed points, mid-stream (tests/tools/test_faults.py kills at random moments).
    for commits in (2, 4):
        _kill_minus_9_after(env, ckpt, commits)
    assert _commits(ckpt) < total // BATCH, "the backlog ran out before the second kill"

    startup = 0.0  # seconds to the first commit of a run (the slowest so far), for the timeout run
    for name, how, send in STOPS:
        if how == "pid1" and not can_unshare_pid():
            continue  # needs root (CAP_SYS_ADMIN); the other stops still run
        before = _commits(ckpt)
        expires = round(startup * 1.3 + 3)  # timeout's duration: a little after a run's first commit
        started = time.monotonic()
        run = launch(command("stream"), env, how, timeout_s=expires)
        reader = Reader(f"http://127.0.0.1:{api_port}")
        try:
            deadline = started + 240
            while _commits(ckpt) <= before:  # this run committed a batch: it is under way
                assert run.proc.poll() is None, f"{name}: the stream exited early:\n{run.output}"
                assert time.monotonic() < deadline, f"{name}: no batch committed in 240 s:\n{run.output}"
                time.sleep(0.05)
            startup = max(startup, time.monotonic() - started)
            jvms = java_descendants(run.proc.pid)
            if send is None:
                signalled = started + expires  # timeout counts from its own start, a moment later
                code = run.wait(expires + 60)
            else:
                assert _commits(ckpt) < total // BATCH, f"{name}: the backlog ran out before the signal"
                signalled = time.monotonic()
                send(run)
                code = run.wait(60)
            took = time.monotonic() - signalled
            print(f"{name}: exit {code} {took:.2f} s after the signal; read API answered {reader.ok} times")
            print("".join(f"    {line}\n" for line in run.output.splitlines() if "stop" in line))
        finally:
            reader.stop()
            run.kill()
        assert code == 0, f"{name}: exit code {code}:\n{run.output}"
        assert "Traceback" not in run.output and " ERROR " not in run.output, f"{name}:\n{run.output}"
        assert took <= STOP_WITHIN, f"{name}: exited {took:.1f} s after the signal:\n{run.output}"
        assert not reader.server_errors, f"{name}: the read API answered {reader.server_errors}"
        assert reader.ok > 0, f"{name}: the read API never answered"
        assert jvms and gone(jvms, 10), f"{name}: the Spark JVM {jvms} outlived the stream"

    drain = launch(command("stream", "--until-idle", "--timeout", "240"), env)
    assert drain.wait(300) == 0, drain.output

    stopped, reference = snapshot(db), snapshot(ref.db)
    for table in SNAPSHOT:
        assert stopped[table] == reference[table], f"{table} differs after the kills, the stops and a restart"
    assert len(reference["readings"]) > 500 and reference["late_events"] and reference["dead_letters"]

"""What one read costs the writer's process: no thread and no cursor of its own per read.

The ad-hoc reads run in the writer's process, and what they do in Python holds the GIL its sink
thread waits for. A reader thread keeps its DuckDB cursor between reads and every read shares the
process's one watchdog thread; these tests hold that the bounds are the same as with a new cursor
and a watchdog thread per read: each read sees the last commit, a cut-off answer does not hold the
cursor, and a cancel or time limit never reaches the read after the one it was meant for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from kit.store import writer_store
from sensorstream.reads.answer import ArrowResult
from sensorstream.reads.errors import QueryTimeout
from sensorstream.reads.gate import ReadGate
from sensorstream.reads.limits import ReadLimits
from sensorstream.reads.watchdog import Watchdog

pytestmark = pytest.mark.integration

SLOW = "SELECT count(*) FROM range(3000000000) t(i) WHERE i % 7 = 1"  # seconds of CPU, little memory


@pytest.fixture
def settings(make_settings):
    return make_settings(api_port=0, read_timeout=5.0)


def test_a_reader_threads_cursor_sees_each_new_batch(settings):
    """One reader thread (one slot), so every read runs on the same kept cursor."""
    with writer_store(settings) as (con, writer), ReadGate(con, limits=ReadLimits(max_concurrent=1)) as gate:
        for _ in range(3):
            before = gate.run("SELECT count(*), max(batch_id) FROM pipeline_metrics").rows[0]
            writer.write_batch()
            after = gate.run("SELECT count(*), max(batch_id) FROM pipeline_metrics").rows[0]
            assert after[0] == before[0] + 1 and after[1] > before[1]
        # The time zone the cursor was made with holds for every later read on it.
        for _ in range(2):
            assert gate.run("SELECT TIMESTAMPTZ '2026-01-01 12:00:00+02'::VARCHAR").rows == [
                ["2026-01-01 10:00:00+00"]
            ]


def test_a_cut_off_or_failed_answer_leaves_the_cursor_ready_for_the_next_read(settings):
    with writer_store(settings) as (con, writer), ReadGate(con, limits=ReadLimits(max_concurrent=1)) as gate:
        cut = gate.run("SELECT * FROM range(1000000)", max_rows=5)
        assert cut.truncated and len(cut.rows) == 5
        # The rest of that result is not left open on the cursor: the relation path runs next.
        arrow = gate.run_checked("SELECT * FROM range(1000000)", None, max_rows=3, max_bytes=2**20, timeout=5)
        assert isinstance(arrow, ArrowResult) and arrow.truncated and arrow.table.num_rows == 3
        with pytest.raises(QueryTimeout):
            gate.run(SLOW, timeout=0.3)
        writer.write_batch()
        assert gate.run("SELECT count(*) FROM pipeline_metrics").rows == [[6]]


def test_reads_start_no_thread_of_their_own(settings):
    with writer_store(settings) as (con, _), ReadGate(con) as gate:
        gate.run("SELECT 1")
        before = {t.ident for t in threading.enumerate()}
        for _ in range(50):
            gate.run("SELECT 1")
            gate.run_named("latest_windows", {"limit": 1})
        assert {t.ident for t in threading.enumerate()} <= before
        assert sum(t.name == "read-watchdog" for t in threading.enumerate()) == 1


def test_a_late_cancel_does_not_reach_the_next_read_on_the_same_cursor(settings):
    """A CancelRequest can arrive as its read ends; the reader thread's cursor may by then run
    another client's read, which must not be interrupted."""
    with writer_store(settings) as (con, _):
        cur = con.cursor()
        with Watchdog(cur, 5.0, None) as ended:
            cur.execute("SELECT 1").fetchall()
        answer: list[object] = []
        nxt = threading.Thread(
            target=lambda: answer.append(cur.execute("SELECT count(*) FROM range(300000000)").fetchall())
        )
        with Watchdog(cur, 5.0, None):
            nxt.start()
            time.sleep(0.05)
            ended.cancel()
            nxt.join(30)
        assert answer == [[(300_000_000,)]] and ended.reason is None
        cur.close()


def test_reads_with_different_limits_are_each_stopped_at_their_own(settings):
    """One watchdog thread for all reads: an early deadline is not held back by a later one."""
    with writer_store(settings) as (con, _), ReadGate(con) as gate:
        took: dict[float, float] = {}

        def read(timeout: float) -> None:
            t0 = time.monotonic()
            with pytest.raises(QueryTimeout):
                gate.run(SLOW, timeout=timeout)
            took[timeout] = time.monotonic() - t0

        readers = [threading.Thread(target=read, args=(t,)) for t in (2.0, 0.3)]
        for t in readers:
            t.start()
            time.sleep(0.05)
        for t in readers:
            t.join(30)
        assert 0.3 <= took[0.3] < 1.5 and 2.0 <= took[2.0] < 4.0


WATCHERS = """
import json, os, threading, duckdb
from sensorstream.reads.gate import ReadGate
gate = ReadGate(duckdb.connect(":memory:"))
gate.run("SELECT 42")  # on a SCHED_IDLE reader thread
out = {}
for t in threading.enumerate():
    if t.name in ("read-watchdog", "read-writer-mark", "store-read_0"):
        stat = open(f"/proc/self/task/{t.native_id}/stat").read().rsplit(")", 1)[1].split()
        out[t.name] = [int(stat[38]), int(stat[16])]  # policy, nice
print(json.dumps(out))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="SCHED_IDLE is Linux's")
def test_the_watchdog_and_memory_mark_threads_are_not_idle_though_an_idle_reader_needs_them_first():
    """Both tick 20 times a second holding the GIL; an idle thread that loses its core while it
    holds it keeps the writer's threads waiting. In a fresh process, as the writer's."""
    done = subprocess.run([sys.executable, "-c", WATCHERS], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    threads = json.loads(done.stdout)
    assert threads["store-read_0"][0] == os.SCHED_IDLE
    assert threads["read-watchdog"] == [os.SCHED_OTHER, 10]
    assert threads["read-writer-mark"] == [os.SCHED_OTHER, 10]

"""The write-ahead log is folded into the file between batches, by a thread of the writer's own.

DuckDB would do it inside the commit that leaves the WAL long, and that batch's trigger would wait
(see ``store/checkpoints.py``). Here a batch only asks; the checkpoint never runs inside one.
"""

from __future__ import annotations

import threading
import time

from kit.store import store_settings, writer_store
from sensorstream.store.checkpoints import BACKSTOP_FACTOR, WalCheckpointer
from sensorstream.store.db import write_transaction

WAL_BYTES = 1024 * 1024  # small, so a few fake batches leave the WAL past it
ROWS = 2_000  # a batch writes ~0.25 MB of WAL


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_batch_that_leaves_the_wal_long_is_followed_by_a_checkpoint(make_settings):
    settings = store_settings(make_settings)
    with writer_store(settings, batches=0) as (con, writer):
        checkpointer = WalCheckpointer(con, settings.db, wal_bytes=WAL_BYTES).start()
        try:
            # DuckDB's own checkpoint stays, as a backstop, further out.
            backstop = con.execute("SELECT current_setting('checkpoint_threshold')").fetchone()[0]
            assert backstop == f"{BACKSTOP_FACTOR * WAL_BYTES // 1024 // 1024}.0 MiB"

            writer.write_batch(rows=ROWS)
            assert 0 < checkpointer.wal_size() < WAL_BYTES
            checkpointer.after_batch()  # a short WAL: nothing to do
            time.sleep(0.2)
            assert checkpointer.runs == 0

            while checkpointer.wal_size() < WAL_BYTES:
                writer.write_batch(rows=ROWS)
            readings = con.execute("SELECT count(*) FROM readings").fetchone()[0]
            checkpointer.after_batch()
            assert wait_for(lambda: checkpointer.runs == 1)
            assert checkpointer.wal_size() < WAL_BYTES  # folded into the file
            assert con.execute("SELECT count(*) FROM readings").fetchone()[0] == readings
        finally:
            checkpointer.stop()
    assert checkpointer.refused == 0


def test_the_checkpoint_waits_for_the_batch_in_its_transaction(make_settings):
    """It holds the writer lock: a batch's statements and commit never share time with it."""
    settings = store_settings(make_settings)
    with writer_store(settings, batches=0) as (con, writer):
        checkpointer = WalCheckpointer(con, settings.db, wal_bytes=WAL_BYTES).start()
        try:
            while checkpointer.wal_size() < WAL_BYTES:
                writer.write_batch(rows=ROWS)
            in_batch = threading.Event()
            finish = threading.Event()

            def a_batch() -> None:
                with write_transaction(con, "a slow batch") as tx:
                    tx.cur.execute("SELECT count(*) FROM readings").fetchall()
                    in_batch.set()
                    finish.wait(5)

            batch = threading.Thread(target=a_batch)
            batch.start()
            assert in_batch.wait(5)
            checkpointer.after_batch()
            time.sleep(0.3)
            assert checkpointer.runs == 0  # waiting for the batch
            finish.set()
            batch.join(5)
            assert wait_for(lambda: checkpointer.runs == 1)
        finally:
            checkpointer.stop()


def test_stopping_the_checkpointer_ends_its_thread_at_once(make_settings):
    settings = store_settings(make_settings)
    with writer_store(settings, batches=1) as (con, _):
        checkpointer = WalCheckpointer(con, settings.db).start()
        started = time.monotonic()
        checkpointer.stop()
        assert time.monotonic() - started < 1
        assert not any(t.name == "store-checkpoint" for t in threading.enumerate())


def test_a_checkpointer_on_an_instance_already_locked_for_reads_keeps_the_backstop(make_settings):
    """A store service started again on the same connection finds the configuration frozen."""
    from sensorstream.reads.lockdown import lock_down

    settings = store_settings(make_settings)
    with writer_store(settings, batches=1) as (con, _):
        WalCheckpointer(con, settings.db, wal_bytes=WAL_BYTES)
        lock_down(con)
        again = WalCheckpointer(con, settings.db)  # no SET on a locked instance
        backstop = con.execute("SELECT current_setting('checkpoint_threshold')").fetchone()[0]
        assert backstop == f"{BACKSTOP_FACTOR * WAL_BYTES // 1024 // 1024}.0 MiB"
        assert again.checkpoint()

"""The store's write-ahead log folded into the file between batches, not inside one.

DuckDB checkpoints (writes what its WAL holds into the database file) when a commit leaves the WAL
past ``checkpoint_threshold``, inside that commit. At 5 K events/s that was every ~19 s, and the
batch whose commit did it, and so the trigger after it, waited ~0.5 s longer: a tail the
event->commit p99 shows. So the writer's process checkpoints on a thread of its own instead, as
soon as a batch has committed with the WAL past :data:`WAL_CHECKPOINT_BYTES`: while Spark writes
its commit log and reads the next batch, and the sink parses it, none of which needs the store.
It holds the writer lock, so a batch that is ready before it ends waits for it, never the other
way round. Readers' queries go on beside it (a plain ``CHECKPOINT`` ran with a read transaction
open; DuckDB's automatic one is skipped while any other transaction is open, so with the read API
busy the WAL could grow past its threshold for a while). Should DuckDB refuse it anyway, it is
tried again after the next batch. DuckDB's own stays, as a backstop, at :data:`BACKSTOP_FACTOR`
times the size.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import duckdb

from sensorstream.store.db import is_locked, writes_held

log = logging.getLogger(__name__)

WAL_CHECKPOINT_BYTES = 16 * 1024 * 1024  # DuckDB's own default threshold
BACKSTOP_FACTOR = 4


class WalCheckpointer:
    """``after_batch()`` after each commit; a checkpoint runs on the ``store-checkpoint`` thread when due."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, db_path: Path | str, wal_bytes: int = WAL_CHECKPOINT_BYTES
    ) -> None:
        self.con = con
        self.wal = Path(f"{db_path}.wal")
        self.wal_bytes = wal_bytes
        # A global setting, set before the read lockdown freezes the configuration. An instance
        # already locked was served before (a service restarted on the same connection), and the
        # backstop was set then; DuckDB's default (16 MB) would only make it the old behaviour.
        if not is_locked(con):
            con.execute(f"SET checkpoint_threshold = '{BACKSTOP_FACTOR * wal_bytes} bytes'")
        self.runs = 0
        self.refused = 0
        self.last_ms: float | None = None
        self._due = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def wal_size(self) -> int:
        try:
            return self.wal.stat().st_size
        except FileNotFoundError:
            return 0

    def after_batch(self, _result: object = None) -> None:
        """A batch committed: ask for a checkpoint if the WAL is past the size (a stat, no waiting)."""
        if self.wal_size() >= self.wal_bytes:
            self._due.set()

    def start(self) -> WalCheckpointer:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._loop, name="store-checkpoint", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            self._due.wait()
            if self._stopping.is_set():
                return
            self._due.clear()
            try:
                self.checkpoint()
            except Exception:  # the stream must go on; DuckDB's backstop still bounds the WAL
                log.exception("checkpoint failed")

    def checkpoint(self) -> bool:
        """``CHECKPOINT`` now, between write transactions; False when DuckDB refused it (a transaction)."""
        with writes_held():
            started = time.perf_counter()
            cur = self.con.cursor()
            try:
                cur.execute("CHECKPOINT")
            except duckdb.TransactionException as exc:
                self.refused += 1
                log.debug("checkpoint put off to the next batch: %s", exc)
                return False
            finally:
                cur.close()
            self.last_ms = (time.perf_counter() - started) * 1000
        self.runs += 1
        log.debug("checkpoint: %.0f ms", self.last_ms)
        return True

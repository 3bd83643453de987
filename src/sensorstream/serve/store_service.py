"""``StoreService``: everything the writer's process serves besides the sink, started together.

The stream job calls ``StoreService(con, settings).start()`` after opening the store and
``.stop()`` at shutdown: the read API (always) and the PostgreSQL endpoint (``SENSORSTREAM_PG_PORT``
>= 0), each serving its clients from a process of its own and running their checked queries
here, retention (``SENSORSTREAM_RETENTION`` > 0), snapshots (``SENSORSTREAM_SNAPSHOT_INTERVAL``
> 0) and the WAL's checkpoints (``.checkpointer``, told after each batch), each on its own daemon
thread.

``.gate`` is the process's one :class:`~sensorstream.reads.gate.ReadGate`: creating it locks the
store's DuckDB instance down for reads, and every endpoint that serves outside readers (the read
API, a PostgreSQL-wire server) must use it, so they share its guard, limits and read slots.
"""

from __future__ import annotations

import logging

import duckdb

from sensorstream.config import Settings
from sensorstream.reads.gate import ReadGate
from sensorstream.serve.api import ReadApi
from sensorstream.serve.pgwire.process import PgProcess
from sensorstream.store.background import Periodic
from sensorstream.store.checkpoints import WalCheckpointer
from sensorstream.store.retention import apply_retention
from sensorstream.store.snapshot import write_snapshot

log = logging.getLogger(__name__)


class StoreService:
    def __init__(
        self, con: duckdb.DuckDBPyConnection, settings: Settings, *, api_port: int | None = None
    ) -> None:
        # Before the gate: it freezes the instance's configuration, and this sets DuckDB's threshold.
        self.checkpointer = WalCheckpointer(con, settings.db)
        self.gate = ReadGate(con, settings)
        self.api = ReadApi(con, settings, port=api_port, gate=self.gate, process=True)
        # In a process of its own, as the API's HTTP is: what its clients cost is not the writer's.
        self.pg = PgProcess(self.gate, settings) if settings.pg_port >= 0 else None
        self.retention: Periodic | None = None
        self.snapshot: Periodic | None = None
        if settings.retention > 0 and settings.retention_interval > 0:
            self.retention = Periodic(
                "store-retention",
                settings.retention_interval,
                lambda: apply_retention(
                    con,
                    settings.retention,
                    window_retention=settings.window_retention,
                    metrics_retention=settings.metrics_retention,
                ),
                run_first=True,
            )
        if settings.snapshot_interval > 0:
            self.snapshot = Periodic(
                "store-snapshot",
                settings.snapshot_interval,
                lambda: write_snapshot(con, settings.snapshot_path),
                run_first=True,
            )

    def start(self) -> StoreService:
        """Start the API first (a busy port fails here, before anything else runs), then the rest."""
        self.api.start()
        if self.pg is not None:
            try:
                self.pg.start()
            except BaseException:
                self.api.stop()
                raise
        for worker in (self.retention, self.snapshot):
            if worker is not None:
                worker.start()
        self.checkpointer.start()
        log.info(
            "store service up: api %s, postgres %s, retention %s, snapshots %s",
            self.api.url,
            self.pg.address if self.pg else "off",
            "on" if self.retention else "off",
            "on" if self.snapshot else "off",
        )
        return self

    def stop(self) -> None:
        """Stop the workers (each finishes its current chunk or snapshot), then the API."""
        self.checkpointer.stop()
        for worker in (self.snapshot, self.retention):
            if worker is not None:
                worker.stop()
        if self.pg is not None:
            self.pg.stop()
        self.api.stop()
        self.gate.close()

    def __enter__(self) -> StoreService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Helpers shared by the store tests (no tests here): a store with a fake writer and its API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb

from sensorstream.config import Settings
from sensorstream.serve.api import ReadApi
from sensorstream.store.db import connect
from sensorstream.tools.ports import free_port
from sensorstream.tools.synthetic import FakeBatchWriter


def store_settings(make_settings, **overrides) -> Settings:
    """Settings for a test: its own DuckDB file under tmp_path and a free API port (``tools.ports``)."""
    return make_settings(api_port=free_port(), **overrides)


@contextmanager
def writer_store(
    settings: Settings, batches: int = 5, **writer_options: Any
) -> Iterator[tuple[duckdb.DuckDBPyConnection, FakeBatchWriter]]:
    """The store opened read-write with ``batches`` fake micro-batches in it; closed afterwards."""
    con = connect(settings.db, threads=settings.db_threads)  # as the writer's process opens it
    writer = FakeBatchWriter(con, **writer_options)
    for _ in range(batches):
        writer.write_batch()
    try:
        yield con, writer
    finally:
        con.close()


@contextmanager
def serving(con: duckdb.DuckDBPyConnection, settings: Settings, **kwargs) -> Iterator[ReadApi]:
    api = ReadApi(con, settings, **kwargs).start()
    try:
        yield api
    finally:
        api.stop()

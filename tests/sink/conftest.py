"""The sink's own fixture: its merger on a fresh DuckDB file."""

from __future__ import annotations

import pytest


@pytest.fixture
def store(make_settings):
    """The sink's merger on a fresh DuckDB file (1-minute windows, 30 s lateness), and its connection."""
    from sensorstream.sink.merge import BatchMerger
    from sensorstream.store.db import connect

    settings = make_settings(window="1 minute", allowed_lateness="30 seconds")
    con = connect(settings.db)
    yield BatchMerger(con, settings, query_name="q/1"), con
    con.close()

"""What the PostgreSQL endpoint's client tests share: one filled store behind the endpoint."""

from __future__ import annotations

import pytest

from kit.dashboard import filled_store
from kit.pg import endpoint, pg_settings


@pytest.fixture(scope="package")
def filled_endpoint(tmp_path_factory):
    """A store filled through the real sink, served with a password on a free port.

    Shared by the modules that only read it (the drivers' and Grafana's queries): filling it is
    the slow part, and none of them writes.
    """
    from sensorstream.config import load_settings

    data = tmp_path_factory.mktemp("pg")
    settings = pg_settings(lambda **kw: load_settings(data_dir=data, metrics_port=0, pg_port=0, **kw))
    with filled_store(settings) as con, endpoint(con, settings) as server:
        yield con, server, settings

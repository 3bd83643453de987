"""Shared fixtures: one real Kafka broker and one SparkSession for the whole test run.

Services are started here and stopped at the end, so `make test` needs nothing running first.
Ports come from SENSORSTREAM_TEST_KAFKA_PORT (default 39092) so parallel runs can stay apart.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensorstream.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A real single-node KRaft broker, shared by every test of the run."""
    from sensorstream.tools.local.broker import LocalKafka

    port = int(os.environ.get("SENSORSTREAM_TEST_KAFKA_PORT", "39092"))
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), port=port, cache_dir=ROOT / ".cache")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def topic() -> str:
    """A fresh topic name per test, so tests never see each other's messages."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_settings(tmp_path: Path):
    """Settings for one test: its own DuckDB file and checkpoint dir under tmp_path."""

    def _make(**overrides) -> Settings:
        base = {
            "data_dir": tmp_path / "data",
            "db": tmp_path / "data" / "test.duckdb",
            "checkpoint_dir": tmp_path / "data" / "checkpoints",
            "cache_dir": ROOT / ".cache",
            "shuffle_partitions": 2,
            "metrics_port": 0,
            "pg_port": 0,  # any free port: tests run side by side
        }
        base.update(overrides)
        return load_settings(**base)

    return _make


@pytest.fixture
def store(make_settings):
    """The sink's merger on a fresh DuckDB file (1-minute windows, 30 s lateness), and its connection."""
    from sensorstream.sink.merge import BatchMerger
    from sensorstream.store.db import connect

    settings = make_settings(window="1 minute", allowed_lateness="30 seconds")
    con = connect(settings.db)
    yield BatchMerger(con, settings, query_name="q/1"), con
    con.close()


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    """One SparkSession (local[2], 2 shuffle partitions) for every Spark test of the run."""
    from sensorstream.stream.session import build_session

    data = tmp_path_factory.mktemp("spark")
    settings = load_settings(
        data_dir=data, cache_dir=ROOT / ".cache", spark_master="local[2]", shuffle_partitions=2
    )
    session = build_session(settings, app_name="sensorstream-tests")
    yield session
    session.stop()

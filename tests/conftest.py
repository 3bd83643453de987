"""Shared fixtures: one real Kafka broker and one SparkSession for the whole test run (one each per
pytest-xdist worker).

Services are started here and stopped at the end, so `make test` needs nothing running first.
The broker listens on SENSORSTREAM_TEST_KAFKA_PORT when it is set, else on free ports, so runs (and
pytest-xdist's workers, each with a broker of its own) stay apart.

A test is marked by what it starts (``broker``, ``spark``, ``browser``, ``jvm``, ``go``, ``process``):
from the fixtures it uses (here, and a module's own in its ``STARTED_BY_FIXTURE``), and by hand
where it starts something itself (a stream job in a child process, Chromium, a JDBC client, a Go
build, the read API's or the PostgreSQL endpoint's own process). ``make test-fast`` runs the rest.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensorstream.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

# Every Spark driver and Kafka node the tests start, in this process or a child (`sensorstream
# stream`, `make run`, the fault scenarios), compiles with C1 alone: a JVM that lives a few seconds
# spends most of its CPU in the C2 compiler otherwise (a Spark session's first query: 11 s of CPU
# with C2, 5 s without). Test-only: C2's code is what a long run needs, so the benchmarks and a
# user's `make run` keep it. Spark's launcher reads SPARK_SUBMIT_OPTS, our broker KAFKA_OPTS.
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
for _name in ("SPARK_SUBMIT_OPTS", "KAFKA_OPTS"):
    os.environ.setdefault(_name, TEST_JVM_OPTIONS)


# A fixture starts these, so every test that uses it (directly or through another fixture) does.
# A test module names its own such fixtures in a STARTED_BY_FIXTURE of the same form.
STARTED_BY_FIXTURE = {"kafka": "broker", "spark": "spark"}


# `make test` runs the tests that start something on two pytest-xdist workers (--dist loadgroup): each
# module is one unit of work, so its module fixtures start once, on one worker. A module whose tests
# share no module fixture sets ONE_UNIT_PER_TEST = True and its tests are spread one by one (the
# fault scenarios: ~30 s each, one unit would be the longest of the run). tryfirst: xdist's worker
# reads the xdist_group marks in its own hook of this name.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        started = {**STARTED_BY_FIXTURE, **getattr(module, "STARTED_BY_FIXTURE", {})}
        for fixture, marker in started.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
        if not getattr(module, "ONE_UNIT_PER_TEST", False):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    # The long end-to-end modules first (xdist keeps this order with --no-loadscope-reorder): two
    # workers then finish together, the short units filling in at the end, instead of one worker
    # starting a 100 s module while the other has nothing left.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A real single-node KRaft broker, shared by every test of the run (of the worker)."""
    from sensorstream.kafka.broker import LocalKafka
    from sensorstream.tools.ports import free_block

    port = int(os.environ.get("SENSORSTREAM_TEST_KAFKA_PORT") or free_block(2))  # client + controller
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


def settings_in(root: Path, **overrides) -> Settings:
    """Settings for tests: their own DuckDB file and checkpoint dir under ``root``."""
    base = {
        "data_dir": root / "data",
        "db": root / "data" / "test.duckdb",
        "checkpoint_dir": root / "data" / "checkpoints",
        "cache_dir": ROOT / ".cache",
        "shuffle_partitions": 2,
        "metrics_port": 0,
        "pg_port": 0,  # any free port: tests run side by side
    }
    base.update(overrides)
    return load_settings(**base)


@pytest.fixture
def make_settings(tmp_path: Path):
    """Settings for one test: its own DuckDB file and checkpoint dir under tmp_path."""
    return functools.partial(settings_in, tmp_path)


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory: pytest.TempPathFactory):
    """make_settings for a fixture the tests of a module share: each call gets a directory of its own."""
    return lambda **overrides: settings_in(tmp_path_factory.mktemp("shared"), **overrides)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    """One SparkSession (local[2], 2 shuffle partitions) for every Spark test of the run."""
    from sensorstream.stream.spark import build_session

    data = tmp_path_factory.mktemp("spark")
    settings = load_settings(
        data_dir=data, cache_dir=ROOT / ".cache", spark_master="local[2]", shuffle_partitions=2
    )
    session = build_session(settings, app_name="sensorstream-tests")
    yield session
    session.stop()

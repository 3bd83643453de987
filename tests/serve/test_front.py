"""serve.front.RemoteGate: only reads that need the store's data reach the writer's process.

Real parts: a DuckDB file with fake batches, the writer's ``ReadGate`` served on its private
socket (``serve.backend``), and the endpoint side's ``RemoteGate`` that the read API's and the
PostgreSQL endpoint's processes use. The writer's gate counts the reads it is asked to run.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from kit.store import store_settings, writer_store
from sensorstream.reads.errors import QueryCanceled, QueryTimeout, TooLarge
from sensorstream.reads.gate import ReadGate
from sensorstream.reads.limits import ReadLimits
from sensorstream.serve import front
from sensorstream.serve.backend import ReadBackend


class CountingGate(ReadGate):
    """The writer's gate, counting the checked texts it runs for the other process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.texts: list[str] = []

    def run_checked(self, text: str, *args: Any, **kwargs: Any) -> Any:
        self.texts.append(text)
        return super().run_checked(text, *args, **kwargs)


@pytest.fixture
def remote(make_settings):
    settings = store_settings(make_settings)
    with writer_store(settings) as (con, _writer):
        writer_gate = CountingGate(con, settings)
        backend = ReadBackend(writer_gate).start()
        try:
            yield writer_gate, front.RemoteGate(backend.path, writer_gate.limits)
        finally:
            backend.stop()
            writer_gate.close()


def test_a_statement_that_reads_no_table_is_answered_without_the_writer(remote):
    writer, gate = remote
    assert gate.run("SELECT 1 AS one").rows == [[1]]
    values = gate.run("SELECT * FROM (VALUES ('block_size', 8192)) AS t(name, setting)")
    assert (values.columns, values.rows) == (["name", "setting"], [["block_size", 8192]])
    assert gate.run("SELECT version() = $1 AS same", [writer.run("SELECT version()").rows[0][0]]).rows == [
        [True]
    ]
    assert writer.texts == []
    # The store's data is the writer's to read: same numbers as the writer's own gate.
    count = gate.run("SELECT count(*) AS n FROM readings").rows
    assert count == writer.run("SELECT count(*) AS n FROM readings").rows and count[0][0] > 0
    assert writer.texts == ["SELECT count(*) AS n FROM readings"]


def test_a_read_run_here_keeps_the_limits_of_a_read(remote):
    _, gate = remote
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        gate.run("SELECT count(*) FROM range(1000000000000)", timeout=0.3)
    assert time.monotonic() - started < 5
    hit: list[BaseException] = []

    def endless() -> None:
        try:
            gate.run("SELECT count(*) FROM range(1000000000000)", tag="t1")
        except BaseException as exc:  # what the read ended with is the point
            hit.append(exc)

    reader = threading.Thread(target=endless)
    reader.start()
    deadline = time.monotonic() + 5
    while reader.is_alive() and not gate.cancel("t1") and time.monotonic() < deadline:
        time.sleep(0.02)
    reader.join(5)
    assert hit and isinstance(hit[0], QueryCanceled)


def test_a_read_run_here_beyond_its_memory_is_refused_and_writes_no_file(tmp_path, monkeypatch):
    # DuckDB in memory spills to ./.tmp by default: a client's big sort would fill the disk of
    # whatever folder the endpoint was started from, beyond any read limit.
    monkeypatch.chdir(tmp_path)
    gate = front.RemoteGate(str(tmp_path / "no-writer.sock"), ReadLimits(memory=32 * 2**20))
    with pytest.raises(TooLarge, match="memory"):
        gate.run("SELECT i % 3000000 AS k, count(*) AS n FROM range(6000000) t(i) GROUP BY k ORDER BY n")
    assert list(tmp_path.iterdir()) == []


def test_catalog_answers_are_kept_a_few_seconds_and_asked_again_after(remote, monkeypatch):
    writer, gate = remote
    query = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1"
    first = gate.run(query)
    assert ["readings"] in first.rows
    assert gate.run(query).rows == first.rows == writer.run(query).rows
    assert writer.texts == [query]  # the second came from the kept answer
    gate.run(query).rows.clear()  # a caller's copy: what is kept stays whole
    assert gate.run(query).rows == first.rows
    # The parameters are part of what is kept.
    by_name = "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = $1"
    assert gate.run(by_name, ["readings"]).rows == [[1]]
    assert gate.run(by_name, ["nothing"]).rows == [[0]]
    assert writer.texts.count(by_name) == 2
    # A catalog query whose answer moves by itself is never kept.
    clock = "SELECT count(*), now() FROM pg_catalog.pg_class"
    gate.run(clock)
    gate.run(clock)
    assert writer.texts.count(clock) == 2
    # Past the keeping time the writer is asked again.
    monkeypatch.setattr(gate._answers, "keep_s", 0.05)
    gate.run(by_name, ["other"])
    time.sleep(0.1)
    gate.run(by_name, ["other"])
    assert writer.texts.count(by_name) == 4


def test_kept_answers_stay_within_their_byte_budget():
    kept = front.KeptAnswers(keep_s=60, budget=1000)
    answer = front.ReadResult(["a"], ["INTEGER"], [[1]])
    for i in range(10):
        kept.put(("q", i), answer, 300)
    assert [kept.get(("q", i)) is not None for i in range(10)] == [False] * 7 + [True] * 3
    kept.put(("big",), answer, front.CATALOG_ANSWER_BYTES + 1)
    assert kept.get(("big",)) is None


def test_a_constant_answer_is_kept_and_one_with_a_clock_is_run_each_time(remote, monkeypatch):
    _, gate = remote
    ran: list[str] = []
    here = gate._here.run_checked
    monkeypatch.setattr(
        gate._here, "run_checked", lambda text, *a, **k: ran.append(text) or here(text, *a, **k)
    )
    for _ in range(3):
        assert gate.run("SELECT 'PostgreSQL 15.0' AS version").rows == [["PostgreSQL 15.0"]]
        gate.run("SELECT now() AS t")
    assert ran.count("SELECT 'PostgreSQL 15.0' AS version") == 1
    assert ran.count("SELECT now() AS t") == 3

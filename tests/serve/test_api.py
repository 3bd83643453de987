"""The read API over real HTTP: routes, errors as 400, the SQL guard, limits, start and stop.

Each test runs against both ways of serving it: from a thread of the store's process, and from
the API's own process (``process=True``, as the writer's runtime serves it), which must answer
exactly the same.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from kit.store import serving, store_settings, writer_store
from sensorstream.config import Settings
from sensorstream.procs import alive
from sensorstream.reads.errors import QueryError, QueryTimeout, SqlRefused
from sensorstream.reads.limits import ReadLimits
from sensorstream.serve import api as api_module
from sensorstream.serve import front
from sensorstream.serve.api import REFUSAL_PAUSE_S, ApiStartError, ReadApi
from sensorstream.serve.client import StoreClient
from sensorstream.store.migrations import LATEST


@pytest.fixture
def settings(make_settings):
    return store_settings(make_settings)


@pytest.fixture(
    scope="module", params=[False, pytest.param(True, marks=pytest.mark.process)], ids=["thread", "process"]
)
def process(request) -> bool:
    return request.param


# Short, so the slow query is interrupted soon; not shorter: the API's process reads at SCHED_IDLE and
# `make test` runs another heavy test on the other core, so a plain count can wait a second for a core.
QUERY_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def served(module_settings, process) -> Iterator[tuple[ReadApi, Settings]]:
    """A store of 5 batches and its API, one per way of serving, shared by the tests that only read
    through it (starting an API process per test was most of this module's time)."""
    settings = store_settings(module_settings)
    with (
        writer_store(settings) as (con, _),
        serving(con, settings, query_timeout=QUERY_TIMEOUT, max_rows=100, process=process) as api,
    ):
        yield api, settings


@pytest.fixture
def api(served) -> ReadApi:
    return served[0]


@pytest.fixture
def http(api):
    with httpx.Client(base_url=api.url, timeout=10) as client:
        yield client


def test_health_names_the_last_batch_and_nothing_about_the_machine(http, served):
    _, settings = served
    response = http.get("/health")
    body = response.json()
    assert body["ok"] is True and body["mode"] == "api"
    assert body["schema_version"] == LATEST
    assert body["last_batch_id"] == 4
    assert 0 <= body["last_batch_age_seconds"] < 60
    assert "writer_pid" not in body and "db" not in body
    assert str(settings.db.parent) not in response.text


def test_queries_lists_names_params_and_columns(http):
    listed = {q["name"]: q for q in http.get("/queries").json()["queries"]}
    assert {"sensors", "latest_windows", "sensor_series", "anomalies_recent", "anomaly_counts",
            "late_over_time", "dead_letters_over_time", "dead_letter_reasons", "pipeline_metrics_recent",
            "last_batch", "table_counts", "totals"} <= set(listed)  # fmt: skip
    assert [p["name"] for p in listed["latest_windows"]["params"]] == [
        "sensor_id", "sensor_type", "site", "since", "limit",
    ]  # fmt: skip


def test_a_named_query_answers_columns_and_rows(http):
    body = http.get("/query/table_counts").json()
    assert body["columns"] == ["table_name", "rows"]
    assert dict(body["rows"])["readings"] == 500


def test_bad_requests_are_400_with_a_message(http):
    for path, fragment in [
        ("/query/nope", "no query named"),
        ("/query/latest_windows?limit=abc", "not an integer"),
        ("/query/totals?x=1", "has no parameter"),
    ]:
        response = http.get(path)
        assert response.status_code == 400, path
        assert fragment in response.json()["error"]


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("INSERT INTO readings SELECT * FROM readings", "not INSERT"),
        ("UPDATE window_stats SET avg_value = 0", "not UPDATE"),
        ("DELETE FROM readings", "not DELETE"),
        ("DROP TABLE readings", "not DROP"),
        ("CREATE TABLE x AS SELECT 1", "not CREATE"),
        ("ATTACH '/tmp/helperB/other.duckdb' AS other", "not ATTACH"),
        ("DETACH other", "not DETACH"),
        ("COPY readings TO '/tmp/helperB/out.csv'", "not COPY"),
        ("COPY (SELECT 1) TO '/tmp/helperB/out.csv'", "not COPY"),
        ("PRAGMA database_list", "not PRAGMA"),
        ("SET threads = 1", "not SET"),
        ("CALL pragma_version()", "not CALL"),
        ("INSTALL httpfs", "not"),
        ("LOAD json", "not"),
        ("EXPORT DATABASE '/tmp/helperB/export'", "not EXPORT"),
        ("SELECT 1; DROP TABLE readings", "exactly one statement"),
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
        ("SELECT * FROM read_parquet('x.parquet')", "read_parquet"),
        ("SELECT count(*) FROM (SELECT * FROM read_json_auto('x.json'))", "read_json_auto"),
        ("SELECT * FROM glob('/etc/*')", "glob"),
        ("SELECT * FROM query('DROP TABLE readings')", "query"),
        ("SELECT * FROM '/etc/passwd'", "looks like a file"),
    ],
)
def test_the_sql_guard_refuses_anything_but_reading_the_store(http, sql, reason, monkeypatch):
    # The pause before a refusal is answered has its own test below; here it is 0.2 s a statement.
    monkeypatch.setattr(api_module, "REFUSAL_PAUSE_S", 0.0)
    response = http.post("/sql", json={"sql": sql})
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert dict(http.get("/query/table_counts").json()["rows"])["readings"] == 500  # nothing happened


def test_a_refusal_is_answered_no_sooner_than_a_pause_so_a_retry_loop_cannot_spin(http):
    """Refused or busy ad-hoc SQL answers after REFUSAL_PAUSE_S (waiting costs no thread, no CPU):
    a client that asks again the moment it has the answer sends a few a second, not hundreds."""
    started = time.monotonic()
    refused = http.post("/sql", json={"sql": "SELECT * FROM read_csv('/etc/passwd')"})
    assert refused.status_code == 400 and time.monotonic() - started >= REFUSAL_PAUSE_S
    assert http.post("/sql", json={"sql": "SELECT 1 AS one"}).json()["rows"] == [[1]]


def test_sql_binds_params_and_caps_rows(http):
    injected = http.post(
        "/sql", json={"sql": "SELECT * FROM readings WHERE sensor_id = ?", "params": ["x' OR '1'='1"]}
    ).json()
    assert injected.get("rows") == [], injected
    named = http.post(
        "/sql",
        json={
            "sql": "SELECT count(*) AS n FROM readings WHERE sensor_id = $s",
            "params": {"s": "sensor-0001"},
        },
    ).json()
    assert named.get("rows") == [[25]], named
    capped = http.post("/sql", json={"sql": "SELECT * FROM range(1000) -- a trailing comment"}).json()
    assert len(capped["rows"]) == 100 and capped["truncated"] is True


def test_a_slow_query_is_interrupted(http):
    started = time.monotonic()
    response = http.post("/sql", json={"sql": "SELECT sum(hash(i)) FROM range(100000000000) t(i)"})
    assert response.status_code == 400
    assert f"interrupted after {QUERY_TIMEOUT:.0f} s" in response.json()["error"]
    assert response.json()["sqlstate"] == "57014"
    assert time.monotonic() - started < QUERY_TIMEOUT + 4


def test_the_client_raises_query_errors_from_the_api(served):
    _, settings = served
    with StoreClient(settings) as client, pytest.raises(QueryError, match="not DROP"):
        client.sql("DROP TABLE readings")


def test_a_busy_port_is_a_clear_error_naming_the_setting(settings, process):
    with socket.socket() as other:
        other.bind((settings.host, settings.api_port))
        other.listen()
        with writer_store(settings) as (con, _), pytest.raises(ApiStartError, match="SENSORSTREAM_API_PORT"):
            ReadApi(con, settings, process=process).start()


def test_start_and_stop_are_fast_and_free_the_port(settings, process):
    with writer_store(settings) as (con, _):
        for _ in range(2):  # the second start proves the port was released
            t0 = time.monotonic()
            api = ReadApi(con, settings, process=process).start()
            assert httpx.get(f"{api.url}/health").status_code == 200
            api.stop()
            # The API's own process imports FastAPI, DuckDB and Arrow before it answers.
            assert time.monotonic() - t0 < (8 if process else 3)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{api.url}/health")


TYPED = (
    "SELECT 1::TINYINT AS a, 3.5::DECIMAL(10,2) AS b, 'x' AS c, NULL AS d, TIMESTAMP '2024-01-01 01:02:03.456' AS e, "
    "TIMESTAMPTZ '2024-01-01 01:02:03+00' AS f, DATE '2024-01-02' AS g, TIME '01:02:03' AS h, [1, 2] AS i, "
    "'abc'::BLOB AS j, 'nan'::DOUBLE AS k, 10::UBIGINT AS l, '{\"a\": 1}'::JSON AS m, "
    "'00000000-0000-0000-0000-000000000001'::UUID AS n, 1.5::FLOAT AS o",
    # Types whose Arrow form reads back differently: the writer builds these rows itself.
    "SELECT INTERVAL 90 MINUTE AS a, INTERVAL 2 MONTH AS b, MAP {'k': 1} AS c, 2::HUGEINT AS d, "
    "{'a': 1, 'b': 'x'} AS e, 'a'::ENUM('a', 'b') AS f",
    "SELECT * FROM window_stats ORDER BY ALL",
    "SELECT * FROM readings ORDER BY event_id LIMIT 150",
)


@pytest.mark.process
@pytest.mark.parametrize("sql", TYPED, ids=["scalars", "python-only-types", "window_stats", "readings"])
def test_the_api_process_answers_as_the_store_process_does(settings, sql):
    """Arrow from the writer, JSON in the API's process: every type reads as DuckDB's own value would."""
    with (
        writer_store(settings) as (con, _),
        serving(con, settings) as here,
        serving(con, settings.model_copy(update={"api_port": 0}), process=True) as there,
    ):
        assert there.pid != here.pid
        answers = [httpx.post(f"{api.url}/sql", json={"sql": sql}) for api in (here, there)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json()
    assert answers[0].json()["rows"]


@pytest.mark.process
def test_the_api_process_refuses_as_the_store_process_does(settings):
    """A DuckDB error keeps its own sqlstate across the process boundary (42P01: no such table)."""
    with (
        writer_store(settings) as (con, _),
        serving(con, settings) as here,
        serving(con, settings.model_copy(update={"api_port": 0}), process=True) as there,
    ):
        answers = [
            httpx.post(f"{api.url}/sql", json={"sql": "SELECT * FROM nowhere"}) for api in (here, there)
        ]
    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].json() == answers[1].json() and answers[1].json()["sqlstate"] == "42P01"


class Hammer:
    """GETs a named query in a loop from a thread; keeps every status (connection errors apart)."""

    def __init__(self, url: str) -> None:
        self.url, self.statuses = url, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                try:
                    self.statuses.append(http.get(f"{self.url}/query/latest_windows?limit=5").status_code)
                except httpx.HTTPError:
                    self._stop.wait(0.01)  # gone: not an answer

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(10)
        return self.statuses


@pytest.mark.process
def test_stopping_the_api_process_answers_what_is_in_flight_and_never_a_5xx(settings):
    with writer_store(settings) as (con, _):
        api = ReadApi(con, settings, process=True).start()
        hammer = Hammer(api.url)
        time.sleep(1.0)
        api.stop()
        statuses = hammer.stop()
    assert statuses.count(200) > 5 and set(statuses) == {200}, sorted(set(statuses))


@pytest.mark.process
def test_the_api_process_goes_with_the_writer_however_it_ends(settings, tmp_path):
    """kill -9 the writer: its API process notices (its stdin closes), exits and frees the port;
    a reader meanwhile gets answers, then no connection, never a 5xx."""
    script = tmp_path / "writer.py"
    script.write_text(
        "import sys, time\n"
        "from sensorstream.config import Settings\n"
        "from sensorstream.serve.api import ReadApi\n"
        "from sensorstream.store.db import connect\n"
        f"settings = Settings(db={str(settings.db)!r}, api_port={settings.api_port})\n"
        "con = connect(settings.db)\n"
        "api = ReadApi(con, settings, process=True).start()\n"
        "print(api.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    writer = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(writer.stdout.readline())
        url = f"http://{settings.host}:{settings.api_port}"
        assert httpx.get(f"{url}/health").json()["ok"] is True
        hammer = Hammer(url)
        time.sleep(1.0)
        writer.kill()
        writer.wait()
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), "the API process outlived its writer"
        statuses = hammer.stop()
        assert statuses.count(200) > 5 and set(statuses) == {200}, sorted(set(statuses))
        with socket.socket() as again:  # the port is free for a restarted writer (which reuses addresses)
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind((settings.host, settings.api_port))
            again.listen()
    finally:
        writer.kill()


def test_a_writer_too_slow_to_answer_is_a_timeout_not_a_dead_api(tmp_path, monkeypatch):
    """The API's process waits a read's limit and a margin for the writer; past that the read is
    abandoned with a sentence, and the API stays up (only a refused or reset connection means gone)."""
    monkeypatch.setattr(front, "HANG_MARGIN_S", 0.2)
    path = tmp_path / "read.sock"
    with socket.socket(socket.AF_UNIX) as silent:  # accepts, never answers: a writer stuck
        silent.bind(str(path))
        silent.listen()
        gate = front.RemoteGate(str(path), ReadLimits(timeout=0.1))
        with pytest.raises(QueryTimeout, match=r"did not answer within 0\.3 s"):
            gate.run("SELECT count(*) FROM readings")  # a read of the store's data: the writer's to run
        with pytest.raises(SqlRefused):  # the guard still answers first, before the writer is asked
            gate.run("DROP TABLE readings")

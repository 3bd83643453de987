"""StoreClient: the API when it answers, the file read-only when nobody writes, a clear error else."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kit.store import serving, store_settings, writer_store
from sensorstream.serve.client import StoreClient, StoreUnavailableError

HOLD_THE_FILE = """
import sys, time
from sensorstream.store.db import connect
con = connect(sys.argv[1])
print("holding", flush=True)
time.sleep(60)
"""


@pytest.fixture
def settings(make_settings):
    return store_settings(make_settings)


def test_the_client_uses_the_api_while_the_writer_serves_it(settings):
    with writer_store(settings) as (con, _), serving(con, settings), StoreClient(settings) as client:
        assert client.health()["mode"] == "api"
        assert client.query("totals")["batches"].tolist() == [5]
        assert client.sql("SELECT count(*) AS n FROM readings")["n"].tolist() == [500]
        assert client.mode == "api"


def test_without_an_api_the_client_reads_the_file_read_only(settings):
    with writer_store(settings):
        pass  # write 5 batches, then close: no writer, no API
    with StoreClient(settings) as client:
        health = client.health()
        assert health["mode"] == "file" and health["last_batch_id"] == 4
        assert client.query("table_counts").set_index("table_name")["rows"]["readings"] == 500
        assert (
            client.sql("SELECT count(*) AS n FROM window_stats WHERE sensor_id = ?", ["sensor-0001"])["n"][0]
            == 1
        )
        assert client.mode == "file"
    # the client did not keep the file open: a writer can start again
    with writer_store(settings, batches=0):
        pass


@pytest.mark.process
def test_a_locked_file_and_no_api_is_a_clear_error(settings):
    with writer_store(settings):
        pass
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_FILE, str(settings.db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with StoreClient(settings) as client, pytest.raises(StoreUnavailableError) as caught:
            client.query("totals")
    finally:
        holder.kill()
        holder.wait()
    message = str(caught.value)
    assert "does not answer" in message and "locked by the process writing it" in message
    assert "SENSORSTREAM_API_PORT" in message


def test_no_api_and_no_file_is_a_clear_error(settings):
    with StoreClient(settings) as client, pytest.raises(StoreUnavailableError, match="no DuckDB file at"):
        client.health()

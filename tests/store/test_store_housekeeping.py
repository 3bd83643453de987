"""Retention deletes only what is older than the horizon; snapshots are atomic, complete files."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import duckdb
import pytest

from kit.store import store_settings, writer_store
from sensorstream.serve.store_service import StoreService
from sensorstream.store.retention import apply_retention, event_cutoff
from sensorstream.store.snapshot import write_snapshot


@pytest.fixture
def settings(make_settings, tmp_path):
    return store_settings(
        make_settings,
        snapshot_path=tmp_path / "snap" / "snapshot.duckdb",
        retention=600,
        retention_interval=3600,
    )


def test_retention_deletes_only_rows_older_than_the_horizon(settings):
    # 150 batches of 10 s = 25 minutes of event time
    with writer_store(settings, batches=150, event_seconds_per_batch=10) as (con, _):
        windows_before = con.execute("SELECT count(*), sum(reading_count) FROM window_stats").fetchall()
        newest = con.execute("SELECT max(event_time) FROM readings").fetchone()[0]
        cutoff = event_cutoff(con, 600)
        assert cutoff == newest - timedelta(seconds=600)
        old, young = con.execute(
            "SELECT count(*) FILTER (event_time < $c), count(*) FILTER (event_time >= $c) FROM readings",
            {"c": cutoff},
        ).fetchone()
        assert old > 0 and young > 0

        result = apply_retention(con, 600, chunk_rows=10_000, pause=0)

        assert result.deleted["readings"] == old
        assert con.execute("SELECT count(*), min(event_time) FROM readings").fetchone() == (
            young,
            con.execute("SELECT min(event_time) FROM readings WHERE event_time >= ?", [cutoff]).fetchone()[0],
        )
        assert con.execute("SELECT count(*) FROM readings WHERE event_time < ?", [cutoff]).fetchone()[0] == 0
        assert (
            con.execute("SELECT count(*), sum(reading_count) FROM window_stats").fetchall() == windows_before
        )
        assert (
            con.execute("SELECT count(*) FROM late_events WHERE event_time < ?", [cutoff]).fetchone()[0] == 0
        )
        # the newest open window (end > watermark) is whole
        open_windows = con.execute(
            "SELECT w.sensor_id, w.reading_count, count(r.event_id) FROM window_stats w "
            "LEFT JOIN readings r USING (sensor_id, window_start) WHERE NOT w.is_final GROUP BY ALL"
        ).fetchall()
        assert open_windows and all(stored == counted for _, stored, counted in open_windows)


def test_a_store_with_no_readings_has_no_event_cutoff(settings):
    """Not "now - RETENTION": a pass that began before the first batch would delete by that cutoff
    the older event times the batches committed while it ran (a replayed data set's)."""
    with writer_store(settings, batches=0) as (con, _):
        assert con.execute("SELECT count(*) FROM readings").fetchone()[0] == 0
        assert event_cutoff(con, 600) is None
        assert apply_retention(con, 600).event_cutoff is None


def test_retention_leaves_a_store_younger_than_the_horizon_alone(settings):
    with writer_store(settings, batches=30) as (con, _):
        result = apply_retention(con, 600)
    assert result.deleted == {"readings": 0, "late_events": 0, "anomalies": 0, "dead_letters": 0}


READER = """
import sys, duckdb
path, seconds = sys.argv[1], float(sys.argv[2])
import time
deadline, opened, failures = time.monotonic() + seconds, 0, []
while time.monotonic() < deadline:
    try:
        con = duckdb.connect(path, read_only=True)
        tables = {t for (t,) in con.execute("SHOW TABLES").fetchall()}
        assert "window_stats" in tables and "snapshot_info" in tables, tables
        con.execute("SELECT count(*) FROM window_stats").fetchone()
        con.close()
        opened += 1
    except Exception as exc:
        failures.append(repr(exc))
print(opened, len(failures), failures[:2])
"""


@pytest.mark.process
def test_a_snapshot_is_replaced_atomically_and_opens_read_only(settings):
    target = settings.snapshot_path
    with writer_store(settings, batches=50) as (con, writer):
        first = write_snapshot(con, target)
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(target), "3"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(10):  # replace the file under a reader that keeps opening it
            writer.write_batch()
            write_snapshot(con, target)
        out, _ = reader.communicate(timeout=60)
        opened, failed, samples = out.split(" ", 2)
        assert int(opened) > 0 and int(failed) == 0, samples
        assert sorted(p.name for p in target.parent.iterdir()) == ["snapshot.duckdb"]  # no temp, no .wal
    assert first.rows["window_stats"] > 0 and first.rows["dead_letters"] == 50
    with duckdb.connect(str(target), read_only=True) as snap:
        tables = {t for (t,) in snap.execute("SHOW TABLES").fetchall()}
        assert {"window_stats", "anomalies", "late_events", "dead_letters", "pipeline_metrics",
                "readings", "schema_version", "snapshot_info"} <= tables  # fmt: skip
        assert snap.execute("SELECT count(*) FROM pipeline_metrics").fetchone()[0] == 60
        assert snap.execute("SELECT count(raw_value) FROM dead_letters").fetchone()[0] == 0  # no blobs
        assert snap.execute("SELECT last_batch_id FROM snapshot_info").fetchone()[0] == 59


@pytest.mark.process
def test_the_service_starts_and_stops_api_retention_and_snapshots_together(make_settings, tmp_path):
    settings = store_settings(
        make_settings, snapshot_path=tmp_path / "s.duckdb", snapshot_interval=0.2, retention_interval=0.2
    )
    with writer_store(settings) as (con, _):
        service = StoreService(con, settings).start()
        time.sleep(1.0)
        t0 = time.monotonic()
        service.stop()
        assert time.monotonic() - t0 < 3
    assert service.snapshot.runs >= 2 and service.snapshot.errors == 0
    assert service.retention.runs >= 2 and service.retention.errors == 0
    assert (tmp_path / "s.duckdb").exists()


def test_retention_running_while_batches_commit_loses_and_doubles_nothing(make_settings):
    """A retention loop deletes old readings in a thread while the real sink merges 80 batches."""
    import threading
    from collections import defaultdict

    from kit.batches import BatchBuilder
    from sensorstream.sink.merge import BatchMerger
    from sensorstream.store.db import connect

    settings = make_settings(window="1 minute", allowed_lateness="30 seconds", retention="90 seconds")
    con = connect(settings.db)
    merger = BatchMerger(con, settings, query_name="q/1")
    stop, passes, deleted, errors = threading.Event(), [], [], []

    def retention_loop() -> None:
        while not stop.is_set():
            try:
                result = apply_retention(con, settings.retention, chunk_rows=500, pause=0)
                passes.append(result)
                deleted.append(result.deleted["readings"])
            except Exception as exc:  # the test fails on any, below
                errors.append(exc)
            stop.wait(0.05)

    worker = threading.Thread(target=retention_loop)
    worker.start()
    b, sent, windows = BatchBuilder(), [], defaultdict(list)
    try:
        for batch_id in range(80):  # 2 s of event time per batch, 5 sensors, plus a resent copy
            for i in range(40):
                event = (f"e{batch_id}-{i}", f"s{i % 5}", 2 * batch_id + i / 20, float(i))
                b.event(*event)
                sent.append(event)
            if batch_id:
                b.event(*sent[-45])  # a copy of an event of the previous batch
            merger.merge(batch_id, b.take())
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not errors and sum(deleted) > 0 and len(passes) > 1
    for _event_id, sensor, seconds, value in sent:
        windows[(sensor, int(seconds // 60))].append(value)
    got = {
        (sensor, minute): (count, avg)
        for sensor, minute, count, avg in con.execute(
            "SELECT sensor_id, (epoch(window_start) - epoch(TIMESTAMPTZ '2026-11-26 20:00:00+00')) // 60, "
            "reading_count, avg_value FROM window_stats"
        ).fetchall()
    }
    assert got.keys() == windows.keys()
    for key, values in windows.items():
        assert got[key][0] == len(values) and got[key][1] == pytest.approx(sum(values) / len(values))
    cutoff = event_cutoff(con, settings.retention)
    total, distinct, oldest = con.execute(
        "SELECT count(*), count(DISTINCT event_id), min(event_time) FROM readings"
    ).fetchone()
    assert total == distinct and oldest >= cutoff - timedelta(seconds=settings.retention_interval + 10)
    assert con.execute("SELECT sum(duplicate_rows) FROM pipeline_metrics").fetchone() == (79,)
    con.close()

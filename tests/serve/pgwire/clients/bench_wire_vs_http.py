"""Query latency over the PostgreSQL endpoint vs over the HTTP read API: same store, same queries.

    PYTHONPATH=src python tests/serve/pgwire/clients/bench_wire_vs_http.py [--readings 200000] [--reads 200]

A store prefilled with fake readings, a writer committing a batch every 100 ms, and one client at a
time asking the same SQL through psycopg (extended protocol) and through ``POST /sql`` (httpx);
prints p50 / p99 in milliseconds per query and path. Not a test: numbers for the README.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

from sensorstream.config import load_settings
from sensorstream.serve.api import ReadApi
from sensorstream.serve.pgwire import PgServer
from sensorstream.store.db import connect
from sensorstream.tools.synthetic import FakeBatchWriter

QUERIES = {
    "point (newest batch)": "SELECT max(batch_id) FROM pipeline_metrics",
    "window averages, 1 min buckets": (
        "SELECT floor(extract(epoch from window_start)/60)*60 AS time, sensor_id, avg(avg_value) AS avg_value "
        "FROM window_stats WHERE window_start BETWEEN '2026-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z' "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    ),
    "500 newest readings": "SELECT * FROM readings ORDER BY event_time DESC LIMIT 500",
    "table counts": "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM window_stats)",
}


def _ms(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-wire-"))
    settings = load_settings(data_dir=work, metrics_port=0, api_port=0, pg_port=0)
    con = connect(settings.db)
    writer = FakeBatchWriter(con)
    writer.prefill(args.readings)
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            writer.write_batch()
            stop.wait(0.1)

    api, pg = ReadApi(con, settings).start(), PgServer(con, settings).start()
    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    conninfo = (
        f"host={pg.host} port={pg.port} user={settings.pg_user} password={settings.pg_password} dbname=x"
    )
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn, httpx.Client(base_url=api.url) as http:
            print(f"{args.readings} readings, writer every 100 ms, {args.reads} reads per query and path")
            print(f"{'query':34} {'wire p50':>9} {'wire p99':>9} {'http p50':>9} {'http p99':>9}")
            for name, sql in QUERIES.items():
                wire, rest = [], []
                for _ in range(args.reads):
                    t0 = time.perf_counter()
                    conn.execute(sql).fetchall()
                    wire.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    http.post("/sql", json={"sql": sql}).raise_for_status()
                    rest.append(time.perf_counter() - t0)
                (wp50, wp99), (hp50, hp99) = _ms(wire), _ms(rest)
                print(f"{name:34} {wp50:9.1f} {wp99:9.1f} {hp50:9.1f} {hp99:9.1f}")
    finally:
        stop.set()
        thread.join()
        pg.stop()
        api.stop()
        con.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""A load generator for benchmarks that leaves the cores to the job it measures.

The simulator (``sensorstream produce``) draws every reading in Python: daily cycles, noise,
spikes, a UUID and a JSON document per event. That costs ~60 µs an event, so on two cores shared
with the job it delivers 11-15 K events/s, and a benchmark of the job's sustained rate measured
the simulator instead. Here DuckDB renders each tick's events (valid, in the event format, ids
unique to the run, event time on the wall clock's schedule) in one vectorised query, ~4 µs an
event, and the same idempotent producer as the CLI's sends them: a third of a core at 40 K
events/s over a 20-minute soak (see the README's ``bench-soak``).

It runs as its own process (``python -m sensorstream.tools.bench.load``), as the simulator does,
so its GIL and its CPU are not the job's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import duckdb

from sensorstream.config import Settings
from sensorstream.produce.producer import EventProducer
from sensorstream.tools.synthetic import LEVELS, SENSOR_TYPES, SWINGS

TICK = 0.05  # seconds of event time rendered and sent at once

# One valid event per row, as the producer encodes it (compact JSON, UTC, milliseconds). A reading's
# event time is its place in the schedule, so event time tracks the wall clock at the chosen rate.
_EVENTS_SQL = """
SELECT 'sensor-' || lpad(CAST(s AS VARCHAR), 5, '0') AS key,
       json_object('event_id', $run || '-' || n,
                   'sensor_id', 'sensor-' || lpad(CAST(s AS VARCHAR), 5, '0'),
                   'event_time', strftime($start + to_microseconds(CAST(n * $step_us AS BIGINT)),
                                          '%Y-%m-%dT%H:%M:%S.%gZ'),
                   'value', round(($levels)[1 + s % 4] + ($swings)[1 + s % 4] * sin(n / 7000.0)
                                  + random() - 0.5, 3),
                   'sensor_type', ($types)[1 + s % 4], 'unit', 'u', 'site', 'plant-a')::VARCHAR AS value
FROM (SELECT $first + i AS n, ($first + i) % $sensors AS s FROM range($count) r(i))
"""


class BulkLoad:
    """``rate`` events/s from ``sensors`` sensors round-robin, sent on schedule for ``duration`` s."""

    def __init__(self, client_config: dict, topic: str, rate: float, sensors: int = 1000) -> None:
        if rate <= 0 or sensors < 1:
            raise ValueError("the load needs a rate above 0 and at least one sensor")
        self.rate, self.sensors = rate, sensors
        self.producer = EventProducer(client_config, topic)
        self.run_id = uuid.uuid4().hex[:12]
        self.started = 0.0  # monotonic time the last run began
        # One DuckDB thread: a second would only take a core from the job being measured.
        self.con = duckdb.connect(config={"threads": 1})
        self.con.execute("SET TimeZone = 'UTC'")

    def run(self, duration: float, *, paced: bool = True) -> int:
        """Send ``rate * duration`` events; returns how many were not delivered.

        Event times follow the schedule at ``rate`` from now. ``paced``: each tick is sent when its
        time comes; otherwise as fast as the producer goes (a backlog).
        """
        total = round(self.rate * duration)
        per_tick = max(1, round(self.rate * TICK))
        start, t0 = datetime.now(UTC), time.monotonic()
        self.started = t0
        sent = 0
        while sent < total:
            count = min(per_tick, total - sent)
            # A tick goes out once the last of its event times has come, as from a gateway that
            # batches readings: never before an event happened (that would flatter the latency),
            # at most TICK after (which counts against it).
            due = t0 + (sent + count) / self.rate
            if paced and (delay := due - time.monotonic()) > 0:
                time.sleep(delay)
            rows = self.con.execute(_EVENTS_SQL, {
                "run": self.run_id, "first": sent, "count": count, "sensors": self.sensors,
                "start": start, "step_us": 1e6 / self.rate, "types": list(SENSOR_TYPES),
                "levels": LEVELS, "swings": SWINGS,
            }).fetchall()  # fmt: skip
            for key, value in rows:
                self.producer.send(value.encode(), key.encode())
            sent += count
        return self.producer.flush()

    def close(self) -> None:
        self.con.close()


def load_process(settings: Settings, rate: float, duration: float, sensors: int) -> subprocess.Popen:
    """The load as a child process on ``settings``' broker and topic (see :func:`main`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "sensorstream.tools.bench.load", "--bootstrap-servers", settings.bootstrap_servers,
         "--topic", settings.topic, "--rate", str(rate), "--duration", str(duration), "--sensors", str(sensors)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--sensors", type=int, default=1000)
    args = parser.parse_args(argv)
    load = BulkLoad({"bootstrap.servers": args.bootstrap_servers}, args.topic, args.rate, args.sensors)
    try:
        started = time.monotonic()
        left = load.run(args.duration)
        took = time.monotonic() - started
        cpu = time.process_time()
        print(f"load: {load.producer.sent:,} events in {took:.1f} s ({load.producer.sent / took:,.0f}/s), "
              f"{left} undelivered, {cpu:.1f} s CPU ({cpu / took:.2f} of a core)", file=sys.stderr)  # fmt: skip
        return 1 if left else 0
    finally:
        load.close()


if __name__ == "__main__":
    sys.exit(main())

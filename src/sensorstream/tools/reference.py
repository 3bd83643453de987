"""The reference model: a known event stream, and what the store must hold after it.

One model of the expected result, used by the fault scenarios and by the end-to-end test.

The stream is built so that its correct result does not depend on where micro-batches begin and
end (which a broker outage, a kill or a concurrent producer all change):

* regular readings move forward in event time and are disordered by only a few messages, far
  less than ``ALLOWED_LATENESS``, so no batch boundary can ever make one of them late;
* late readings are minutes behind every regular one and sit in the last tenth of the stream,
  so any batch that holds one follows batches whose events already moved the watermark past it.

:class:`Expectation` computes the result from the raw messages with the plain-Python reference
validator and DuckDB SQL (no Spark, no sink code) and checks that premise itself: it classifies
each event under the most and the least advanced watermark a batch bound allows and refuses a
stream where the two disagree. :meth:`Expectation.compare` then counts lost, duplicated and wrong
rows in a store written by the real job.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from sensorstream.produce import malformed
from sensorstream.produce.messages import DUPLICATE, LATE, MALFORMED, OUT_OF_ORDER, VALID
from sensorstream.produce.simulator import Simulator
from sensorstream.schema import encode, format_time, validate

T0 = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Message:
    key: bytes | None
    value: bytes
    kind: str


@dataclass(frozen=True)
class StreamSpec:
    """``events`` distinct regular readings plus the injected extras (fractions of ``events``)."""

    events: int
    sensors: int = 100
    step_ms: float = 5.0  # event time between consecutive readings, over all sensors
    disorder: float = 0.02  # readings sent up to 8 messages after their successors
    duplicates: float = 0.02  # exact second copies, sent later
    late: float = 0.002  # readings 10-60 minutes behind, in the last tenth of the stream
    malformed: float = 0.0  # broken messages of every dead-letter kind, in turn
    seed: int = 0
    start: datetime = T0


def build(spec: StreamSpec, valid_ranges: dict[str, tuple[float, float]]) -> list[Message]:
    """The messages in send order; the same spec always gives the same bytes."""
    rng = random.Random(spec.seed)
    n = spec.events
    # The regular readings are the simulator's (the one event generator), without its natural
    # spikes and stuck spells: the same sensors, signals and event ids `produce` sends.
    sim = Simulator(
        spec.sensors,
        spec.start,
        spec.step_ms / 1000,
        seed=spec.seed,
        valid_ranges=valid_ranges,
        natural=False,
    )
    readings = [r.event for r in sim.readings(n)]
    # Each message gets a position key; one sort at the end puts the injected ones in place
    # (inserting into a 200K-element list one by one took seconds).
    keyed: list[tuple[float, Message]] = []
    held = set(rng.sample(range(n - 9), round(spec.disorder * n))) if n > 9 else set()
    for i, event in enumerate(readings):
        # Disorder: a held reading goes out behind a few newer ones (milliseconds of event time).
        pos, label = (i + rng.randint(2, 8) + 0.5, OUT_OF_ORDER) if i in held else (float(i), VALID)
        keyed.append((pos, Message(event["sensor_id"].encode(), encode(event), label)))
    for k in range(round(spec.late * n)):
        ts = spec.start - timedelta(seconds=rng.uniform(600, 3600))
        event = {**readings[k % n], "event_id": f"late-{spec.seed}-{k}", "event_time": format_time(ts)}
        keyed.append((rng.uniform(0.9 * n, n), Message(event["sensor_id"].encode(), encode(event), LATE)))
    for pos, msg in rng.sample(keyed[:n], round(spec.duplicates * n)):
        keyed.append((rng.uniform(pos, n), Message(msg.key, msg.value, DUPLICATE)))
    kinds = malformed.kinds_for(valid_ranges)
    for k in range(round(spec.malformed * n)):
        base = {**readings[k % n], "event_id": f"bad-{spec.seed}-{k}", "event_time": format_time(spec.start)}
        raw = malformed.build(kinds[k % len(kinds)], base, rng, valid_ranges).replace(b"\n", b" ")
        keyed.append((rng.uniform(0, n), Message(None, raw, f"{MALFORMED}:{kinds[k % len(kinds)]}")))
    keyed.sort(key=lambda item: item[0])
    return [msg for _, msg in keyed]


def write_jsonl(messages: list[Message], path: Path) -> Path:
    """The replay file for ``produce --file`` (each line verbatim, malformed bytes included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for msg in messages:
            fh.write(msg.value + b"\n")
    return path


@dataclass
class Verdict:
    """What the store holds against what it must hold. Every field after ``dead_expected`` must be 0."""

    events_expected: int
    windows_expected: int
    late_expected: int
    dead_expected: int
    lost: int = 0  # valid events missing from `readings`
    extra: int = 0  # events in `readings` that were never valid input
    duplicated: int = 0  # readings counted more than once (per window) or stored twice
    wrong_windows: int = 0  # windows missing, unexpected, or with other count/avg/min/max
    wrong_late: int = 0  # late_events not equal to the expected late set
    dead_lost: int = 0  # bad messages missing from dead_letters (or under another reason)
    dead_extra: int = 0  # dead letters that were not expected (twice, or a wrong reason)
    dead_kinds: int = 0  # distinct dead-letter reasons stored
    samples: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(
            (
                self.lost,
                self.extra,
                self.duplicated,
                self.wrong_windows,
                self.wrong_late,
                self.dead_lost,
                self.dead_extra,
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


class Expectation:
    """Expected tables for a message list, in an in-memory DuckDB (see the module docstring)."""

    def __init__(
        self,
        messages: list[Message],
        valid_ranges: dict[str, tuple[float, float]],
        *,
        window_s: float = 60.0,
        lateness_s: float = 30.0,
        behind: int = 20_000,
        ahead: int = 1_000,
        batches: list[int] | None = None,
    ) -> None:
        """How far batches can move the watermark against send order, in messages: the batches
        before a message end at most ``behind`` messages earlier (a batch's size plus partition
        skew) and reach at most ``ahead`` messages later (partition skew: a stalled partition, a
        prorated batch). The expected result must be the same anywhere within these bounds.

        ``batches``: the message counts of consecutive micro-batches, for a caller that controls
        them exactly (a test that sends one phase, waits until it is committed, then the next);
        the watermark then moves only between them, and ``behind``/``ahead`` are not used."""
        self.messages = messages
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        cols: dict[str, list[Any]] = {
            k: [] for k in ("raw", "error", "event_id", "sensor_id", "event_time", "value")
        }
        for msg in messages:
            event, error = validate(msg.value, valid_ranges)
            cols["raw"].append(msg.value)
            cols["error"].append(error)
            for key in ("event_id", "sensor_id", "event_time"):
                cols[key].append(event[key] if event else None)
            cols["value"].append(float(event["value"]) if event else None)
        # Arrow, not executemany: a row-by-row insert of 200K messages took minutes.
        table = pa.table(
            {"seq": pa.array(range(len(messages)), pa.int64()), "batch_no": pa.array(_batch_numbers(len(messages), batches), pa.int64()), **{k: cols[k] for k in ("event_id", "sensor_id", "event_time", "error")},
             "value": pa.array(cols["value"], pa.float64()), "raw": pa.array(cols["raw"], pa.binary())}
        )  # fmt: skip
        self.con.register("input_arrow", table)
        self.con.execute("CREATE TABLE input AS SELECT * FROM input_arrow")
        self.con.unregister("input_arrow")
        w_us, l_us = round(window_s * 1e6), round(lateness_s * 1e6)
        if batches is not None:  # exact: the newest event time of all earlier batches
            lo_max = hi_max = (
                "max(event_time) OVER (ORDER BY batch_no RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
            )
        else:
            lo_max = f"max(event_time) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND {int(behind)} PRECEDING)"
            hi_max = f"max(event_time) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND {int(ahead)} FOLLOWING)"
        self.con.execute(
            f"""
            CREATE TABLE events AS
            SELECT seq, batch_no, event_id, sensor_id, event_time::TIMESTAMPTZ AS event_time, value,
                   time_bucket(to_microseconds({w_us}), event_time::TIMESTAMPTZ,
                               TIMESTAMPTZ '1970-01-01 00:00:00+00') AS window_start
            FROM input WHERE error IS NULL
            QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY seq) = 1;
            CREATE TABLE classified AS
            SELECT *, window_start + to_microseconds({w_us}) <= coalesce({lo_max}, TIMESTAMPTZ 'epoch')
                          - to_microseconds({l_us}) AS late_lo,
                      window_start + to_microseconds({w_us}) <= coalesce({hi_max}, TIMESTAMPTZ 'epoch')
                          - to_microseconds({l_us}) AS late_hi
            FROM events;
            CREATE TABLE expected_windows AS
            SELECT sensor_id, window_start, count(*) AS reading_count, avg(value) AS avg_value,
                   min(value) AS min_value, max(value) AS max_value
            FROM classified WHERE NOT late_lo GROUP BY ALL;
            CREATE TABLE expected_dead AS SELECT raw, error, count(*) AS n FROM input WHERE error IS NOT NULL GROUP BY ALL;
            """
        )
        ambiguous = self.con.execute("SELECT count(*) FROM classified WHERE late_lo <> late_hi").fetchone()[0]
        if ambiguous:
            raise ValueError(
                f"{ambiguous} event(s) would be late or not depending on batch boundaries; the stream "
                "is not a fair test (less disorder, or late events further behind)"
            )

    def counts(self) -> dict[str, int]:
        row = self.con.execute(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM expected_windows), "
            "(SELECT count(*) FILTER (WHERE late_lo) FROM classified), (SELECT coalesce(sum(n), 0) FROM expected_dead)"
        ).fetchone()
        return dict(zip(("events", "windows", "late", "dead"), (int(v) for v in row), strict=True))

    def compare(self, db: Path) -> Verdict:
        """Open the job's store read-only (the job must have stopped) and count every difference."""
        c = self.counts()
        v = Verdict(c["events"], c["windows"], c["late"], c["dead"])
        con = self.con
        con.execute(f"ATTACH '{Path(db).resolve()}' AS store (READ_ONLY)")
        try:
            q = lambda sql: con.execute(sql).fetchone()[0] or 0  # noqa: E731 - one-line SQL counts
            v.lost = q("SELECT count(*) FROM events e ANTI JOIN store.readings r USING (event_id)")
            v.extra = q("SELECT count(*) FROM store.readings r ANTI JOIN events e USING (event_id)")
            stored_twice = q("SELECT count(*) - count(DISTINCT event_id) FROM store.readings")
            counted_twice = q(
                "SELECT sum(greatest(g.reading_count - x.reading_count, 0)) FROM store.window_stats g "
                "JOIN expected_windows x USING (sensor_id, window_start)"
            )
            v.duplicated = stored_twice + counted_twice
            v.wrong_windows = q(
                """
                SELECT count(*) FROM expected_windows x FULL JOIN store.window_stats g USING (sensor_id, window_start)
                WHERE x.reading_count IS DISTINCT FROM g.reading_count
                   OR abs(x.avg_value - g.avg_value) > 1e-9 * greatest(1, abs(x.avg_value))
                   OR x.min_value IS DISTINCT FROM g.min_value OR x.max_value IS DISTINCT FROM g.max_value
                   OR x.avg_value IS NULL OR g.avg_value IS NULL
                """
            )
            v.wrong_late = q(
                """
                SELECT count(*) FROM (SELECT event_id FROM classified WHERE late_lo) x
                FULL JOIN store.late_events g USING (event_id) WHERE x.event_id IS NULL OR g.event_id IS NULL
                """
            )
            dead = """
                SELECT coalesce(x.n, 0) AS want, coalesce(g.n, 0) AS got, coalesce(x.error, g.error) AS error
                FROM expected_dead x FULL JOIN (
                    SELECT raw_value AS raw, error, count(*) AS n FROM store.dead_letters GROUP BY ALL
                ) g ON x.raw = g.raw AND x.error = g.error
            """
            v.dead_lost = q(f"SELECT sum(greatest(want - got, 0)) FROM ({dead})")
            v.dead_extra = q(f"SELECT sum(greatest(got - want, 0)) FROM ({dead})")
            v.dead_kinds = q("SELECT count(DISTINCT error) FROM store.dead_letters")
            v.samples = {
                "lost": [r[0] for r in con.execute(
                    "SELECT event_id FROM events ANTI JOIN store.readings USING (event_id) LIMIT 5").fetchall()],
                "dead_mismatch": [r[2] for r in con.execute(f"SELECT * FROM ({dead}) WHERE want <> got LIMIT 5").fetchall()],
            }  # fmt: skip
        finally:
            con.execute("DETACH store")
        return v


def _batch_numbers(n: int, batches: list[int] | None) -> list[int]:
    if batches is None:
        return [0] * n
    if sum(batches) != n:
        raise ValueError(f"batches {batches} hold {sum(batches)} messages, not the {n} given")
    return [i for i, size in enumerate(batches) for _ in range(size)]


def topic_check(messages: list[Message], in_topic: Counter[bytes]) -> dict[str, int]:
    """The topic against what was sent: each message exactly as often as it was sent (idempotence)."""
    sent = Counter(m.value for m in messages)
    return {
        "sent": sum(sent.values()),
        "in_topic": sum(in_topic.values()),
        "topic_lost": sum((sent - in_topic).values()),
        "topic_doubled": sum((in_topic - sent).values()),
    }

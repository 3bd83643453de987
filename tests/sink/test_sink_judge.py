"""How readings are judged: each sensor against its own recent readings, whatever its rate.

Every test merges real batches into a real DuckDB file and reads `anomalies` and `sensor_state`
as a user of the store would.
"""

from __future__ import annotations

import itertools
import random

import pytest

from kit.batches import BatchBuilder

ids = itertools.count()


def feed(merger, values, *, start=0.0, every=1.0, sensor="s1", per_batch=10, batch_id=None):
    """Merge ``values`` as readings ``every`` seconds apart, ``per_batch`` readings per batch."""
    b = BatchBuilder()
    next_batch = batch_id if batch_id is not None else merger.next_batch_id
    for i, value in enumerate(values):
        b.event(f"e{next(ids)}", sensor, start + i * every, value)
        if (i + 1) % per_batch == 0 or i == len(values) - 1:
            merger.merge(next_batch, b.take())
            next_batch += 1
    merger.next_batch_id = next_batch
    return start + len(values) * every


def noise(n, mean=20.0, sigma=0.3, seed=1):
    rng = random.Random(seed)
    return [round(rng.gauss(mean, sigma), 3) for _ in range(n)]


def anomalies(con):
    return con.execute("SELECT rule, value FROM anomalies ORDER BY event_time").fetchall()


def state(con, sensor="s1"):
    cols = ("state", "rule", "rule_value", "expected_low", "expected_high", "since", "baseline_readings")
    row = con.execute(f"SELECT {', '.join(cols)} FROM sensor_state WHERE sensor_id = ?", [sensor]).fetchone()
    return dict(zip(cols, row, strict=True))


@pytest.fixture(autouse=True)
def _batch_ids(store):
    store[0].next_batch_id = 0


def test_quiet_noise_raises_nothing(store):
    merger, con = store
    feed(merger, noise(5000), per_batch=250)
    assert anomalies(con) == []
    assert state(con)["state"] == "ok" and state(con)["baseline_readings"] == 5000


def test_no_zscore_verdict_during_the_warm_up(store):
    merger, con = store
    # 20 readings: fewer than ANOMALY_WARMUP (30), so a jump is not judged by the z-score yet.
    t = feed(merger, noise(20))
    feed(merger, [35.0], start=t)
    assert anomalies(con) == []


def test_a_spike_is_flagged_with_why_and_does_not_teach_the_baseline(store):
    merger, con = store
    t = feed(merger, noise(200), per_batch=50)
    before = con.execute("SELECT baseline_mean, baseline_variance FROM sensor_state").fetchone()
    t = feed(merger, [35.0], start=t)
    assert anomalies(con) == [("zscore", 35.0)]
    why = state(con)
    assert why["state"] == "anomaly" and why["rule"] == "zscore" and why["rule_value"] == 35.0
    # The expected range is the baseline's mean +- 4 sigma: around 20 +- 1.2.
    assert 18 < why["expected_low"] < 19.5 and 20.5 < why["expected_high"] < 22
    assert con.execute("SELECT baseline_mean, baseline_variance FROM sensor_state").fetchone() == before
    # Ten normal readings later the state clears; the reason stays readable.
    feed(merger, noise(10, seed=2), start=t)
    assert state(con)["state"] == "ok" and state(con)["rule"] == "zscore"


def test_a_sensor_that_reports_once_a_minute_is_judged(store):
    merger, con = store
    # One reading per 1-minute window: no window ever has a spread, the sensor's own readings do.
    t = feed(merger, noise(40), every=60, per_batch=1)
    feed(merger, [26.0], start=t, every=60, per_batch=1)
    assert anomalies(con) == [("zscore", 26.0)]


def test_a_stuck_sensor_is_flagged_once_when_it_sticks_across_batches(store):
    merger, con = store
    t = feed(merger, noise(100), per_batch=50)
    # 25 identical readings over 3 batches: one `stuck` row at the 10th, the state holds meanwhile.
    t = feed(merger, [20.123] * 25, start=t, per_batch=8)
    assert anomalies(con) == [("stuck", 20.123)]
    assert state(con)["state"] == "anomaly" and state(con)["rule"] == "stuck"
    feed(merger, noise(12, seed=3), start=t)
    assert state(con)["state"] == "ok"


def test_a_slow_drift_is_flagged_before_the_zscore_would_see_it(store):
    merger, con = store
    t = feed(merger, noise(300), per_batch=50)
    # A shift of 1.5 sigma that stays: each reading alone is unremarkable (z ~ 1.5), together
    # they are a drift.
    shifted = [v + 0.45 for v in noise(60, seed=4)]
    feed(merger, shifted, start=t)
    rules = [rule for rule, _ in anomalies(con)]
    assert rules == ["drift"]
    assert state(con)["rule"] == "drift"


def test_a_new_level_is_learnt_after_relearn_readings(store, make_settings):
    merger, con = store
    t = feed(merger, noise(100), per_batch=50)
    # The sensor moves to 30 for good: flagged at first, then (ANOMALY_RELEARN_READINGS = 300) its
    # baseline starts again at the new level, and it is judged against that.
    t = feed(merger, noise(330, mean=30.0, seed=5), start=t, per_batch=50)
    after = state(con)
    assert after["baseline_readings"] < 100
    assert con.execute("SELECT relearned_at IS NOT NULL FROM sensor_state").fetchone()[0]
    flagged = len(anomalies(con))
    feed(merger, noise(200, mean=30.0, seed=6), start=t, per_batch=50)
    assert len(anomalies(con)) == flagged and state(con)["state"] == "ok"


def test_a_replayed_batch_changes_no_state(store):
    merger, con = store
    b = BatchBuilder()
    for i, v in enumerate(noise(50)):
        b.event(f"r{i}", "s1", i, v)
    batch = b.take()
    merger.merge(0, batch)
    once = con.execute("SELECT * EXCLUDE (updated_at) FROM sensor_state").fetchall()
    merger.merge(0, batch)
    assert con.execute("SELECT * EXCLUDE (updated_at) FROM sensor_state").fetchall() == once

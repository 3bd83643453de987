"""The soak benchmark's own parts: a pre-filled store takes real batches exactly; the verdict's rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sensorstream.store.db import connect
from sensorstream.tools.bench.soak import sink_batches, verdict
from sensorstream.tools.synthetic import prefill


def test_a_prefilled_store_takes_batches_and_finds_every_copy_even_hours_old(make_settings):
    settings = make_settings()
    con = connect(settings.db)
    try:
        prefill(con, 50_000, datetime.now(UTC) - timedelta(minutes=2), sensors=100)
        assert con.execute("SELECT count(*), count(DISTINCT event_id) FROM readings").fetchone() == (
            50_000,
            50_000,
        )
        assert con.execute("SELECT bool_and(is_final), sum(reading_count) FROM window_stats").fetchone() == (
            True,
            50_000,
        )
        figures = sink_batches(con, settings, batches=4, events=2_000, sensors=100)
        # 1 % copies of the previous batch (batches 1-3) and 1 per 2,000 copies of hours-old readings.
        assert figures.duplicates == 3 * 20 + 4 * 1
        assert figures.late == 4 * 2  # 0.1 % an hour behind: their windows are final
        total, distinct = con.execute("SELECT count(*), count(DISTINCT event_id) FROM readings").fetchone()
        assert total == distinct == 50_000 + 4 * 2_000 - 3 * 20
    finally:
        con.close()


def _samples(lag_per_s: float, file_mb_per_s: float) -> list[dict]:
    return [
        {"t": t, "consumer_lag": 1000 + lag_per_s * t, "file_mb": 50 + file_mb_per_s * t, "python_rss_mb": 300,
         "jvm_rss_mb": 700}
        for t in range(0, 600, 10)
    ]  # fmt: skip


def test_steady_state_means_a_flat_lag_and_the_verdict_says_how_sizes_move():
    flat = verdict(_samples(lag_per_s=5, file_mb_per_s=0), rate=1000)
    assert flat["lag_flat"] and flat["file_mb_per_min"] == 0 and flat["python_rss_mb_per_min"] == 0
    growing = verdict(_samples(lag_per_s=50, file_mb_per_s=0.1), rate=1000)
    assert not growing["lag_flat"] and round(growing["file_mb_per_min"], 6) == 6.0

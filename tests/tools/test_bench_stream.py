"""The stream and scale benchmarks measure a real run and draw what they measured.

The numbers themselves belong in the README, not here: these tests check that a short run
produces a report whose figures agree with each other, and plots a reader can open.
"""

from __future__ import annotations

import json

import pytest

from kit.batches import BatchBuilder
from sensorstream.serve.client import StoreClient
from sensorstream.sink.merge import BatchMerger
from sensorstream.store.db import connect
from sensorstream.tools.bench.plots import plot_scale, plot_stream
from sensorstream.tools.bench.scale import BASELINE, run_scale_bench, scale_points
from sensorstream.tools.bench.stream import (
    _batches,
    _stages,
    kept_up,
    lag_growth,
    last_commit,
    latency_figures,
    run_stream_bench,
)

PNG = b"\x89PNG\r\n\x1a\n"


def test_scale_points_change_one_setting_at_a_time_from_the_baseline():
    points = scale_points(
        {"cores": ["local[1]", "local[2]"], "partitions": [1, 3, 6], "sensors": [100, 100_000]}
    )
    assert [(p["axis"], p["label"]) for p in points] == [
        ("cores", "local[1]"), ("cores", "local[2]"),
        ("partitions", "1"), ("partitions", "3"), ("partitions", "6"),
        ("sensors", "100"), ("sensors", "100,000"),
    ]  # fmt: skip
    for p in points:
        differs = {k for k in BASELINE if p[k] != BASELINE[k]}
        assert differs <= {p["axis"]}


def _lags(*lags: int) -> list[dict]:
    return [{"t": float(t), "consumer_lag": lag} for t, lag in enumerate(lags)]


def test_lag_growth_is_the_trend_of_the_lag_not_its_noise():
    assert lag_growth(_lags(5000, 9000, 4000, 8000, 5000, 9000)) == pytest.approx(200, abs=300)
    assert lag_growth(_lags(10_000, 20_000, 30_000, 40_000)) == pytest.approx(10_000)
    assert lag_growth(_lags(100, 200)) == 0.0  # too few batches to call a trend


def test_a_phase_is_kept_up_only_when_its_lag_does_not_grow():
    steady = {"produced_per_second": 10_000, "lag_growth_per_second": 50, "lag_at_end": 12_000}
    assert kept_up(steady, trigger_s=1.0)
    # 4 % of the input piling up each second: the job falls behind, slowly but for good.
    assert not kept_up({**steady, "lag_growth_per_second": 400}, trigger_s=1.0)
    # A flat trend but a big backlog at the end (the producer outran it from the start).
    assert not kept_up({**steady, "lag_at_end": 40_000}, trigger_s=1.0)


def _phase(rate: float, t0: float) -> dict:
    batches = [
        {"t": t0 + i, "input_rows": int(rate), "latency_p50_ms": 900.0 + i, "latency_p95_ms": 1500.0,
         "latency_max_ms": 2100.0, "consumer_lag": 10 * i}
        for i in range(10)
    ]  # fmt: skip
    return {"rate": rate, "produced": int(rate * 10), "produced_per_second": int(rate), "lag_at_end": 50,
            "p99_ms": 1900.0, "batches": batches}  # fmt: skip


def _merge(settings, query_name: str, batches: list[int]) -> None:
    """Batches 0, 1, ... of one query through the real sink, ``batches[i]`` events in batch i."""
    con = connect(settings.db)
    try:
        merger, b = BatchMerger(con, settings, query_name=query_name), BatchBuilder()
        for batch_id, events in enumerate(batches):
            for i in range(events):
                b.event(f"{query_name}-{batch_id}-{i}", "s1", 10 * batch_id + i, 1.0)
            merger.merge(batch_id, b.take())
    finally:
        con.close()  # the client below reads the file


def test_a_run_is_the_batches_committed_after_it_began_when_queries_share_batch_ids(make_settings):
    settings = make_settings(window="1 minute", allowed_lateness="1 hour")
    _merge(settings, "q/1", [1, 2])
    with StoreClient(settings) as client:
        since = last_commit(client)
        assert since > 0
        _merge(settings, "q/2", [3, 4])  # a reset checkpoint: batch ids 0 and 1 again
        # Each reading joins its own batch's commit once: 10 events in all, 7 of them in the run.
        assert latency_figures(client, 0)["events"] == 10
        assert latency_figures(client, since)["events"] == 7
        assert _stages(client, since)["batches"] == 2
        assert [(r["batch_id"], r["input_rows"]) for r in _batches(client, since, 0.0)] == [(0, 3), (1, 4)]


def test_plots_are_drawn_from_a_report_alone(tmp_path):
    stream = {"settings": {"spark_master": "local[2]", "partitions": 3, "trigger_s": 1.0}, "sensors": 100,
              "drain": {"events_per_second": 26_000}, "rates": [_phase(1000, 0), _phase(5000, 15)]}  # fmt: skip
    paths = plot_stream(stream, tmp_path)
    scale = {"events": 1000, "points": [
        {"axis": "cores", "label": "local[1]", "events_per_second": 14_000},
        {"axis": "cores", "label": "local[2]", "events_per_second": 25_000},
        {"axis": "sensors", "label": "100,000", "events_per_second": 9_000},
    ]}  # fmt: skip
    paths.append(plot_scale(scale, tmp_path / "scale.png"))
    assert [p.name for p in paths] == ["stream-latency.png", "stream-throughput.png", "scale.png"]
    for path in paths:
        assert path.read_bytes().startswith(PNG)
        assert path.stat().st_size > 10_000  # axes, lines and labels, not an empty canvas


@pytest.mark.integration
@pytest.mark.slow
def test_stream_bench_drains_then_holds_a_rate_and_accounts_for_every_event(
    kafka, spark, make_settings, tmp_path
):
    report = tmp_path / "reports" / "bench-stream.json"
    result = run_stream_bench(
        make_settings(), bootstrap_servers=kafka.bootstrap_servers, events=3000, rates=(400,), duration=4,
        sensors=20, report=report, warm_up_s=2,  # the phase's figures are checked, not their level
    )  # fmt: skip
    assert json.loads(report.read_text())["drain"] == result["drain"]
    assert result["drain"]["events"] == 3000 and result["drain"]["events_per_second"] > 0

    (phase,) = result["rates"]
    # Every event the producer wrote in the phase went through one of the phase's batches.
    assert phase["produced"] > 0
    assert sum(b["input_rows"] for b in phase["batches"]) == phase["produced"]
    # Whether a 4 s phase "kept up" is noise on a busy CI machine; that the verdict follows the
    # rule from the phase's own figures, and the sustained rate from the verdict, is not.
    assert phase["kept_up"] == kept_up(phase, trigger_s=1.0)
    sustained = min(phase["rate"], phase["produced_per_second"]) if phase["kept_up"] else 0
    assert result["sustained_events_per_second"] == sustained
    assert 0 < phase["p50_ms"] <= phase["p99_ms"] < 60_000
    assert [b["t"] for b in phase["batches"]] == sorted(b["t"] for b in phase["batches"])
    for name in ("stream-latency.png", "stream-throughput.png"):
        assert (report.parent / name).read_bytes().startswith(PNG)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.spark  # the point runs in a child process with its own SparkSession
def test_a_scale_point_runs_in_its_own_process_with_the_setting_it_claims(kafka, make_settings, tmp_path):
    report = tmp_path / "bench-scale.json"
    result = run_scale_bench(
        make_settings(), bootstrap_servers=kafka.bootstrap_servers, events=2000, axes={"partitions": [1]},
        report=report,
    )  # fmt: skip
    (point,) = result["points"]
    # The child's own report said it ran with one partition (run_scale_bench checks it too).
    assert point["partitions"] == 1 and point["cores"] == BASELINE["cores"]
    assert point["events_per_second"] > 0 and point["batches"] >= 1
    assert (tmp_path / "scale.png").read_bytes().startswith(PNG)

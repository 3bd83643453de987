"""The unchanged job on a Spark standalone cluster (master + 2 workers, 1 core each) from the
pyspark install: the store equals the expectation computed without Spark, and the app really ran
on both workers."""

from __future__ import annotations

import pytest

from sensorstream.tools.faults import cluster_run
from sensorstream.tools.faults.scenario import FaultOptions

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.spark]


def test_job_on_a_standalone_cluster_matches_the_expectation(make_settings, tmp_path, kafka):
    opts = FaultOptions(
        make_settings(), quick=True, events=8_000, workdir=tmp_path, bootstrap=kafka.bootstrap_servers
    )
    result = cluster_run.run(opts)
    assert result.error is None, result.error
    v = result.verdict
    assert v is not None and v.events_expected > 0 and v.late_expected > 0 and v.dead_expected > 0
    assert (v.lost, v.extra, v.duplicated, v.wrong_windows, v.wrong_late, v.dead_lost, v.dead_extra) == (
        0,
    ) * 7, v
    assert result.numbers["app_cores"] == 2 and result.numbers["executor_dirs"] >= 2, result.numbers
    assert all(result.checks.values()), result.checks

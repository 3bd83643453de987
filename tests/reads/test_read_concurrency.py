"""A reader PROCESS hammers the API while the writer commits a batch every 100 ms.

Each table_counts answer is one MVCC snapshot, so it must show whole batches only: every fake
batch writes 100 readings, one pipeline_metrics row and one sink_commits row together.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from kit.store import serving, store_settings, writer_store
from sensorstream.tools.reader import ReaderProcess


@pytest.mark.slow
def test_a_reader_process_sees_whole_batches_and_steady_progress(make_settings, tmp_path):
    settings = store_settings(make_settings)
    stop = threading.Event()
    committed: list[int] = []

    with writer_store(settings, batches=1) as (con, writer), serving(con, settings) as api:

        def write_every_100_ms() -> None:
            while not stop.is_set():
                started = time.monotonic()
                committed.append(writer.write_batch()["batch_id"])
                stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))

        thread = threading.Thread(target=write_every_100_ms)
        thread.start()
        try:
            reader = ReaderProcess(
                api.url, tmp_path / "reader.json", "--mix", "table_counts", "--reads", "1000"
            )
            result = reader.wait(timeout=300)
        finally:
            stop.set()
            thread.join()

    assert result["failures"] == [] and result["busy"] == 0
    seen = result["counts"]
    assert len(seen) == 1000
    for earlier, later in itertools.pairwise(seen):
        assert all(later[t] >= earlier[t] for t in earlier), (earlier, later)  # never goes back
    for counts in seen:  # whole batches only
        assert counts["readings"] == 100 * counts["pipeline_metrics"] == 100 * counts["sink_commits"]
    assert seen[-1]["pipeline_metrics"] - seen[0]["pipeline_metrics"] >= 10  # the writer kept going
    assert len(committed) >= 10

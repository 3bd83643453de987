"""`sensorstream stream`: open the store, start its services, run the job until told to stop."""

from __future__ import annotations

import logging
from contextlib import ExitStack

from sensorstream.config import Settings
from sensorstream.sink.merge import BatchMerger
from sensorstream.store.db import connect

log = logging.getLogger(__name__)


def run_stream(settings: Settings, timeout: float | None = None, until_idle: bool = False) -> None:
    """Run the streaming job in this process (the store's single writer) until SIGINT/SIGTERM.

    ``until_idle`` stops once the job has caught up with the topic (a backfill, or a test).
    """
    from sensorstream.stream.job import StreamJob
    from sensorstream.stream.session import build_session

    with ExitStack() as stack:
        # Open the store first: a locked or incompatible file should fail before Spark starts.
        con = connect(settings.db)
        stack.callback(con.close)
        spark = build_session(settings)
        job = StreamJob(spark, settings, BatchMerger(con, settings))
        for service in _services(con, settings, job):
            service.start()
            stack.callback(service.stop)
        job.start()
        if until_idle:
            job.wait_idle(timeout=timeout or 3600)
            job.stop()
        else:
            job.run_until_stopped(timeout=timeout)


def _services(con, settings: Settings, job) -> list:
    """Things that live beside the job in the writer's process (read API, metrics, retention)."""
    return []

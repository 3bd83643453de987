"""`sensorstream stream`: open the store, start its services, run the job until told to stop."""

from __future__ import annotations

import logging
from contextlib import ExitStack

from sensorstream.config import Settings
from sensorstream.sink.merge import BatchMerger
from sensorstream.store.db import connect

log = logging.getLogger(__name__)


class StreamRuntime:
    """The writer's process: store connection, Spark job, read API, monitoring; stopped in reverse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stack = ExitStack()
        self.job = None
        self.store_service = None
        self.monitor = None

    def start(self) -> StreamRuntime:
        from sensorstream.monitor.service import MonitorService
        from sensorstream.store.service import StoreService
        from sensorstream.stream.job import StreamJob
        from sensorstream.stream.session import build_session

        try:
            # Open the store first: a locked or incompatible file should fail before Spark starts.
            self.con = connect(self.settings.db)
            self._stack.callback(self.con.close)
            spark = build_session(self.settings)
            self.job = StreamJob(spark, self.settings, BatchMerger(self.con, self.settings))
            self.store_service = StoreService(self.con, self.settings).start()
            self._stack.callback(self.store_service.stop)
            self.monitor = MonitorService(self.con, self.settings, self.job).start()
            self._stack.callback(self.monitor.stop)
            self.job.start()
            self._stack.callback(self.job.stop)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stack.close()

    def __enter__(self) -> StreamRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_stream(settings: Settings, timeout: float | None = None, until_idle: bool = False) -> None:
    """Run the streaming job in this process (the store's single writer) until SIGINT/SIGTERM.

    ``until_idle`` stops once the job has caught up with the topic (a backfill, or a test).
    """
    with StreamRuntime(settings) as runtime:
        if until_idle:
            runtime.job.wait_idle(timeout=timeout or 3600)
        else:
            runtime.job.run_until_stopped(timeout=timeout)

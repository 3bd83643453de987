"""`sensorstream stream`: open the store, start its services, run the job until told to stop.

Stopping (see ``sensorstream.stopping``): the first SIGINT/SIGTERM lets the batch in flight
commit, refuses the next one, drains the read API and exits 0; a second one exits at once (the
batch in flight is rolled back with the process and replayed on restart, so the tables stay exact).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack

from sensorstream.config import Settings
from sensorstream.kafka.topics import require_topic
from sensorstream.sink.merge import BatchMerger
from sensorstream.stopping import StopSignals, exit_now
from sensorstream.store.db import connect
from sensorstream.stream.spark import begin_jvm_shutdown, kill_jvm, quiet_py4j_failures, wait_jvm

log = logging.getLogger(__name__)

# What a stop aims for, from the signal to our exit: the 5 s every command stops within (README,
# "Stopping and exit codes") less room for a supervisor (`run`) to pass the signal on and see us go. The JVM's own shutdown is waited for only within it;
# when it takes longer (a busy machine) it removes its temp dirs and exits by itself.
STOP_BUDGET = 3.5
JVM_EXIT_WAIT = 10.0  # after an end without a signal (--until-idle, --timeout)


class StartAborted(Exception):
    """A stop was requested while the job was starting; what had started is stopped again."""


class StreamRuntime:
    """The writer's process: store connection, Spark job, read API, monitoring; stopped in reverse."""

    def __init__(self, settings: Settings, stop: StopSignals | None = None, own_jvm: bool = False) -> None:
        """``own_jvm``: this process ends after the runtime, so the Spark JVM is told to exit as soon
        as nothing needs it, and its shutdown overlaps the store's (a command, not a test)."""
        self.settings = settings
        self.stop_signals = stop
        self.own_jvm = own_jvm
        self._stack = ExitStack()
        self.job = None
        self.store_service = None
        self.monitor = None

    def _check(self) -> None:
        # Start-up takes seconds (the JVM, the first Kafka metadata); a stop asked for meanwhile
        # is honoured between steps instead of after the whole start.
        if self.stop_signals is not None and self.stop_signals.requested.is_set():
            raise StartAborted

    def start(self) -> StreamRuntime:
        from sensorstream.monitor.service import MonitorService
        from sensorstream.serve.store_service import StoreService
        from sensorstream.stream.job import StreamJob
        from sensorstream.stream.spark import build_session

        try:
            # Open the store first: a locked or incompatible file should fail before Spark starts.
            self.con = connect(self.settings.db, threads=self.settings.db_threads)
            self._stack.callback(self.con.close)
            # Then the topic: Spark's source would wait for a missing one (or a broker that does not
            # answer) for ever; this says so in one sentence within seconds.
            require_topic(self.settings.kafka_client_config, self.settings.topic)
            self._check()
            spark = build_session(self.settings)
            self._check()
            self.job = StreamJob(spark, self.settings, BatchMerger(self.con, self.settings))
            self.store_service = StoreService(self.con, self.settings).start()
            self._stack.callback(self.store_service.stop)
            # First of the observers: a due checkpoint starts as soon as the batch has committed.
            self.job.on_batch.insert(0, self.store_service.checkpointer.after_batch)
            if self.own_jvm:
                # Unwound after the query and the monitor's listener stopped, before the read API
                # drains: nothing calls into the JVM any more, so it may go.
                self._stack.callback(begin_jvm_shutdown)
            self.monitor = MonitorService(self.con, self.settings, self.job).start()
            self._stack.callback(self.monitor.stop)
            self._check()
            self.job.start()
            self._stack.callback(self.job.stop)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.own_jvm:
            quiet_py4j_failures()  # this process is ending: the JVM may go before the last call
        self._stack.close()

    def __enter__(self) -> StreamRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _exit_now() -> None:
    """The second signal: leave now. DuckDB rolls the open transaction back, Spark replays the batch."""
    kill_jvm()
    exit_now(0)


def run_stream(settings: Settings, timeout: float | None = None, until_idle: bool = False) -> None:
    """Run the streaming job in this process (the store's single writer) until SIGINT/SIGTERM.

    ``until_idle`` stops once the job has caught up with the topic (a backfill, or a test).
    """
    with StopSignals("the stream after the batch in flight", on_fast=_exit_now) as stop:
        try:
            with StreamRuntime(settings, stop, own_jvm=True) as runtime:
                if until_idle:
                    runtime.job.wait_idle(timeout=timeout or 3600, stop=stop.requested)
                else:
                    runtime.job.run_until_stopped(stop.requested, timeout=timeout)
        except StartAborted:
            log.info("stopped during start-up")
        finally:
            # This process is about to exit: the JVM goes with it (it may be shutting down already).
            begin_jvm_shutdown()
            wait = STOP_BUDGET - stop.elapsed() if stop.requested.is_set() else JVM_EXIT_WAIT
            if not wait_jvm(max(wait, 0.5)):
                log.info("the Spark JVM is still removing its temp files; it exits by itself")
        if stop.requested.is_set():
            log.info("stream stopped on %s in %.1f s", stop.received, stop.elapsed())

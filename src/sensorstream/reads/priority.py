"""The readers' CPU priority: below the writer's, so a busy core serves the stream first."""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import suppress

log = logging.getLogger(__name__)

READ_NICE = 10  # how much lower the readers' CPU priority is than the writer's (Linux nice steps)


def lower_priority() -> None:
    """Lower this thread's CPU priority (Linux: nice is per thread), so a busy core serves the writer.

    Only on Linux, where a thread id is a valid ``setpriority`` target; it cannot be raised again
    without privileges, which is why the readers have threads of their own.
    """
    if sys.platform == "linux":
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), READ_NICE)
        except OSError as exc:
            log.debug("could not lower the read thread's priority: %s", exc)


def idle_priority() -> None:
    """Run this thread only on CPU time nobody else wants (Linux ``SCHED_IDLE``; else nice 19).

    For ad-hoc SQL, which anyone on the machine can send as fast as they like: measured with the
    readers at nice 10, a hostile reader's requests still took a third of a core each in the API's
    process and in these threads, and on two cores the stream's batches took 1.7x as long. An idle
    thread gets a core only when no normal thread wants it, so the writer keeps its pace and the
    reader answers as fast as the machine's spare time allows. Named queries (the dashboard) stay
    on threads at ``READ_NICE``: they still answer while a backlog keeps the cores busy.
    """
    if sys.platform != "linux":
        return
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError) as exc:
        log.debug("no SCHED_IDLE for the read thread (%s); nice 19 instead", exc)
        with suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)

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


IDLE_NICE = 19  # where SCHED_IDLE is not there: the lowest ordinary priority


def idle_priority(tid: int | None = None) -> None:
    """Run thread ``tid`` (this one by default) only on CPU time nobody else wants.

    Linux ``SCHED_IDLE``: the thread gets a core only when no ordinary thread wants it, and an
    ordinary thread that wakes up takes the core from it at once; nice 19 where that is refused,
    nothing elsewhere than Linux (there a thread id is no ``setpriority`` target).

    For ad-hoc SQL, which anyone on the machine can send as fast as they like: measured with the
    readers at nice 10, a hostile reader's requests still took a third of a core each in the API's
    process and in these threads, and on two cores the stream's batches took 1.7x as long. An idle
    thread gets a core only when no normal thread wants it, so the writer keeps its pace and the
    reader answers as fast as the machine's spare time allows. Named queries (the dashboard) stay
    on threads at ``READ_NICE``: they still answer while a backlog keeps the cores busy.
    """
    if sys.platform != "linux":
        return
    tid = threading.get_native_id() if tid is None else tid
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except OSError as exc:
        log.debug("no SCHED_IDLE for thread %s (%s); nice %d instead", tid, exc, IDLE_NICE)
        with suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, IDLE_NICE)


def idle_process() -> None:
    """:func:`idle_priority` for every thread of this process, and so for every thread it starts
    later (a new thread inherits its creator's policy); nice 19 for the process elsewhere."""
    if sys.platform != "linux":
        with suppress(OSError):
            os.nice(IDLE_NICE)
        return
    for tid in os.listdir("/proc/self/task"):
        idle_priority(int(tid))

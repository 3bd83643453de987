"""What counts as healthy, empty, stale, stalled or down: one definition for every reader of health.

``sensorstream status`` (an exit code for scripts), the dashboard's banner and tiles, and the
``stalled`` alert rule all classify through here, so changing what "stale" means (one setting,
``STALE_AFTER``) changes it everywhere at once.

* stale: the last committed batch is older than ``STALE_AFTER`` (the data shown is not current);
* stalled: records wait in Kafka *and* the stream has not committed for ``STALE_AFTER`` (the job is
  not taking them; a stale store with nothing waiting is just a quiet plant).
"""

from __future__ import annotations

from enum import StrEnum


class Level(StrEnum):
    OK = "ok"  # batches arrive and the store answers
    EMPTY = "empty"  # the store answers but no batch has been committed yet
    STALE = "stale"  # the last batch is older than STALE_AFTER
    STALLED = "stalled"  # records wait in Kafka and no batch for STALE_AFTER
    NO_STREAM = "no_stream"  # no writer serves reads; the DuckDB file was read directly
    DOWN = "down"  # the store does not answer at all
    BROKER_DOWN = "broker_down"  # Kafka does not answer


# `sensorstream status` exit codes: 0 for everything a script need not act on.
EXIT_CODES = {Level.BROKER_DOWN: 2, Level.STALLED: 3, Level.DOWN: 4}


def is_stale(age: float | None, stale_after: float) -> bool:
    """Is a batch committed ``age`` seconds ago too old to call the data live?"""
    return age is not None and age > stale_after


def is_stalled(waiting: int, age: float | None, stale_after: float) -> bool:
    """Records wait in Kafka and no batch committed for ``stale_after`` (or none ever)."""
    return waiting > 0 and (age is None or age > stale_after)


def classify(
    *,
    store: str | None,
    age: float | None,
    stale_after: float,
    waiting: int | None = None,
    broker_up: bool | None = None,
) -> Level:
    """The one level for what was observed; the worst first.

    ``store``: ``"api"`` (the writer serves reads), ``"file"`` (read from the file, no writer) or
    ``None`` (unreachable). ``age``: seconds since the last committed batch (``None``: none yet).
    ``waiting`` and ``broker_up``: from Kafka when the caller asked it (``None``: not asked).
    """
    if broker_up is False:
        return Level.BROKER_DOWN
    if store is None:
        return Level.DOWN
    if waiting is not None and is_stalled(waiting, age, stale_after):
        return Level.STALLED
    if store == "file":
        return Level.NO_STREAM
    if age is None:
        return Level.EMPTY
    if is_stale(age, stale_after):
        return Level.STALE
    return Level.OK

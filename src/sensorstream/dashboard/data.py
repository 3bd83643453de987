"""Data access for the dashboard: filters -> named-query parameters -> DataFrames, via StoreClient only.

The dashboard never opens the DuckDB file itself; :class:`~sensorstream.serve.client.StoreClient`
asks the writer's read API and falls back to a short read-only open when no writer runs. When
neither answers, :class:`LastKnown` hands back the previous answer so the page keeps showing the
last known data under a banner instead of going blank.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd

from sensorstream.reads import catalog
from sensorstream.reads.errors import QueryError
from sensorstream.serve.client import StoreClient, StoreUnavailableError

# Sidebar choices -> `since` in minutes before the newest data (None = everything kept).
TIME_RANGES: dict[str, float | None] = {
    "Last 15 minutes": 15,
    "Last hour": 60,
    "Last 6 hours": 360,
    "Last 24 hours": 1440,
    "Everything": None,
}
DEFAULT_RANGE = "Last hour"

# Errors that mean "the store did not answer right now" (as opposed to a bug in a query).
UNREACHABLE: tuple[type[BaseException], ...] = (StoreUnavailableError, httpx.HTTPError, OSError)


@dataclass(frozen=True)
class Filters:
    """What the sidebar selected; ``None`` means "all"."""

    sensor_id: str | None = None
    sensor_type: str | None = None
    site: str | None = None
    minutes: float | None = TIME_RANGES[DEFAULT_RANGE]

    @property
    def bucket_seconds(self) -> int:
        """Bucket width for the "… over time" charts: about 60 buckets over the range, >= 10 s."""
        if self.minutes is None:
            return 300
        return max(10, round(self.minutes * 60 / 60))


def query_params(name: str, filters: Filters, **extra: Any) -> dict[str, Any]:
    """The parameters ``name`` takes, filled from ``filters`` and ``extra``; the rest left out.

    Driven by each query's declared parameters, so a filter reaches exactly the queries that
    understand it (``anomaly_counts`` has no ``sensor_id``, for example) and the store's
    binding refuses nothing.
    """
    accepted = {p.name for p in catalog.get(name).params}
    values: dict[str, Any] = {
        "sensor_id": filters.sensor_id,
        "sensor_type": filters.sensor_type,
        "site": filters.site,
        "since": filters.minutes,
        "bucket_seconds": filters.bucket_seconds,
        **extra,
    }
    return {k: v for k, v in values.items() if k in accepted and v is not None}


@dataclass
class Answer:
    """One query's frame, whether it is fresh, and when it was read (``None``: never)."""

    frame: pd.DataFrame
    fresh: bool
    read_at: float | None
    error: str | None = None


@dataclass
class LastKnown:
    """The last good answer per (query, parameters); lives in the Streamlit session."""

    answers: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[pd.DataFrame, float]] = field(
        default_factory=dict
    )

    def fetch(self, client: StoreClient, name: str, params: dict[str, Any]) -> Answer:
        key = (name, tuple(sorted(params.items())))
        try:
            frame = client.query(name, **params)
        except (*UNREACHABLE, QueryError) as exc:  # a refused query must not take the page down either
            old = self.answers.get(key)
            if old is None:
                return Answer(empty_frame(name), fresh=False, read_at=None, error=str(exc))
            return Answer(old[0], fresh=False, read_at=old[1], error=str(exc))
        now = time.time()
        self.answers[key] = (frame, now)
        return Answer(frame, fresh=True, read_at=now)


def empty_frame(name: str) -> pd.DataFrame:
    """A frame with the query's documented columns and no rows (the page's empty state)."""
    return pd.DataFrame(columns=list(catalog.get(name).columns))


@dataclass
class Health:
    """What ``StoreClient.health()`` said, or why it could not say anything."""

    reachable: bool
    mode: str | None = None  # "api": the stream serves reads; "file": no writer, read the file
    last_batch_id: int | None = None
    last_batch_age: float | None = None  # seconds, as the store measured it at checked_at
    checked_at: float = field(default_factory=time.time)
    error: str | None = None

    def age_now(self, now: float | None = None) -> float | None:
        """The last batch's age now: it keeps growing while the store is unreachable."""
        if self.last_batch_age is None:
            return None
        return self.last_batch_age + max(0.0, (now or time.time()) - self.checked_at)


def read_health(client: StoreClient, previous: Health | None = None) -> Health:
    """Health now; when the store is unreachable, keep the last known batch id and age."""
    try:
        doc = client.health()
    except UNREACHABLE as exc:
        return Health(
            reachable=False,
            last_batch_id=previous.last_batch_id if previous else None,
            last_batch_age=previous.last_batch_age if previous else None,
            checked_at=previous.checked_at if previous else time.time(),
            error=str(exc),
        )
    except QueryError as exc:  # e.g. a file without our schema
        return Health(reachable=False, error=str(exc))
    return Health(
        reachable=True,
        mode=doc.get("mode") or client.mode,
        last_batch_id=doc.get("last_batch_id"),
        last_batch_age=doc.get("last_batch_age_seconds"),
    )


def sensor_choices(frame: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """Sorted distinct sensor ids, types and sites of a ``sensors`` answer, for the sidebar."""

    def distinct(column: str) -> list[str]:
        if column not in frame:
            return []
        return sorted({str(v) for v in frame[column].dropna()})

    return distinct("sensor_id"), distinct("sensor_type"), distinct("site")


__all__ = [
    "DEFAULT_RANGE",
    "TIME_RANGES",
    "UNREACHABLE",
    "Answer",
    "Filters",
    "Health",
    "LastKnown",
    "empty_frame",
    "query_params",
    "read_health",
    "sensor_choices",
]

"""What one read may cost (``SENSORSTREAM_READ_*``), and the parameters a read may carry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import duckdb

from sensorstream.config import Settings
from sensorstream.reads import sqlguard
from sensorstream.reads.errors import InvalidParameter

Lane = Literal["sql", "named"]
Params = Sequence[Any] | Mapping[str, Any] | None


@dataclass(frozen=True)
class ReadLimits:
    """What one read may cost. Defaults are the settings' defaults (``SENSORSTREAM_READ_*``)."""

    timeout: float = 10.0  # seconds of wall clock per read
    max_rows: int = 10_000  # rows in an answer; more are cut off with truncated=True
    max_bytes: int = 16 * 2**20  # bytes in an answer (about its JSON size); more is TooLarge
    max_sql_bytes: int = 16_384  # bytes of SQL text
    max_columns: int = 200  # output columns of any one SELECT
    max_concurrent: int = 2  # ad-hoc SQL reads at once; the named queries get their own lane
    max_concurrent_named: int = 8
    memory: int = 256 * 2**20  # how much the process may grow while one read runs
    retry_after: float = 1.0  # seconds a busy client is asked to wait

    def caps(
        self, max_rows: int | None = None, max_bytes: int | None = None, timeout: float | None = None
    ) -> tuple[int, int, float]:
        """Rows, bytes and seconds for one read: a caller's may only tighten these limits."""
        return (
            min(max_rows if max_rows is not None else self.max_rows, self.max_rows),
            min(max_bytes or self.max_bytes, self.max_bytes),
            min(timeout or self.timeout, self.timeout),
        )

    def check(self, cur: duckdb.DuckDBPyConnection, sql: str) -> str:
        """The guard with these limits (``sqlguard.check``): the statement's text to run."""
        return sqlguard.check(cur, sql, max_sql_bytes=self.max_sql_bytes, max_columns=self.max_columns)

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadLimits:
        return cls(
            timeout=settings.read_timeout,
            max_rows=settings.read_max_rows,
            max_bytes=int(settings.read_max_bytes),
            max_sql_bytes=int(settings.read_max_sql_bytes),
            max_columns=settings.read_max_columns,
            max_concurrent=settings.read_max_concurrent,
            max_concurrent_named=max(8, 4 * settings.read_max_concurrent),
            memory=int(settings.read_memory_limit),
        )


def check_params(params: Any) -> Params:
    if params is None:
        return None
    if isinstance(params, str | bytes) or not isinstance(params, Sequence | Mapping):
        raise InvalidParameter("params must be a list (for ? or $1) or an object (for $name)")
    return params

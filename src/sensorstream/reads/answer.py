"""Building a read's answer under a byte cap: Python rows, or Arrow where its values read back the same."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from sensorstream.reads.errors import TooLarge
from sensorstream.reads.execute import Result, jsonable
from sensorstream.reads.limits import Params

_FETCH_ROWS = 256  # at most this many rows per fetched chunk
_CHUNK_BYTES = 256 * 1024  # about this many bytes per fetched chunk
_ARROW_ROWS = 1024  # rows per Arrow batch: the byte cap is checked after each
# DuckDB types whose Arrow value reads back in Python as DuckDB's own value would (as JSON):
# scalars and lists of them. Others (INTERVAL, MAP, HUGEINT, ENUM, STRUCT...) take the Python path.
_ARROW_SAFE = re.compile(
    r"^(BOOLEAN|(U?(TINYINT|SMALLINT|INTEGER|BIGINT))|FLOAT|DOUBLE|DECIMAL\(\d+,\d+\)|VARCHAR|DATE|TIME"
    r'|TIMESTAMP|TIMESTAMP WITH TIME ZONE|UUID|JSON|BLOB|"NULL")(\[\d*\])*$'
)


class ReadResult(Result):
    """A :class:`~sensorstream.reads.catalog.Result` whose rows hold DuckDB's Python values."""

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "types": self.types,
            "rows": [[jsonable(v) for v in row] for row in self.rows],
            "truncated": self.truncated,
        }


def _size(value: Any) -> int:
    """About how many bytes ``value`` takes in the answer (its JSON text)."""
    if value is None or isinstance(value, bool | int | float):
        return 8
    if isinstance(value, str | bytes | bytearray):
        return len(value) + 2
    if isinstance(value, list | tuple):
        return 2 + sum(_size(v) + 1 for v in value)
    if isinstance(value, dict):
        return 2 + sum(_size(k) + _size(v) + 2 for k, v in value.items())
    return 32  # times, decimals, UUIDs: short fixed-size text


def answer_size(rows: Iterable[Sequence[Any]]) -> int:
    """About how many bytes ``rows`` take in an answer: what the byte cap (``max_bytes``) counts."""
    return sum(_size(list(row)) for row in rows)


def _too_large(bytes_cap: int) -> TooLarge:
    return TooLarge(
        f"the answer is larger than {bytes_cap:,} bytes (the limit); select fewer rows or columns, "
        "or aggregate"
    )


@dataclass
class ArrowResult:
    """An answer as Arrow: what ``run_checked`` gives the read API's process."""

    columns: list[str]
    types: list[str]  # DuckDB's type names: Arrow's lose some (JSON, ENUM, UUID)
    table: pa.Table
    truncated: bool = False


def fetch_rows(
    cur: duckdb.DuckDBPyConnection, text: str, params: Params, rows_cap: int, bytes_cap: int
) -> ReadResult:
    # No wrapping "SELECT * FROM (…) LIMIT n": that made binding quadratic in the column count.
    # The result streams, so stopping the fetch stops the work.
    cur.execute(text, params)
    description = cur.description or []
    rows: list[tuple[Any, ...]] = []
    size, step = 0, 16
    while len(rows) <= rows_cap:
        chunk = cur.fetchmany(min(step, rows_cap + 1 - len(rows)))
        if not chunk:
            break
        chunk_size = answer_size(chunk)
        size += chunk_size
        # Building Python rows holds the GIL (the writer's thread waits for it): aim at chunks
        # of about _CHUNK_BYTES, and never convert much past the byte cap.
        step = max(1, min(_FETCH_ROWS, _CHUNK_BYTES * len(chunk) // max(chunk_size, 1)))
        if size > bytes_cap:
            raise _too_large(bytes_cap)
        rows.extend(chunk)
    return ReadResult(
        columns=[d[0] for d in description],
        types=[str(d[1]) for d in description],
        rows=[list(row) for row in rows[:rows_cap]],
        truncated=len(rows) > rows_cap,
    )


def fetch_arrow(
    cur: duckdb.DuckDBPyConnection, text: str, params: Params, rows_cap: int, bytes_cap: int
) -> ArrowResult | ReadResult:
    batches: list[pa.RecordBatch] = []
    rows = size = 0
    # A relation, not cursor.execute: DuckDB streams its record batches without a copy.
    relation = cur.sql(text, params=params)
    description = relation.description
    if not all(_ARROW_SAFE.match(str(d[1])) for d in description):
        return fetch_rows(cur, text, params, rows_cap, bytes_cap)
    # The reader holds the cursor until it is closed: the cursor serves its thread's next read.
    with relation.to_arrow_reader(_ARROW_ROWS) as reader:
        for batch in reader:
            size += batch.nbytes
            if size > bytes_cap:
                raise _too_large(bytes_cap)
            batches.append(batch)
            rows += batch.num_rows
            if rows > rows_cap:
                break
    table = pa.Table.from_batches(batches, schema=reader.schema)
    return ArrowResult(
        columns=[d[0] for d in description],
        types=[str(d[1]) for d in description],
        table=table.slice(0, rows_cap),
        truncated=rows > rows_cap,
    )

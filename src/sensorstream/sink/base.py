"""What the stream hands a sink and what it gets back: the interface between ``stream/`` and ``sink/``.

The stream job knows a sink only through :class:`Sink`: it asks whether a batch id is already
committed (a replay after a crash) and hands each micro-batch over as an Arrow table with the
columns of :data:`sensorstream.sink.batch.RAW_SCHEMA`: Kafka's records, untouched. Parsing and
validation are the sink's (``sink.parse``). The DuckDB merge
(:class:`sensorstream.sink.merge.BatchMerger`) is the one implementation; another store would
implement these two methods with the same guarantees (one transaction per batch, a ledger keyed
by ``(query_name, batch_id)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Protocol

import duckdb
import pyarrow as pa


class Sink(Protocol):
    query_name: str  # keys the ledger (see BatchMerger and ledger_name)

    def for_query(self, query_name: str) -> Sink:
        """This sink, keyed by another ``query_name``: the job's, once its checkpoint names it."""
        ...

    def is_committed(self, batch_id: int) -> bool: ...

    def merge_records(self, batch_id: int, records: pa.Table, spark_ms: float = 0.0) -> BatchResult: ...


def ledger_name(query: str, query_id: object) -> str:
    """The ``query_name`` a streaming query's batches are keyed by in the store.

    ``query_id`` is the id Spark keeps in the query's checkpoint (``metadata``, and each
    progress report's ``id``): it survives restarts and changes when the checkpoint is reset, and
    batch ids then restart at 0, so ``(query_name, batch_id)`` names one batch for good.
    """
    return f"{query}/{query_id}"


@dataclass
class BatchResult:
    batch_id: int
    query_name: str  # the ledger the batch is committed in: (query_name, batch_id) is its key
    skipped: bool = False
    input_rows: int = 0
    valid_rows: int = 0
    new_readings: int = 0
    duplicate_rows: int = 0
    late_rows: int = 0
    dead_letters: int = 0
    anomalies: int = 0
    windows_updated: int = 0
    windows_finalized: int = 0
    watermark: datetime | None = None
    next_watermark: datetime | None = None
    max_event_time: datetime | None = None
    sink_ms: float = 0.0
    spark_ms: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_max_ms: float | None = None
    kafka_latency_p50_ms: float | None = None
    kafka_latency_p95_ms: float | None = None
    kafka_latency_max_ms: float | None = None
    end_offsets: dict[str, int] | None = None

    def as_log(self) -> dict:
        doc = asdict(self)
        for key in ("watermark", "next_watermark", "max_event_time"):
            if doc[key] is not None:
                doc[key] = doc[key].isoformat()
        return {k: v for k, v in doc.items() if v is not None and k != "end_offsets"}


class StoreWriteError(RuntimeError):
    """The store's file cannot be written (disk full, read-only, permissions)."""


def is_disk_error(exc: BaseException | None) -> bool:
    # DuckDB reports a failed WAL write at COMMIT as a TransactionException, so the type alone
    # does not tell; the message does.
    if isinstance(exc, duckdb.IOException | duckdb.PermissionException):
        return True
    text = str(exc)
    return isinstance(exc, duckdb.Error) and any(
        marker in text
        for marker in ("Could not write", "No space left", "Permission denied", "Read-only file")
    )

"""The DuckDB schema, as numbered migrations recorded in ``schema_version``.

Table names and key columns are the contract (see docs/store.md). Each migration runs once, in
its own transaction, at start-up; a file written by a newer sensorstream is refused rather than
guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb

from sensorstream.schema import EVENT_FIELDS


class SchemaError(RuntimeError):
    """The DuckDB file's schema cannot be used by this version."""


def _readings_columns() -> str:
    # The event's own columns come from the one event schema; the rest is what the pipeline adds.
    cols = []
    for f in EVENT_FIELDS:
        null = " NOT NULL" if f.required else ""
        cols.append(f"{f.name} {f.duckdb_type}{null}")
    return ",\n    ".join(cols)


V1 = f"""
CREATE TABLE readings (
    {_readings_columns()},
    window_start TIMESTAMPTZ NOT NULL,
    is_late BOOLEAN NOT NULL DEFAULT false,
    kafka_partition INTEGER NOT NULL,
    kafka_offset BIGINT NOT NULL,
    kafka_timestamp TIMESTAMPTZ,
    batch_id BIGINT NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (event_id),
    CHECK (isfinite(value)),
    CHECK (length(event_id) > 0 AND length(sensor_id) > 0)
);
CREATE TABLE window_stats (
    sensor_id VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    sensor_type VARCHAR,
    site VARCHAR,
    reading_count BIGINT NOT NULL CHECK (reading_count > 0),
    avg_value DOUBLE NOT NULL,
    min_value DOUBLE NOT NULL,
    max_value DOUBLE NOT NULL,
    stddev_value DOUBLE,
    is_final BOOLEAN NOT NULL DEFAULT false,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (sensor_id, window_start),
    CHECK (window_end > window_start),
    CHECK (min_value <= avg_value + 1e-9 * abs(avg_value) + 1e-9
           AND avg_value <= max_value + 1e-9 * abs(max_value) + 1e-9)
);
CREATE TABLE late_events (
    event_id VARCHAR NOT NULL PRIMARY KEY,
    sensor_id VARCHAR NOT NULL,
    event_time TIMESTAMPTZ NOT NULL,
    value DOUBLE NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    watermark TIMESTAMPTZ NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset BIGINT NOT NULL,
    batch_id BIGINT NOT NULL,
    detected_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE dead_letters (
    kafka_topic VARCHAR NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset BIGINT NOT NULL,
    kafka_key BLOB,
    raw_value BLOB,
    error VARCHAR NOT NULL,
    batch_id BIGINT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
CREATE TABLE anomalies (
    event_id VARCHAR NOT NULL PRIMARY KEY,
    sensor_id VARCHAR NOT NULL,
    sensor_type VARCHAR,
    event_time TIMESTAMPTZ NOT NULL,
    value DOUBLE NOT NULL,
    rule VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    batch_id BIGINT NOT NULL,
    detected_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE pipeline_metrics (
    batch_id BIGINT NOT NULL PRIMARY KEY,
    query_name VARCHAR NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL,
    input_rows BIGINT NOT NULL,
    valid_rows BIGINT NOT NULL,
    new_readings BIGINT NOT NULL,
    duplicate_rows BIGINT NOT NULL,
    late_rows BIGINT NOT NULL,
    dead_letters BIGINT NOT NULL,
    anomalies BIGINT NOT NULL,
    windows_updated BIGINT NOT NULL,
    windows_finalized BIGINT NOT NULL,
    batch_duration_ms DOUBLE NOT NULL,
    spark_ms DOUBLE,
    sink_ms DOUBLE,
    rows_per_second DOUBLE,
    latency_p50_ms DOUBLE,
    latency_p95_ms DOUBLE,
    latency_max_ms DOUBLE,
    kafka_latency_p50_ms DOUBLE,
    kafka_latency_p95_ms DOUBLE,
    kafka_latency_max_ms DOUBLE,
    watermark TIMESTAMPTZ,
    max_event_time TIMESTAMPTZ,
    consumer_lag BIGINT,
    input_rows_per_second DOUBLE,
    processed_rows_per_second DOUBLE,
    trigger_ms DOUBLE
);
CREATE TABLE sink_commits (
    query_name VARCHAR NOT NULL,
    batch_id BIGINT NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL,
    watermark TIMESTAMPTZ,
    max_event_time TIMESTAMPTZ,
    end_offsets VARCHAR,
    PRIMARY KEY (query_name, batch_id)
);
CREATE INDEX readings_window ON readings (sensor_id, window_start);
CREATE INDEX readings_time ON readings (event_time);
"""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[duckdb.DuckDBPyConnection], None] | str


# DuckDB (2.0) runs an UPDATE, and an upsert's DO UPDATE, of a table that has a CHECK over two or
# more columns far more slowly: three batches that each upsert 200 K windows and finalize some took
# 47 s with V1's `window_end > window_start` and `min <= avg <= max` checks, 0.8 s without them
# (a single-column CHECK costs little). window_stats is the one table the sink updates, every batch.
# Those invariants hold by construction (one min/avg/max query over the window's readings) and the
# end-to-end tests compare every window with an independent computation; the single-column checks stay.
V2 = """
CREATE TABLE window_stats_v2 (
    sensor_id VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    sensor_type VARCHAR,
    site VARCHAR,
    reading_count BIGINT NOT NULL CHECK (reading_count > 0),
    avg_value DOUBLE NOT NULL CHECK (isfinite(avg_value)),
    min_value DOUBLE NOT NULL CHECK (isfinite(min_value)),
    max_value DOUBLE NOT NULL CHECK (isfinite(max_value)),
    stddev_value DOUBLE,
    is_final BOOLEAN NOT NULL DEFAULT false,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (sensor_id, window_start)
);
INSERT INTO window_stats_v2 BY NAME SELECT * FROM window_stats;
DROP TABLE window_stats;
ALTER TABLE window_stats_v2 RENAME TO window_stats;
"""


# Steady state (cost per batch independent of the store's size). DuckDB maintains an ART index
# row by row: at 30 M readings the primary key on `readings.event_id` cost 470 ms per 20 K-row
# insert, and a delete ~45 µs a row, so retention could not keep up with ingest. Event-level
# tables therefore carry no index: the sink keeps `event_id` unique itself (it deduplicates every
# batch against the readings at the same event times, which DuckDB's zone maps find without an
# index), and retention deletes whole time ranges. `window_stats` keeps its key (the upsert needs
# it; it holds one row per sensor and window, not per event) and gains `m2_value`, the sum of
# squared deviations, so a window merges a batch's count/mean/m2 (Chan et al.) instead of being
# recomputed from `readings`. The rows are copied in event-time order so zone maps are tight.
V3_WINDOW_STATS = """
CREATE TABLE window_stats_v3 (
    sensor_id VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    sensor_type VARCHAR,
    site VARCHAR,
    reading_count BIGINT NOT NULL CHECK (reading_count > 0),
    avg_value DOUBLE NOT NULL CHECK (isfinite(avg_value)),
    min_value DOUBLE NOT NULL CHECK (isfinite(min_value)),
    max_value DOUBLE NOT NULL CHECK (isfinite(max_value)),
    stddev_value DOUBLE,
    is_final BOOLEAN NOT NULL DEFAULT false,
    updated_at TIMESTAMPTZ NOT NULL,
    m2_value DOUBLE NOT NULL DEFAULT 0 CHECK (m2_value >= 0),
    PRIMARY KEY (sensor_id, window_start)
)
"""


def _v3(con: duckdb.DuckDBPyConnection) -> None:
    for table in ("readings", "late_events", "anomalies"):
        ddl = con.execute(
            "SELECT sql FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'", [table]
        ).fetchone()[0]
        con.execute(
            _without_primary_key(ddl).replace(f"CREATE TABLE {table}(", f"CREATE TABLE {table}_v3(", 1)
        )
        # The key lost its index, not its NOT NULL.
        con.execute(f"ALTER TABLE {table}_v3 ALTER COLUMN event_id SET NOT NULL")
        con.execute(f"INSERT INTO {table}_v3 SELECT * FROM {table} ORDER BY event_time")
        con.execute(f"DROP TABLE {table}")  # drops its indexes with it
        con.execute(f"ALTER TABLE {table}_v3 RENAME TO {table}")
    # Rebuilt rather than ALTER TABLE ... ADD COLUMN: duckdb 2.0.1 cannot replay that ALTER from the
    # WAL after a crash without downloading an extension (it re-binds the table's CHECKs first).
    con.execute(V3_WINDOW_STATS)
    con.execute(
        "INSERT INTO window_stats_v3 SELECT *, "
        "coalesce(stddev_value * stddev_value * (reading_count - 1), 0) FROM window_stats ORDER BY window_start"
    )
    con.execute("DROP TABLE window_stats")
    con.execute("ALTER TABLE window_stats_v3 RENAME TO window_stats")


def _without_primary_key(ddl: str) -> str:
    """DDL as ``duckdb_tables()`` gives it, minus the PRIMARY KEY (inline or as a table constraint)."""
    ddl = re.sub(r",\s*PRIMARY KEY\s*\([^)]*\)", "", ddl)
    return re.sub(r"\s+PRIMARY KEY", "", ddl)


# One row per sensor: the baseline its readings are judged against (an exponentially weighted
# mean and variance over its own last readings, so it follows the sensor whatever its rate), the
# evidence the persistent rules carry from batch to batch (repeats of one value, the drift
# CUSUMs), and the sensor's alert state with the reason a person reads on the dashboard. Updated
# by the sink in the batch's transaction, so it is exact under replay like everything else.
V4 = """
CREATE TABLE sensor_state (
    sensor_id VARCHAR PRIMARY KEY,
    sensor_type VARCHAR,
    site VARCHAR,
    baseline_readings BIGINT NOT NULL DEFAULT 0,
    baseline_mean DOUBLE,
    baseline_variance DOUBLE,
    last_value DOUBLE,
    last_event_time TIMESTAMPTZ,
    repeats BIGINT NOT NULL DEFAULT 0,
    drift_high DOUBLE NOT NULL DEFAULT 0,
    drift_low DOUBLE NOT NULL DEFAULT 0,
    flagged_run BIGINT NOT NULL DEFAULT 0,
    normal_run BIGINT NOT NULL DEFAULT 0,
    state VARCHAR NOT NULL DEFAULT 'ok',
    rule VARCHAR,
    rule_value DOUBLE,
    rule_score DOUBLE,
    expected_low DOUBLE,
    expected_high DOUBLE,
    since TIMESTAMPTZ,
    last_anomaly_time TIMESTAMPTZ,
    relearned_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL
)
"""


# pipeline_metrics keyed like the ledger, by (query_name, batch_id). Batch ids restart at 0 when a
# checkpoint is reset, under a new query name, and under `batch_id` alone the new query's metrics
# replaced the old query's rows. Every row already names its query: the sink
# has written query_name (NOT NULL since version 1) with the same value as the batch's
# sink_commits row, in the same transaction, so the rows move over as they are; nothing is looked
# up, and no row lacks a name. Rebuilt, not altered: DuckDB cannot change a table's primary key.
# The copy is in commit order, the order the sink appends in, so zone maps on committed_at stay tight.
V5 = """
CREATE TABLE pipeline_metrics_v5 (
    batch_id BIGINT NOT NULL,
    query_name VARCHAR NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL,
    input_rows BIGINT NOT NULL,
    valid_rows BIGINT NOT NULL,
    new_readings BIGINT NOT NULL,
    duplicate_rows BIGINT NOT NULL,
    late_rows BIGINT NOT NULL,
    dead_letters BIGINT NOT NULL,
    anomalies BIGINT NOT NULL,
    windows_updated BIGINT NOT NULL,
    windows_finalized BIGINT NOT NULL,
    batch_duration_ms DOUBLE NOT NULL,
    spark_ms DOUBLE,
    sink_ms DOUBLE,
    rows_per_second DOUBLE,
    latency_p50_ms DOUBLE,
    latency_p95_ms DOUBLE,
    latency_max_ms DOUBLE,
    kafka_latency_p50_ms DOUBLE,
    kafka_latency_p95_ms DOUBLE,
    kafka_latency_max_ms DOUBLE,
    watermark TIMESTAMPTZ,
    max_event_time TIMESTAMPTZ,
    consumer_lag BIGINT,
    input_rows_per_second DOUBLE,
    processed_rows_per_second DOUBLE,
    trigger_ms DOUBLE,
    PRIMARY KEY (query_name, batch_id)
);
INSERT INTO pipeline_metrics_v5 BY NAME SELECT * FROM pipeline_metrics ORDER BY committed_at, batch_id;
DROP TABLE pipeline_metrics;
ALTER TABLE pipeline_metrics_v5 RENAME TO pipeline_metrics;
"""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", V1),
    Migration(2, "window_stats without multi-column CHECKs (they made every update slow)", V2),
    Migration(3, "event tables without indexes; window_stats keeps m2 for incremental merges", _v3),
    Migration(4, "sensor_state: each sensor's baseline, rule evidence and alert state", V4),
    Migration(5, "pipeline_metrics keyed by (query_name, batch_id), like sink_commits", V5),
)
LATEST = MIGRATIONS[-1].version
TABLES = (
    "readings",
    "window_stats",
    "late_events",
    "dead_letters",
    "anomalies",
    "pipeline_metrics",
    "sink_commits",
    "sensor_state",
)


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    has_ledger = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()[0]
    if not has_ledger:
        unknown = con.execute(
            "SELECT list(table_name ORDER BY table_name) FROM information_schema.tables "
            "WHERE table_name IN (SELECT unnest(?))",
            [list(TABLES)],
        ).fetchone()[0]
        if unknown:
            # Tables of ours without a ledger were made by hand or by another tool: refuse to
            # write into them rather than guess whether their columns match.
            raise SchemaError(
                f"the DuckDB file already has tables {unknown} but no schema_version ledger; "
                "it was not created by sensorstream. Point SENSORSTREAM_DB at a new file or "
                "move this one away."
            )
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]


def migrate(con: duckdb.DuckDBPyConnection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the file to the last of ``migrations`` (:data:`LATEST`); returns the version it had before.

    ``migrations`` is a parameter so tests can play a future release (a V2) against a V1 file.
    """
    latest = migrations[-1].version
    before = current_version(con)
    if before > latest:
        raise SchemaError(
            f"the DuckDB file is at schema version {before}, newer than this sensorstream "
            f"understands ({latest}); upgrade sensorstream or use another SENSORSTREAM_DB"
        )
    if before == 0:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
            "description VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
    for m in migrations:
        if m.version <= before:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            if isinstance(m.apply, str):
                con.execute(m.apply)
            else:
                m.apply(con)
            con.execute(
                "INSERT INTO schema_version (version, description) VALUES (?, ?)", [m.version, m.description]
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    if before < latest:
        # Schema changes go into the file now, not only the WAL: a crash right after start-up then
        # never leaves DDL for the next start to replay.
        con.execute("CHECKPOINT")
    verify(con)
    return before


def verify(con: duckdb.DuckDBPyConnection) -> None:
    """Check that every contract table has its key columns (catches hand-edited files)."""
    expected = {
        "readings": {"event_id", "sensor_id", "event_time", "value"},
        "window_stats": {"sensor_id", "window_start", "window_end", "reading_count", "is_final"},
        "late_events": {"event_id", "watermark"},
        "dead_letters": {"kafka_topic", "kafka_partition", "kafka_offset", "raw_value", "error"},
        "anomalies": {"event_id", "rule", "score"},
        "pipeline_metrics": {"query_name", "batch_id"},
        "sink_commits": {"query_name", "batch_id"},
    }
    rows = con.execute(
        "SELECT table_name, list(column_name) FROM information_schema.columns GROUP BY table_name"
    ).fetchall()
    have = {t: set(cols) for t, cols in rows}
    for table, cols in expected.items():
        missing = cols - have.get(table, set())
        if missing:
            raise SchemaError(
                f"table {table} in the DuckDB file lacks columns {sorted(missing)}; the file does not "
                "match schema_version. Restore it from a snapshot or use another SENSORSTREAM_DB."
            )

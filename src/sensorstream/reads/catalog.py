"""The catalogue of named, parameterized read queries: what the dashboard and the API may ask.

Each :class:`NamedQuery` declares its SQL, its parameters and the columns it answers (the
contract); :func:`bind` turns user values into DuckDB parameters. Running them (cursors, time
limits, JSON) is :mod:`sensorstream.reads.execute`'s job, for every path that reads: the read
API, the client's file fallback and the PostgreSQL endpoint.
Every user value is bound as a DuckDB parameter (``$name``); SQL text here is static.

Relative times: a ``since`` given as a number means that many minutes before the newest
timestamp in the table the query reads (not the wall clock), so a replayed data set from 2015
and a live stream both show their last N minutes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sensorstream.reads.errors import InvalidParameter, QueryError
from sensorstream.store.migrations import TABLES

MAX_ROWS = 10_000  # the most rows one read answers (the API's `limit` cap)
MAX_SINCE_MINUTES = 100 * 366 * 24 * 60  # a century: more overflows DuckDB's microsecond arithmetic

ParamKind = Literal["str", "int", "time", "since"]


@dataclass(frozen=True)
class Param:
    name: str
    kind: ParamKind
    default: Any = None
    help: str = ""
    low: int | None = None  # bounds for ints (limits, bucket sizes)
    high: int | None = None


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    sql: str
    params: tuple[Param, ...] = ()
    columns: tuple[str, ...] = field(default=())  # the contract; a test checks the SQL answers these

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params": [
                {"name": p.name, "type": p.kind, "default": p.default, "help": p.help} for p in self.params
            ],
            "columns": list(self.columns),
        }


# --- reusable SQL pieces (static text; values are always $parameters) ------------------------------
def _since(column: str, table: str, param: str = "since") -> str:
    """``column`` on or after an absolute time, or N minutes before the newest ``column`` in ``table``."""
    return (
        f"(${param}_ts IS NULL OR {column} >= ${param}_ts) AND "
        f"(${param}_minutes IS NULL OR {column} >= (SELECT max({column}) FROM {table}) "
        f"- to_microseconds(CAST(${param}_minutes * 60000000 AS BIGINT)))"
    )


def _eq(column: str, param: str) -> str:
    return f"(${param} IS NULL OR {column} = ${param})"


_WINDOW_FILTER = " AND ".join(
    [_eq("sensor_id", "sensor_id"), _eq("sensor_type", "sensor_type"), _eq("site", "site")]
)
_METRIC_COLUMNS = (
    "batch_id, query_name, committed_at, input_rows, valid_rows, new_readings, duplicate_rows, late_rows, "
    "dead_letters, anomalies, windows_updated, windows_finalized, batch_duration_ms, spark_ms, sink_ms, "
    "rows_per_second, latency_p50_ms, latency_p95_ms, latency_max_ms, watermark, max_event_time, "
    "consumer_lag"
)

SENSOR_ID = Param("sensor_id", "str", help="one sensor")
SENSOR_TYPE = Param("sensor_type", "str", help="e.g. temperature")
SITE = Param("site", "str", help="e.g. plant-a")
SINCE = Param("since", "since", help="ISO-8601 time, or minutes before the newest data")


def _cols(names: str) -> tuple[str, ...]:
    return tuple(names.split())


def _limit(default: int) -> Param:
    return Param("limit", "int", default, f"at most this many rows (1..{MAX_ROWS})", 1, MAX_ROWS)


def _recent_rows(
    name: str,
    description: str,
    table: str,
    columns: str,
    *,
    time_column: str,
    order_by: str,
    default_limit: int,
) -> NamedQuery:
    """Rows of ``table`` filtered by sensor, type, site and ``since``; newest first."""
    cols = _cols(columns)
    return NamedQuery(
        name,
        description,
        f"""
        SELECT {", ".join(cols)}
        FROM {table}
        WHERE {_WINDOW_FILTER} AND {_since(time_column, table)}
        ORDER BY {order_by}
        LIMIT $limit
        """,
        (SENSOR_ID, SENSOR_TYPE, SITE, SINCE, _limit(default_limit)),
        cols,
    )


def _over_time(name: str, table: str, column: str, aggregates: str) -> NamedQuery:
    """Counts per time bucket of arrival (``column``), for the "… over time" charts."""
    return NamedQuery(
        name,
        f"{table} per bucket of arrival time ({column}).",
        f"""
        SELECT time_bucket(to_seconds($bucket_seconds), {column}) AS bucket_start, {aggregates}
        FROM {table}
        WHERE {_since(column, table)}
        GROUP BY bucket_start
        ORDER BY bucket_start
        """,
        (SINCE, Param("bucket_seconds", "int", 60, "bucket width in seconds", 1, 31 * 86400)),
        (
            "bucket_start",
            *(part.rsplit(" AS ", 1)[1].strip() for part in aggregates.split(", ") if " AS " in part),
        ),
    )


_QUERIES: tuple[NamedQuery, ...] = (
    NamedQuery(
        "sensors",
        "One row per sensor: latest window and reading, a status and why. stale = no window in the "
        "last `stale_windows` windows before the newest one; anomaly = a rule is firing for the sensor "
        "now (sensor_state) or fired inside its latest window. rule, rule_value, expected_low/high "
        "and since describe the latest anomaly; baseline_readings/mean/sigma are what it is judged against.",
        f"""
        WITH last AS (
            SELECT * FROM window_stats
            WHERE {_eq("sensor_type", "sensor_type")} AND {_eq("site", "site")}
            QUALIFY row_number() OVER (PARTITION BY sensor_id ORDER BY window_start DESC) = 1
        ),
        newest AS (
            SELECT max(window_start) AS newest_start, max(window_end - window_start) AS window_len
            FROM window_stats
        ),
        latest_reading AS (
            -- only the rows of each sensor's latest window: the min() bound lets zone maps skip the rest
            SELECT r.sensor_id, max(r.event_time) AS last_event_time, arg_max(r.value, r.event_time) AS last_value
            FROM readings r SEMI JOIN last USING (sensor_id, window_start)
            WHERE r.window_start >= (SELECT min(window_start) FROM last)
            GROUP BY r.sensor_id
        ),
        flagged AS (
            SELECT a.sensor_id, count(*) AS n
            FROM anomalies a JOIN last l ON a.sensor_id = l.sensor_id
             AND a.event_time >= l.window_start AND a.event_time < l.window_end
            GROUP BY a.sensor_id
        )
        SELECT l.sensor_id, l.sensor_type, l.site, r.last_event_time, r.last_value,
               l.window_start AS last_window_start, l.avg_value AS last_window_avg,
               l.reading_count AS last_window_count, coalesce(f.n, 0) AS last_window_anomalies,
               CASE WHEN l.window_start <= n.newest_start - n.window_len * $stale_windows THEN 'stale'
                    WHEN f.n > 0 OR st.state = 'anomaly' THEN 'anomaly' ELSE 'ok' END AS status,
               st.rule, st.rule_value, st.rule_score, st.expected_low, st.expected_high, st.since,
               st.last_anomaly_time, coalesce(st.baseline_readings, 0) AS baseline_readings,
               st.baseline_mean, sqrt(st.baseline_variance) AS baseline_sigma
        FROM last l CROSS JOIN newest n
        LEFT JOIN latest_reading r USING (sensor_id) LEFT JOIN flagged f USING (sensor_id)
        LEFT JOIN sensor_state st USING (sensor_id)
        ORDER BY l.sensor_id
        """,
        (SENSOR_TYPE, SITE, Param("stale_windows", "int", 2, "windows without data before stale", 1, 10_000)),
        _cols(
            "sensor_id sensor_type site last_event_time last_value last_window_start last_window_avg last_window_count "
            "last_window_anomalies status rule rule_value rule_score expected_low expected_high since last_anomaly_time "
            "baseline_readings baseline_mean baseline_sigma"
        ),
    ),
    _recent_rows(
        "latest_windows",
        "Window aggregates, newest first (partial windows included; see is_final).",
        "window_stats",
        "sensor_id sensor_type site window_start window_end reading_count avg_value min_value max_value "
        "stddev_value is_final updated_at",
        time_column="window_start",
        order_by="window_start DESC, sensor_id",
        default_limit=500,
    ),
    NamedQuery(
        "sensor_series",
        "One row per window, oldest first, for one sensor or all sensors matching the filters "
        "(avg weighted by count, min of mins, max of maxes); the newest `limit` windows.",
        f"""
        SELECT * FROM (
            SELECT window_start, max(window_end) AS window_end, sum(reading_count) AS reading_count,
                   sum(avg_value * reading_count) / sum(reading_count) AS avg_value,
                   min(min_value) AS min_value, max(max_value) AS max_value,
                   count(*) AS sensors, bool_and(is_final) AS is_final
            FROM window_stats
            WHERE {_WINDOW_FILTER} AND {_since("window_start", "window_stats")}
              AND ($until IS NULL OR window_start < $until)
            GROUP BY window_start
            ORDER BY window_start DESC
            LIMIT $limit
        ) ORDER BY window_start
        """,
        (
            SENSOR_ID,
            SENSOR_TYPE,
            SITE,
            SINCE,
            Param("until", "time", help="ISO-8601, exclusive"),
            _limit(1440),
        ),
        _cols("window_start window_end reading_count avg_value min_value max_value sensors is_final"),
    ),
    _recent_rows(
        "readings_recent",
        "Raw readings, newest event time first.",
        "readings",
        "event_id sensor_id sensor_type site unit event_time value window_start is_late kafka_partition "
        "kafka_offset batch_id ingested_at",
        time_column="event_time",
        order_by="event_time DESC, event_id",
        default_limit=500,
    ),
    NamedQuery(
        "anomalies_recent",
        "Anomalies, newest event time first.",
        f"""
        SELECT event_id, sensor_id, sensor_type, event_time, value, rule, score, batch_id, detected_at
        FROM anomalies
        WHERE {_eq("sensor_id", "sensor_id")} AND {_eq("rule", "rule")} AND {_since("event_time", "anomalies")}
        ORDER BY event_time DESC, event_id
        LIMIT $limit
        """,
        (SENSOR_ID, Param("rule", "str", help="e.g. threshold, zscore"), SINCE, _limit(100)),
        _cols("event_id sensor_id sensor_type event_time value rule score batch_id detected_at"),
    ),
    NamedQuery(
        "anomaly_counts",
        "Anomalies per rule, most frequent first.",
        f"""
        SELECT rule, count(*) AS anomalies, count(DISTINCT sensor_id) AS sensors,
               max(score) AS max_score, max(event_time) AS last_event_time
        FROM anomalies
        WHERE {_since("event_time", "anomalies")}
        GROUP BY rule
        ORDER BY anomalies DESC, rule
        """,
        (SINCE,),
        _cols("rule anomalies sensors max_score last_event_time"),
    ),
    _over_time(
        "late_over_time",
        "late_events",
        "detected_at",
        "count(*) AS late_events, count(DISTINCT sensor_id) AS sensors, "
        "max(epoch(watermark) - epoch(event_time)) AS max_behind_watermark_s",
    ),
    _over_time(
        "dead_letters_over_time",
        "dead_letters",
        "received_at",
        "count(*) AS dead_letters, count(DISTINCT split_part(error, ':', 1)) AS reasons",
    ),
    NamedQuery(
        "dead_letter_reasons",
        "Top dead-letter reasons (the part before ':'), with the newest full error and raw value as a sample.",
        f"""
        SELECT split_part(error, ':', 1) AS reason, count(*) AS dead_letters,
               arg_max(error, received_at) AS sample_error,
               -- raw bytes may not be UTF-8 (that is one of the reasons): try() gives NULL then
               left(arg_max(coalesce(try(decode(raw_value)), '<' || octet_length(raw_value) || ' bytes, not UTF-8>'), received_at), 200) AS sample_raw,
               max(received_at) AS last_received_at
        FROM dead_letters
        WHERE {_since("received_at", "dead_letters")}
        GROUP BY reason
        ORDER BY dead_letters DESC, reason
        LIMIT $limit
        """,
        (SINCE, _limit(20)),
        _cols("reason dead_letters sample_error sample_raw last_received_at"),
    ),
    NamedQuery(
        "pipeline_metrics_recent",
        "Per-batch pipeline metrics, newest batch first.",
        f"SELECT {_METRIC_COLUMNS} FROM pipeline_metrics ORDER BY committed_at DESC, batch_id DESC LIMIT $limit",
        (_limit(100),),
        tuple(c.strip() for c in _METRIC_COLUMNS.split(",")),
    ),
    NamedQuery(
        "last_batch",
        "The newest pipeline_metrics row and its age in seconds (no row before the first batch).",
        f"""
        SELECT {_METRIC_COLUMNS}, epoch(now()) - epoch(committed_at) AS age_seconds
        FROM pipeline_metrics ORDER BY committed_at DESC, batch_id DESC LIMIT 1
        """,
        (),
        (*(c.strip() for c in _METRIC_COLUMNS.split(",")), "age_seconds"),
    ),
    NamedQuery(
        "table_counts",
        "Rows per table, all counted in one snapshot (one committed batch).",
        " UNION ALL ".join(f"SELECT '{t}' AS table_name, count(*) AS rows FROM {t}" for t in TABLES),
        (),
        _cols("table_name rows"),
    ),
    NamedQuery(
        "totals",
        "Pipeline totals summed over pipeline_metrics.",
        """
        SELECT count(*) AS batches, coalesce(sum(input_rows), 0) AS input_rows,
               coalesce(sum(valid_rows), 0) AS valid, coalesce(sum(new_readings), 0) AS new_readings,
               coalesce(sum(late_rows), 0) AS late, coalesce(sum(dead_letters), 0) AS dead,
               coalesce(sum(anomalies), 0) AS anomalies, coalesce(sum(duplicate_rows), 0) AS duplicates,
               min(committed_at) AS first_committed_at, max(committed_at) AS last_committed_at
        FROM pipeline_metrics
        """,
        (),
        _cols(
            "batches input_rows valid new_readings late dead anomalies duplicates first_committed_at last_committed_at"
        ),
    ),
    NamedQuery(
        "pipeline_rates",
        "Per-batch rates for the health panel, oldest first (the newest `limit` batches). input_rate "
        "and processing_rate are Spark's progress numbers when monitoring filled them in, else "
        "input rows per second since the previous commit and input rows per second of batch time.",
        """
        SELECT * FROM (
            SELECT batch_id, committed_at, input_rows,
                   coalesce(input_rows_per_second,
                            input_rows / nullif(epoch(committed_at)
                                - epoch(lag(committed_at) OVER (ORDER BY committed_at, batch_id)), 0))
                       AS input_rate,
                   coalesce(processed_rows_per_second, rows_per_second) AS processing_rate,
                   batch_duration_ms, latency_p50_ms, latency_p95_ms, consumer_lag,
                   epoch(now()) - epoch(committed_at) AS age_seconds
            FROM pipeline_metrics
            ORDER BY committed_at DESC, batch_id DESC
            LIMIT $limit
        ) ORDER BY committed_at, batch_id
        """,
        (_limit(300),),
        _cols(
            "batch_id committed_at input_rows input_rate processing_rate batch_duration_ms latency_p50_ms "
            "latency_p95_ms consumer_lag age_seconds"
        ),
    ),
)
QUERIES: dict[str, NamedQuery] = {q.name: q for q in _QUERIES}
_PARAM_REF = re.compile(r"\$([a-z_]+)")


def describe() -> list[dict[str, Any]]:
    """Names, descriptions, parameters and columns of every query (``GET /queries``)."""
    return [q.describe() for q in _QUERIES]


# --- binding ---------------------------------------------------------------------------------------
def parse_time(value: Any, name: str) -> datetime:
    if isinstance(value, datetime):
        ts = value
    else:
        try:
            ts = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidParameter(f"parameter {name}={value!r:.40} is not an ISO-8601 time") from None
    # A time without a zone is read as UTC, the store's zone.
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _convert(p: Param, value: Any) -> dict[str, Any]:
    """The DuckDB parameters for one user parameter (``since`` becomes two)."""
    if p.kind == "since":
        if value is None:
            return {f"{p.name}_ts": None, f"{p.name}_minutes": None}
        if isinstance(value, int | float) and not isinstance(value, bool):
            minutes: float | None = float(value)
        else:
            try:
                minutes = float(str(value))
            except ValueError:
                minutes = None
        if minutes is not None:
            if not math.isfinite(minutes) or not 0 <= minutes <= MAX_SINCE_MINUTES:
                raise InvalidParameter(
                    f"parameter {p.name}={value!r:.40}: minutes must be a number from 0 to {MAX_SINCE_MINUTES:,}"
                )
            return {f"{p.name}_ts": None, f"{p.name}_minutes": minutes}
        return {f"{p.name}_ts": parse_time(value, p.name), f"{p.name}_minutes": None}
    if value is None:
        return {p.name: None}
    if p.kind == "time":
        return {p.name: parse_time(value, p.name)}
    if p.kind == "int":
        try:
            number = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise InvalidParameter(f"parameter {p.name}={value!r:.40} is not an integer") from None
        if (p.low is not None and number < p.low) or (p.high is not None and number > p.high):
            raise InvalidParameter(f"parameter {p.name}={number} is out of range {p.low}..{p.high}")
        return {p.name: number}
    return {p.name: str(value)}


def bind(query: NamedQuery, given: Mapping[str, Any]) -> dict[str, Any]:
    """DuckDB named parameters from user values (strings from a URL, or Python values)."""
    known = {p.name for p in query.params}
    unknown = sorted(set(given) - known)
    if unknown:
        raise InvalidParameter(
            f"query {query.name!r} has no parameter(s) {unknown}; it takes {sorted(known) or 'none'}"
        )
    bound: dict[str, Any] = {}
    for p in query.params:
        value = given.get(p.name)
        if value == "":
            value = None  # an empty form field means "not given"
        bound.update(_convert(p, p.default if value is None else value))
    used = set(_PARAM_REF.findall(query.sql))
    return {k: v for k, v in bound.items() if k in used}


def get(name: str) -> NamedQuery:
    try:
        return QUERIES[name]
    except KeyError:
        raise QueryError(f"no query named {name!r}; known: {', '.join(QUERIES)}") from None

"""Parse and validate Kafka records in Spark SQL, giving every bad one a reason.

``from_json`` alone turns bad records into NULLs without a word. Here each record keeps its
Kafka coordinates and gets either parsed fields or an ``error`` that says what was wrong (the
reasons in :class:`sensorstream.schema.Reason`). The rules match the pure-Python reference
:func:`sensorstream.schema.validate`; a test checks both agree on every kind of bad input.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sensorstream.schema import CORRUPT_COLUMN, EVENT_FIELDS, REQUIRED, Reason, spark_ddl

# ISO-8601 with an explicit zone: `Z` or `±hh:mm` / `±hhmm` at the end.
_ZONED = r"(?i)^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$"

_TOKEN_LIKE = r"^(-?[0-9][0-9.eE+-]*|true|false|[\[{].*)$"

_JSON_OPTIONS = {
    "mode": "PERMISSIVE",
    "columnNameOfCorruptRecord": CORRUPT_COLUMN,
    # Python's json.dumps writes NaN/Infinity bare; parse them so the reason says "not finite".
    "allowNonNumericNumbers": "true",
    # Spark accepts {'single': 'quotes'} by default; JSON does not, and neither do we.
    "allowSingleQuotes": "false",
}


def _is_json_string(text: Column, name: str) -> Column:
    # Spark's JSON reader coerces numbers and objects into a STRING field without complaint, so the
    # type of the string fields is checked on the raw text.
    return text.rlike(rf'"{name}"\s*:\s*"')


def parse_records(kafka_df: DataFrame, valid_ranges: dict[str, tuple[float, float]]) -> DataFrame:
    """Kafka rows -> one row per record with parsed fields, ``error`` (NULL when valid) and coords.

    Output columns: kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key,
    event fields (event_time as TIMESTAMP), error, raw_value (only kept for bad records).
    No row is ever filtered out here: every record leaves either valid or with a reason.
    """
    text = F.col("value").cast("string")
    df = kafka_df.select(
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.col("key").alias("kafka_key"),
        F.col("value").alias("raw_value"),
        text.alias("_text"),
        F.from_json(text, spark_ddl(), _JSON_OPTIONS).alias("_j"),
    )
    txt = F.col("_text")
    j = F.col("_j")
    # The regexes below run on the raw text, so they only run where the cheap parsed view says
    # something may be off (CASE WHEN is lazy): a valid record pays for none of them.
    flags = [F.col(c) for c in df.columns]
    for f in EVENT_FIELDS:
        field = j[f.name]
        # Present and not JSON null (a null counts as missing). Parsed NULL means missing, null or
        # the wrong type; the raw text tells which (get_json_object gives up on a bare NaN).
        flags.append(
            F.when(field.isNotNull(), F.lit(True))
            .otherwise(txt.rlike(rf'"{f.name}"\s*:\s*(?!null\b)\S'))
            .alias(f"_present_{f.name}")
        )
        if f.json_type in ("string", "timestamp"):
            # Spark's reader turns a number, boolean or object into a STRING field silently; the
            # result then reads like that token. Only such values get the check on the raw text.
            suspicious = field.rlike(_TOKEN_LIKE)
            flags.append(
                F.when(field.isNull() | ~suspicious, F.lit(True))
                .otherwise(_is_json_string(txt, f.name))
                .alias(f"_string_{f.name}")
            )
    flags.append(F.try_to_timestamp(F.col("_j.event_time")).alias("event_time"))
    df = df.select(*flags)

    trimmed = F.trim(txt)
    # Jackson stops at the end of the first value, so `{...} trailing` would parse: require the
    # object to be the whole message.
    is_object = trimmed.startswith("{") & trimmed.endswith("}")
    # Only for the rare non-object record: is it JSON at all (a list, a number) or not?
    not_object = (
        F.when(trimmed.startswith("{"), Reason.NOT_JSON)
        .when(F.try_parse_json(txt).isNotNull(), Reason.NOT_OBJECT)
        .otherwise(Reason.NOT_JSON)
    )
    checks: list[tuple[Column, Column | str]] = [
        (F.col("raw_value").isNull(), Reason.NOT_JSON),
        (~F.is_valid_utf8(txt), Reason.NOT_UTF8),
        (~is_object, not_object),
        (j.isNull(), Reason.NOT_JSON),
        # Spark could not read the record. Only a strict parser can tell a syntax error (not JSON)
        # from a field of the wrong type (the checks below name the field); only these rows pay.
        (j[CORRUPT_COLUMN].isNotNull() & F.try_parse_json(txt).isNull(), Reason.NOT_JSON),
    ]
    for f in EVENT_FIELDS:
        present = F.col(f"_present_{f.name}")
        if f.required:
            checks.append((~present, f"{Reason.MISSING}:{f.name}"))
        # Present but NULL after parsing: the JSON value did not fit the field's type.
        checks.append((present & j[f.name].isNull(), f"{Reason.WRONG_TYPE}:{f.name}"))
        if f.json_type in ("string", "timestamp"):
            checks.append((present & ~F.col(f"_string_{f.name}"), f"{Reason.WRONG_TYPE}:{f.name}"))
        if f.required and f.json_type == "string":
            checks.append((F.trim(j[f.name]) == "", f"{Reason.EMPTY}:{f.name}"))
    # A record that parsed only partly (Spark's corrupt-record column set) and tripped no rule above.
    checks.append((j[CORRUPT_COLUMN].isNotNull(), Reason.NOT_JSON))
    checks.append((F.isnan(j["value"]) | (F.abs(j["value"]) == float("inf")), Reason.NOT_FINITE))
    checks.append((~j["event_time"].rlike(_ZONED) | F.col("event_time").isNull(), Reason.BAD_TIME))
    checks.append((_out_of_range(j["sensor_type"], j["value"], valid_ranges), Reason.OUT_OF_RANGE))

    error = F.when(checks[0][0], checks[0][1])
    for cond, reason in checks[1:]:
        error = error.when(cond, reason)

    fields = [j[f.name].alias(f.name) for f in EVENT_FIELDS if f.name != "event_time"]
    df = df.select(
        "kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp", "kafka_key", "raw_value",
        *fields, "event_time", error.alias("error"),
    )  # fmt: skip
    # Raw bytes are only worth moving to the driver for records that go to dead_letters.
    return df.withColumn("raw_value", F.when(F.col("error").isNotNull(), F.col("raw_value")))


def _out_of_range(sensor_type: Column, value: Column, ranges: dict[str, tuple[float, float]]) -> Column:
    cond = F.lit(False)
    for kind, (low, high) in ranges.items():
        cond = cond | ((sensor_type == kind) & ((value < low) | (value > high)))
    return cond


def with_window(df: DataFrame, window_seconds: float) -> DataFrame:
    """Add the start of the latest epoch-aligned event-time window each record belongs to.

    Pass the window length for tumbling windows, the slide for sliding ones (the sink derives the
    earlier windows of a sliding event from this start).

    Spelled out rather than ``F.window``, which adds a filter on non-null event times and would
    silently drop every dead letter before the sink sees it.
    """
    micros = F.unix_micros(F.col("event_time"))
    size = F.lit(round(window_seconds * 1_000_000)).cast("long")
    return df.withColumn("window_start", F.timestamp_micros(micros - F.pmod(micros, size)))


__all__ = ["REQUIRED", "parse_records", "with_window"]

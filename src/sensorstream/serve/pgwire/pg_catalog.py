"""What the endpoint tells clients about the "server": start-up parameters, ``SHOW``, ``version()``.

Drivers decide how to talk from these values: ``integer_datetimes`` and ``TimeZone`` tell them
how to read binary timestamps, ``standard_conforming_strings`` how to quote, ``server_version``
which catalog queries to send (psql 15 and pgJDBC ask for PostgreSQL 10+ features). Only fixed,
harmless values are served here; DuckDB's own settings (paths, memory, threads) never are.
"""

from __future__ import annotations

import re

import duckdb

from sensorstream.serve.pgwire import types as pg_types
from sensorstream.serve.pgwire.reading import ReadError

SERVER_VERSION = "15.0"
SERVER_VERSION_NUM = "150000"
# SQLAlchemy, pgJDBC and Grafana read the version from this text ("PostgreSQL <major>.<minor> ...").
VERSION_TEXT = (
    f"PostgreSQL {SERVER_VERSION} (sensorstream read-only endpoint on DuckDB {duckdb.__version__}), 64-bit"
)

# Reported at start-up as ParameterStatus, and answered by SHOW / current_setting().
STARTUP_PARAMETERS: dict[str, str] = {
    "server_version": SERVER_VERSION,
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "integer_datetimes": "on",
    "standard_conforming_strings": "on",
    "is_superuser": "off",
    "default_transaction_read_only": "on",
    "in_hot_standby": "off",
}

_MORE_SETTINGS: dict[str, str] = {
    "server_version_num": SERVER_VERSION_NUM,
    # DuckDB gives each read a snapshot of the last commit: PostgreSQL calls that repeatable read.
    "transaction_isolation": "repeatable read",
    "transaction isolation level": "repeatable read",
    "transaction_read_only": "on",
    "search_path": '"$user", public, main',
    "max_identifier_length": "63",
    "max_index_keys": "32",
    "lc_collate": "C",
    "lc_ctype": "C",
    "extra_float_digits": "3",
    "lock_timeout": "0",
    "bytea_output": "hex",
    "datestyle": "ISO, MDY",
    "timezone": "UTC",
    "max_connections": "32",
    "block_size": "8192",
}


def duration(seconds: float) -> str:
    """A time setting as PostgreSQL's SHOW writes it: in the largest unit that holds it exactly
    ("15s", "30min", "10500ms"); "0" for none."""
    value, unit = round(seconds * 1000), "ms"
    for factor, larger in ((1000, "s"), (60, "min"), (60, "h"), (24, "d")):
        if value == 0 or value % factor:
            break
        value, unit = value // factor, larger
    return f"{value}{unit}" if value else "0"


_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?)\s*(us|ms|s|min|h|d)?\s*", re.IGNORECASE)


def parse_duration(name: str, text: str) -> float:
    """A time setting as PostgreSQL reads it (milliseconds unless a unit is given), in seconds;
    ``DEFAULT`` is 0."""
    if text.strip().lower() == "default":
        return 0.0
    found = _DURATION.fullmatch(text)
    if found is None:
        raise ReadError("22023", f'invalid value for parameter "{name}": "{text[:40]}"')
    number, unit = float(found.group(1)), (found.group(2) or "ms").lower()
    return number / 1_000_000 if unit == "us" else number * _MS[unit] / 1000


def _milliseconds(text: str) -> str | None:
    """``duration``'s text as pg_settings' number of milliseconds, or None for another setting."""
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number) :]
    return str(int(number) * _MS[unit]) if number.isdigit() and unit in _MS else None


def settings_for(session_values: dict[str, str], served: dict[str, str] | None = None) -> dict[str, str]:
    """Every SHOW-able name (lower case) with its value; ``application_name`` is the client's own.
    ``served``: the endpoint's own limits (its statement timeout ...), which a SET does not change."""
    merged = {k.lower(): v for k, v in {**STARTUP_PARAMETERS, **_MORE_SETTINGS}.items()}
    for name, value in session_values.items():
        # Values that change how we encode data stay ours; the client cannot switch them.
        if name.lower() not in {k.lower() for k in STARTUP_PARAMETERS}:
            merged[name.lower()] = value
    merged.update(served or {})
    return merged


# Columns PostgreSQL 15 clients read that DuckDB's pg_catalog views lack: added with PostgreSQL's
# value for an ordinary, unpartitioned, unsecured object.
EXTRA_COLUMNS: dict[str, dict[str, str]] = {
    "pg_collation": {
        "collnamespace": "0",
        "collprovider": "'c'",
        "collencoding": "-1",
        "collcollate": "'C'",
        "collctype": "'C'",
    },
    "pg_database": {
        "datdba": "10",
        "encoding": "6",  # UTF8
        "datcollate": "'C'",
        "datctype": "'C'",
        "daticulocale": "NULL::VARCHAR",
        "datlocprovider": "'c'",
        "datacl": "NULL::VARCHAR[]",
        "datconnlimit": "-1",
        "dattablespace": "0",
    },
}


# Every index the store has, as PostgreSQL counts them: each primary key and unique constraint is
# backed by an index (DuckDB keeps those out of duckdb_indexes()), plus the CREATE INDEX ones.
# attnums count from 1, as pg_attribute.attnum does (0 for an expression); the oid of a key's index
# is its constraint's oid, which DuckDB's pg_get_constraintdef() already reads back.
INDEX_KEYS = """
SELECT table_oid * 1000000 + constraint_index AS oid, table_oid, schema_oid, schema_name, table_name,
       constraint_name AS name, constraint_type = 'PRIMARY KEY' AS is_primary, true AS is_unique,
       list_transform(constraint_column_indexes, i -> CAST(i + 1 AS SMALLINT)) AS attnums,
       constraint_column_names AS column_names
FROM duckdb_constraints() WHERE constraint_type IN ('PRIMARY KEY', 'UNIQUE')
UNION ALL
SELECT index_oid, table_oid, schema_oid, schema_name, table_name, index_name, false, is_unique,
       list_transform(parts, p -> CAST(coalesce(list_position(table_columns, p), 0) AS SMALLINT)), parts
FROM (
    SELECT *, list_transform(string_split(trim(expressions, '[]'), ', '), p -> trim(trim(p, ''''), '"')) AS parts,
           (SELECT list(column_name ORDER BY column_index) FROM duckdb_columns() AS c
            WHERE c.table_oid = i.table_oid) AS table_columns
    FROM duckdb_indexes() AS i
)
"""

# pg_get_indexdef(oid, column, pretty): the index's definition, or its column-th column's name.
INDEX_DEFINITION = f"""
(SELECT CASE WHEN coalesce(_a1, 0) = 0
             THEN 'CREATE ' || CASE WHEN is_unique THEN 'UNIQUE ' ELSE '' END || 'INDEX ' || name || ' ON '
                  || schema_name || '.' || table_name || ' USING art (' || array_to_string(column_names, ', ') || ')'
             ELSE list_extract(column_names, _a1) END
 FROM ({INDEX_KEYS}) AS k WHERE k.oid = _a0)
"""

# Catalog tables whose keys DuckDB's views get wrong for a PostgreSQL client: pg_constraint counts
# conkey from 0 and lists NOT NULL (PostgreSQL 15 keeps that in pg_attribute); pg_index and
# pg_class leave out the indexes behind keys. pg_class's untyped (NULL) columns get PostgreSQL's
# types, which functions like array_to_string() need.
KEY_CATALOG: dict[str, str] = {
    "pg_constraint": """
SELECT table_oid * 1000000 + constraint_index AS oid, constraint_name AS conname, schema_oid AS connamespace,
       CASE constraint_type WHEN 'CHECK' THEN 'c' WHEN 'UNIQUE' THEN 'u' WHEN 'PRIMARY KEY' THEN 'p'
            WHEN 'FOREIGN KEY' THEN 'f' END AS contype,
       false AS condeferrable, false AS condeferred, true AS convalidated, table_oid AS conrelid,
       CAST(0 AS BIGINT) AS contypid,
       CASE WHEN constraint_type IN ('PRIMARY KEY', 'UNIQUE') THEN table_oid * 1000000 + constraint_index
            ELSE 0 END AS conindid,
       CAST(0 AS BIGINT) AS conparentid, CAST(0 AS BIGINT) AS confrelid, 'a' AS confupdtype,
       'a' AS confdeltype, 's' AS confmatchtype, true AS conislocal, 0 AS coninhcount, false AS connoinherit,
       list_transform(constraint_column_indexes, i -> CAST(i + 1 AS SMALLINT)) AS conkey,
       CAST(NULL AS SMALLINT[]) AS confkey, CAST(NULL AS BIGINT[]) AS conpfeqop,
       CAST(NULL AS BIGINT[]) AS conppeqop, CAST(NULL AS BIGINT[]) AS conffeqop,
       CAST(NULL AS BIGINT[]) AS conexclop, expression AS conbin
FROM duckdb_constraints() WHERE constraint_type <> 'NOT NULL'
""",
    "pg_index": f"""
SELECT oid AS indexrelid, table_oid AS indrelid, CAST(len(attnums) AS SMALLINT) AS indnatts,
       CAST(len(attnums) AS SMALLINT) AS indnkeyatts, is_unique AS indisunique, is_primary AS indisprimary,
       false AS indisexclusion, true AS indimmediate, false AS indisclustered, true AS indisvalid,
       false AS indcheckxmin, true AS indisready, true AS indislive, false AS indisreplident,
       attnums AS indkey, list_transform(attnums, a -> CAST(0 AS BIGINT)) AS indcollation,
       list_transform(attnums, a -> CAST(0 AS BIGINT)) AS indclass,
       list_transform(attnums, a -> CAST(0 AS SMALLINT)) AS indoption,
       CAST(NULL AS VARCHAR) AS indexprs, CAST(NULL AS VARCHAR) AS indpred, false AS indnullsnotdistinct
FROM ({INDEX_KEYS}) AS k
""",
    "pg_class": f"""
SELECT * REPLACE (CAST(NULL AS VARCHAR[]) AS reloptions, CAST(NULL AS VARCHAR[]) AS relacl,
                  relhasindex OR oid IN (SELECT table_oid FROM ({INDEX_KEYS})) AS relhasindex),
       false AS relforcerowsecurity
FROM pg_catalog.pg_class WHERE relkind <> 'i'
UNION ALL BY NAME
SELECT oid, name AS relname, schema_oid AS relnamespace, 'i' AS relkind, 0 AS relam,
       len(attnums) AS relnatts, 'p' AS relpersistence, CAST(0 AS FLOAT) AS reltuples, 0 AS relpages,
       0 AS reltablespace, 0 AS relowner, false AS relhasindex, false AS relisshared, 0 AS relchecks,
       false AS relhasrules, false AS relhastriggers, false AS relhassubclass, false AS relrowsecurity,
       false AS relforcerowsecurity, true AS relispopulated, false AS relispartition,
       CAST(NULL AS VARCHAR[]) AS reloptions, CAST(NULL AS VARCHAR[]) AS relacl
FROM ({INDEX_KEYS}) AS k
""",
    # Untyped (NULL) columns get PostgreSQL's values for a plain base type: pgJDBC's getTypeInfo
    # keeps the types whose typrelid is 0, and NULL kept none. DuckDB's types without a PostgreSQL
    # OID (hugeint, struct ...) are left out: a client never sees them, they are sent as text.
    "pg_type": """
SELECT * REPLACE (CAST(0 AS BIGINT) AS typrelid, CAST(0 AS BIGINT) AS typelem, CAST(0 AS BIGINT) AS typarray,
                  CAST(0 AS BIGINT) AS typbasetype, CAST(-1 AS INTEGER) AS typtypmod, 0 AS typndims,
                  ',' AS typdelim, false AS typnotnull, CAST(0 AS BIGINT) AS typcollation)
FROM pg_catalog.pg_type WHERE oid IS NOT NULL
""",
}


def _values_table(columns: tuple[str, ...], rows: list[tuple[str | int | bool, ...]]) -> str:
    def quote(value: str | int | bool) -> str:
        if isinstance(value, bool | int):
            return str(value).lower()
        return "'" + value.replace("'", "''") + "'"

    if not rows:
        return "SELECT " + ", ".join(f"NULL::VARCHAR AS {c}" for c in columns) + " WHERE false"
    body = ", ".join("(" + ", ".join(quote(v) for v in row) + ")" for row in rows)
    return f"SELECT * FROM (VALUES {body}) AS v({', '.join(columns)})"


def replaced_tables(user: str, settings: dict[str, str]) -> dict[str, str]:
    """Catalog tables answered from our own values: DuckDB's pg_settings would show the engine's
    settings (file paths among them), and DuckDB has no roles."""
    role = (user, False, True, False, False, True, False, -1, 10)
    role_columns = (
        "rolname", "rolsuper", "rolinherit", "rolcreaterole", "rolcreatedb", "rolcanlogin",
        "rolreplication", "rolconnlimit", "oid",
    )  # fmt: skip
    return {
        **KEY_CATALOG,
        # Time settings as PostgreSQL lists them: a number of milliseconds, and the unit.
        "pg_settings": _values_table(
            ("name", "setting", "unit", "short_desc", "vartype"),
            [
                (name, ms, "ms", "", "integer")
                if name.endswith("_timeout") and (ms := _milliseconds(value))
                else (name, value, "", "", "string")
                for name, value in sorted(settings.items())
            ],
        ),
        "pg_roles": _values_table(role_columns, [role]),
        "pg_user": _values_table(
            ("usename", "usesysid", "usecreatedb", "usesuper"), [(user, 10, False, False)]
        ),
    }


# Catalog tables for features the store does not have (policies, publications, inheritance,
# triggers, extended statistics): empty, with the columns psql and drivers select from them.
EMPTY_TABLES: dict[str, str] = {
    "pg_policy": "oid BIGINT, polname VARCHAR, polrelid BIGINT, polcmd VARCHAR, polpermissive BOOLEAN, "
    "polroles BIGINT[], polqual VARCHAR, polwithcheck VARCHAR",
    "pg_statistic_ext": "oid BIGINT, stxrelid BIGINT, stxname VARCHAR, stxnamespace BIGINT, stxowner BIGINT, "
    "stxstattarget INTEGER, stxkeys INTEGER[], stxkind VARCHAR[], stxexprs VARCHAR",
    "pg_publication": "oid BIGINT, pubname VARCHAR, pubowner BIGINT, puballtables BOOLEAN, pubinsert BOOLEAN, "
    "pubupdate BOOLEAN, pubdelete BOOLEAN, pubtruncate BOOLEAN, pubviaroot BOOLEAN",
    "pg_publication_rel": "oid BIGINT, prpubid BIGINT, prrelid BIGINT, prqual VARCHAR, prattrs INTEGER[]",
    "pg_publication_namespace": "oid BIGINT, pnpubid BIGINT, pnnspid BIGINT",
    "pg_inherits": "inhrelid BIGINT, inhparent BIGINT, inhseqno INTEGER, inhdetachpending BOOLEAN",
    "pg_trigger": "oid BIGINT, tgrelid BIGINT, tgparentid BIGINT, tgname VARCHAR, tgfoid BIGINT, "
    "tgtype INTEGER, tgenabled VARCHAR, tgisinternal BOOLEAN, tgconstraint BIGINT",
    "pg_rewrite": "oid BIGINT, rulename VARCHAR, ev_class BIGINT, ev_type VARCHAR, is_instead BOOLEAN",
    "pg_partitioned_table": "partrelid BIGINT, partstrat VARCHAR, partnatts INTEGER, partdefid BIGINT",
    "pg_foreign_table": "ftrelid BIGINT, ftserver BIGINT, ftoptions VARCHAR[]",
    "pg_opclass": "oid BIGINT, opcname VARCHAR, opcmethod BIGINT, opcnamespace BIGINT, opcdefault BOOLEAN",
    "pg_extension": "oid BIGINT, extname VARCHAR, extowner BIGINT, extnamespace BIGINT, extversion VARCHAR",
}


def empty_table_sql(name: str) -> str:
    columns = [part.strip().split(" ", 1) for part in EMPTY_TABLES[name].split(", ")]
    select = ", ".join(f"CAST(NULL AS {kind}) AS {col}" for col, kind in columns)
    return f"SELECT {select} WHERE false"


# format_type() as PostgreSQL spells types (DuckDB's gives "int8", "varchar"; SQLAlchemy's
# reflection and psql's \d expect "bigint", "character varying").
FORMAT_TYPE_NAMES: dict[int, str] = {
    16: "boolean", 17: "bytea", 20: "bigint", 21: "smallint", 23: "integer", 25: "text", 114: "json",
    700: "real", 701: "double precision", 1043: "character varying", 1082: "date",
    1083: "time without time zone", 1114: "timestamp without time zone",
    1184: "timestamp with time zone", 1186: "interval", 1700: "numeric", 2950: "uuid",
}  # fmt: skip


def _pg_spelling(column: str) -> str:
    """A CASE turning DuckDB's type names in ``column`` into PostgreSQL's information_schema
    spelling ("VARCHAR" -> "character varying"), which Grafana's query builder sorts columns by."""
    cases = " ".join(
        f"WHEN '{duck}' THEN '{FORMAT_TYPE_NAMES[oid]}'"
        for duck, oid in ((duck, pg_types.pg_type(duck).oid) for duck in pg_types.DUCKDB_NAMES)
        if oid in FORMAT_TYPE_NAMES
    )
    base = f"regexp_replace({column}, '\\(.*', '')"
    return f"CASE WHEN {column} LIKE '%]' THEN 'ARRAY' ELSE CASE {base} {cases} ELSE lower({column}) END END"


# information_schema views DuckDB answers once per attached catalog (the store, "system", "temp"):
# narrowed to the store's, plus the two catalog schemas, so a schema list shows each schema once.
# Column types are spelled as PostgreSQL spells them.
INFORMATION_SCHEMA_VIEWS: dict[str, str] = {
    "schemata": "SELECT * FROM information_schema.schemata WHERE catalog_name = current_database() "
    "OR (catalog_name = 'system' AND schema_name IN ('information_schema', 'pg_catalog'))",
    "columns": f"SELECT * REPLACE ({_pg_spelling('data_type')} AS data_type) FROM information_schema.columns",
}

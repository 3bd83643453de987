"""Ad-hoc SQL from outside the process (``POST /sql``), allowed only when it can only read the store.

Two layers, both on DuckDB's own parser rather than on regular expressions over the text:

1. ``extract_statements`` must find exactly one statement and its type must be SELECT. That
   refuses INSERT/UPDATE/DELETE/DROP/CREATE/ATTACH/DETACH/COPY/PRAGMA/SET/CALL/INSTALL/LOAD/
   EXPORT and any ``SELECT 1; DROP TABLE x`` injection.
2. A SELECT can still read (or probe) files: ``read_csv(...)``, ``glob(...)``, ``FROM 'x.csv'``
   (a replacement scan), ``query('...')``. So the statement's syntax tree
   (``json_serialize_sql``) is walked: table functions must be on an allow-list, scalar functions
   off a deny-list, and a table name that looks like a path or URL is refused.

Then the query runs wrapped in ``SELECT * FROM (...) LIMIT n`` with a time limit
(``queries.execute`` interrupts it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import duckdb

from sensorstream.store.queries import MAX_ROWS, QueryError, Result, execute, read_cursor

# Table functions a dashboard query may use: generators and the catalog, nothing touching files.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "range", "generate_series", "unnest", "json_each", "json_tree",
        "duckdb_tables", "duckdb_views", "duckdb_columns", "duckdb_indexes", "duckdb_constraints",
        "duckdb_schemas", "duckdb_databases", "duckdb_types", "duckdb_functions", "duckdb_keywords",
        "pragma_table_info", "pragma_storage_info", "pragma_version", "pragma_database_size",
        "show", "describe", "summarize",
    }
)  # fmt: skip
# Scalar functions that reach outside the database or run SQL text.
DENIED_FUNCTIONS = frozenset(
    {"glob", "query", "query_table", "getenv", "sniff_csv", "load_extension", "current_setting"}
)
DENIED_PREFIXES = ("read_", "parquet_", "iceberg_", "delta_", "sqlite_", "postgres_", "mysql_", "http")
_PATH_CHARS = set("./\\:~")


class SqlRefused(QueryError):
    """The SQL is not a single read-only SELECT over the store."""


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _function_refused(name: str) -> bool:
    name = name.lower()
    return name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES)


def check(cur: duckdb.DuckDBPyConnection, sql: str) -> str:
    """The one SELECT statement in ``sql`` (without a trailing ``;``), or :class:`SqlRefused`."""
    if not sql or not sql.strip():
        raise SqlRefused("empty SQL")
    try:
        statements = cur.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlRefused(f"SQL does not parse: {exc}") from exc
    if len(statements) != 1:
        raise SqlRefused(f"exactly one statement is allowed; got {len(statements)}")
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        kind = getattr(statement.type, "name", str(statement.type))
        raise SqlRefused(f"only SELECT (or WITH … SELECT) is allowed, not {kind}")
    text = statement.query.strip().rstrip(";").strip()
    raw = cur.execute("SELECT json_serialize_sql($q)", {"q": text}).fetchone()
    tree = json.loads(raw[0]) if raw else {"error": True}
    if tree.get("error"):
        raise SqlRefused(f"SQL cannot be checked: {tree.get('error_message', 'unsupported statement')}")
    for node in _nodes(tree):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            name = str(node.get("function", {}).get("function_name", "")).lower()
            if name not in ALLOWED_TABLE_FUNCTIONS:
                raise SqlRefused(f"table function {name}() is not allowed here (it may read files)")
        elif node.get("class") == "FUNCTION" and _function_refused(str(node.get("function_name", ""))):
            raise SqlRefused(f"function {node['function_name']}() is not allowed here")
        elif kind in ("BASE_TABLE", "SHOW_REF"):
            name = str(node.get("table_name") or "")
            if _PATH_CHARS & set(name):
                raise SqlRefused(f"{name!r} looks like a file or URL; only the store's tables can be read")
    return text


def run_sql(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    max_rows: int = MAX_ROWS,
    timeout: float = 10.0,
) -> Result:
    """Check ``sql`` and run it on a fresh cursor with a row cap and a time limit."""
    if (params is not None and not isinstance(params, Sequence | Mapping)) or isinstance(params, str):
        raise SqlRefused("params must be a list (for ?) or an object (for $name)")
    cur = read_cursor(con)
    try:
        text = check(cur, sql)
        # New lines around the user's text: a trailing "-- comment" cannot swallow the wrapper.
        wrapped = f"SELECT * FROM (\n{text}\n) AS q LIMIT {int(max_rows) + 1}"
        return execute(cur, wrapped, params or None, max_rows=max_rows, timeout=timeout)
    finally:
        cur.close()

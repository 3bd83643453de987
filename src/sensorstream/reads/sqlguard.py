"""Ad-hoc SQL from outside the process (``POST /sql``), allowed only when it can only read the store.

The guard is the first of two walls; the second is the engine itself (``reads.lockdown``: no file
or network access, no extension loading, configuration locked), so a query the guard misses still
cannot reach outside the store. The guard works on DuckDB's own parser, never on regular
expressions over the text:

1. The text's size is capped *before* anything parses or binds it: DuckDB's binder does not
   check for interrupts, so a 50 KB ``SELECT 1,1,1,…`` could keep a core busy for minutes.
2. ``extract_statements`` must find exactly one statement and its type must be SELECT. That
   refuses INSERT/UPDATE/DELETE/DROP/CREATE/ATTACH/COPY/PRAGMA/SET/CALL/INSTALL/LOAD/EXPORT/
   UPDATE EXTENSIONS and any ``SELECT 1; DROP TABLE x`` injection.
3. The syntax tree (``json_serialize_sql``) is walked: the number of output columns per SELECT is
   capped; table functions must be on an allow-list; scalar functions off a deny-list (files,
   SQL text, settings, sleeps); a table name that looks like a path or URL, and the catalog views
   that show the machine's settings or the store's path, are refused; recursive CTEs are refused
   (each step can double a value, and DuckDB gives up past 4 GB with an error that invalidates
   the whole database); and
   functions whose output grows with a number argument (``repeat``, ``lpad``, scalar ``range``…)
   need that number as a literal under :data:`MAX_AMPLIFY`, because DuckDB builds such a value in
   one uninterruptible call outside its memory limit.

Verdicts are remembered (:data:`VERDICTS_KEPT`, newest kept): they depend on the text and the two
limits alone, and a client that sends the same text again and again (a retry loop, a hostile
reader) then costs a lookup, not a parse and a walk (up to 40 ms of a core for 900 nested calls).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import duckdb

from sensorstream.reads.errors import QueryError, SqlRefused, SqlSyntaxError, TooLarge, first_line

# Table functions a dashboard query may use: generators and the catalog, nothing touching files.
# duckdb_databases() and pragma_database_size() are not here: a path, the memory limit.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "range", "generate_series", "unnest", "json_each", "json_tree",
        "duckdb_tables", "duckdb_views", "duckdb_columns", "duckdb_indexes", "duckdb_constraints",
        "duckdb_schemas", "duckdb_types", "duckdb_functions", "duckdb_keywords",
        "pragma_table_info", "pragma_storage_info", "pragma_version",
        "show", "describe", "summarize",
    }
)  # fmt: skip
# Scalar functions that reach outside the database, run SQL text or show the machine's settings.
DENIED_FUNCTIONS = frozenset(
    {
        "glob", "query", "query_table", "getenv", "sniff_csv", "load_extension", "current_setting",
        "which_secret", "set_config", "pg_settings",
    }
)  # fmt: skip
DENIED_PREFIXES = ("read_", "parquet_", "iceberg_", "delta_", "sqlite_", "postgres_", "mysql_", "http")
# Sleeps do nothing but hold one of the read slots every client of both endpoints shares.
SLEEPS = frozenset({"sleep_ms", "pg_sleep", "pg_sleep_for", "pg_sleep_until"})
# Catalog views over duckdb_settings(), duckdb_databases() or the engine's log: settings, the
# store's absolute path (pragma_database_list's "file"), what other sessions ran.
DENIED_TABLES = frozenset(
    {"pg_settings", "duckdb_settings", "pg_file_settings", "duckdb_databases", "pragma_database_list", "duckdb_logs"}
)  # fmt: skip
_PATH_CHARS = set("./\\:~")

# function -> positions of the arguments that set the output's size (None: every argument).
AMPLIFIERS: dict[str, tuple[int, ...] | None] = {
    "repeat": (1,), "lpad": (1,), "rpad": (1,), "bar": (3,),
    "range": None, "generate_series": None, "list_resize": (1,), "array_resize": (1,),
}  # fmt: skip
MAX_AMPLIFY = 100_000
_FORMATS = frozenset({"printf", "format"})
_WIDE = re.compile(r"\d{5,}")  # a width or precision of 10,000 or more in a format string


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


def _literal(expression: Any) -> str | None:
    """The text of a constant (or a cast of one), else None."""
    if isinstance(expression, dict) and expression.get("class") == "CAST":
        return _literal(expression.get("child"))
    if isinstance(expression, dict) and expression.get("class") == "CONSTANT":
        literal = expression.get("value") or expression.get("literal") or {}
        return str(literal.get("text", literal.get("value", "")))
    return None


def _check_amplifier(name: str, node: dict[str, Any]) -> None:
    args = [a.get("expression", a) if isinstance(a, dict) else a for a in node.get("arguments") or []]
    if not args:
        args = node.get("children") or []
    if name in _FORMATS:
        text = _literal(args[0]) if args else None
        if text is None or _WIDE.search(text):
            raise SqlRefused(f"{name}() needs a literal format string without huge widths here")
        return
    positions = AMPLIFIERS[name]
    for i, arg in enumerate(args):
        if positions is not None and i not in positions:
            continue
        text = _literal(arg)
        try:
            size = abs(float(text)) if text is not None else None
        except ValueError:
            size = None
        if size is None or size > MAX_AMPLIFY:
            raise SqlRefused(
                f"{name}() may build a huge value; here its size argument must be a number literal "
                f"of at most {MAX_AMPLIFY:,}"
            )


MAX_PLACEHOLDER = 65535  # as PostgreSQL's protocol, which counts parameters in 16 bits


def _walk(tree: Any, max_columns: int) -> None:
    table_calls: set[int] = set()  # a table function's own call: range(n) there streams n rows
    for node in _nodes(tree):
        kind = node.get("type")
        if kind == "SELECT_NODE" and len(node.get("select_list") or []) > max_columns:
            raise TooLarge(
                f"a SELECT may list at most {max_columns} columns; this one lists {len(node['select_list'])}"
            )
        if kind == "RECURSIVE_CTE_NODE":
            raise SqlRefused("recursive CTEs are not allowed here (each step can double the data)")
        if kind == "TABLE_FUNCTION":
            name = str(node.get("function", {}).get("function_name", "")).lower()
            if name not in ALLOWED_TABLE_FUNCTIONS:
                raise SqlRefused(f"table function {name}() is not allowed here (it may read files)")
            table_calls.add(id(node.get("function")))
        elif node.get("class") == "FUNCTION":
            name = str(node.get("function_name", "")).lower()
            if name in SLEEPS:
                raise SqlRefused(
                    f"function {node['function_name']}() is not allowed here: a sleep holds one of the "
                    "read slots every client shares"
                )
            if _function_refused(name):
                raise SqlRefused(f"function {node['function_name']}() is not allowed here")
            if (name in AMPLIFIERS or name in _FORMATS) and id(node) not in table_calls:
                _check_amplifier(name, node)
        elif kind in ("BASE_TABLE", "SHOW_REF"):
            name = str(node.get("table_name") or "")
            if _PATH_CHARS & set(name):
                raise SqlRefused(f"{name!r} looks like a file or URL; only the store's tables can be read")
            if name.lower() in DENIED_TABLES:
                raise SqlRefused(f"{name} shows the server's settings or files and is not readable here")
        elif (
            node.get("class") == "PARAMETER"
            and str(node.get("identifier", "")).isdigit()
            and int(node["identifier"]) > MAX_PLACEHOLDER
        ):
            # DuckDB's relation API (the one the read API's process has the writer run) makes room
            # for as many values as the largest placeholder: $2000000000 held a reader for minutes.
            raise TooLarge(
                f"a placeholder may be at most ${MAX_PLACEHOLDER}; this one is ${node['identifier']}"
            )


def sql_too_large(size: int, max_sql_bytes: int) -> TooLarge:
    """The refusal of a text over the size limit, checked before anything parses it."""
    return TooLarge(
        f"the SQL text is {size:,} bytes; at most {max_sql_bytes:,} are accepted "
        "(SENSORSTREAM_READ_MAX_SQL_BYTES)"
    )


VERDICTS_KEPT = 512  # texts are at most READ_MAX_SQL_BYTES each: 8 MB with the default 16 KB

_verdicts: OrderedDict[tuple[str, int, int], tuple[type[QueryError] | None, str]] = OrderedDict()
_verdicts_lock = threading.Lock()


def check(
    cur: duckdb.DuckDBPyConnection, sql: str, *, max_sql_bytes: int = 16_384, max_columns: int = 200
) -> str:
    """The one SELECT statement in ``sql`` (without a trailing ``;``), or a :class:`SqlRefused`."""
    if not isinstance(sql, str):
        return _check(cur, sql, max_sql_bytes, max_columns)
    key = (sql, max_sql_bytes, max_columns)
    with _verdicts_lock:
        known = _verdicts.get(key)
        if known is not None:
            _verdicts.move_to_end(key)
    if known is None:
        try:
            known = (None, _check(cur, sql, max_sql_bytes, max_columns))
        except QueryError as exc:
            known = (type(exc), str(exc))
        if len(sql) <= max_sql_bytes:  # a text refused for its size is not kept
            with _verdicts_lock:
                _verdicts[key] = known
                while len(_verdicts) > VERDICTS_KEPT:
                    _verdicts.popitem(last=False)
    refused, text = known
    if refused is not None:
        raise refused(text)
    return text


def syntax_tree(cur: duckdb.DuckDBPyConnection, text: str) -> dict[str, Any]:
    """DuckDB's syntax tree of ``text`` (``json_serialize_sql``); it has ``"error"`` set where
    DuckDB cannot serialize the statement. Raises what DuckDB or a too deep JSON raise."""
    raw = cur.execute("SELECT json_serialize_sql($q)", {"q": text}).fetchone()
    return json.loads(raw[0]) if raw else {"error": True}


def _check(cur: duckdb.DuckDBPyConnection, sql: str, max_sql_bytes: int, max_columns: int) -> str:
    if not isinstance(sql, str) or not sql.strip():
        raise SqlRefused("the SQL text is empty")
    size = len(sql.encode("utf-8", "surrogatepass"))
    if size > max_sql_bytes:
        raise sql_too_large(size, max_sql_bytes)
    try:
        statements = cur.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlSyntaxError(f"the SQL does not parse: {first_line(exc)}") from exc
    if len(statements) != 1:
        raise SqlRefused(f"exactly one statement is allowed; got {len(statements)}")
    statement = statements[0]
    try:
        kind = statement.type
    except ValueError:  # a statement type the Python binding has no name for (UPDATE EXTENSIONS)
        kind = None
    if kind != duckdb.StatementType.SELECT:
        name = getattr(kind, "name", None) or "this kind of statement"
        raise SqlRefused(f"only SELECT (or WITH … SELECT) is allowed, not {name}")
    text = statement.query.strip().rstrip(";").strip()
    try:
        tree = syntax_tree(cur, text)
    except RecursionError:
        raise SqlRefused("the SQL is nested too deeply to be checked") from None
    except duckdb.Error as exc:
        raise SqlRefused(f"the SQL cannot be checked: {first_line(exc)}") from exc
    if tree.get("error"):
        raise SqlRefused(f"the SQL cannot be checked: {tree.get('error_message', 'unsupported statement')}")
    _walk(tree, max_columns)
    return text

"""From what PostgreSQL clients send to what DuckDB runs, on sqlglot's PostgreSQL parser.

A query's PostgreSQL-only parts are rewritten: sqlglot's PostgreSQL -> DuckDB translation, plus
the catalog functions DuckDB's ``pg_catalog`` lacks or answers differently (``version()``,
``pg_get_userbyid``, ``current_setting``, ``::regclass`` ...). Splitting and sorting statements is
``statements``' job, naming result columns ``colnames``'.

The rewritten text still goes through the read API's guard; nothing here decides what may run.
"""

from __future__ import annotations

import re
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from sensorstream.serve.pgwire import pg_catalog


def _literal(value: str | None) -> exp.Expression:
    return exp.Null() if value is None else exp.Literal.string(value)


def _oid_lookup(table: str, key: str, name: exp.Expression) -> exp.Expression:
    """``(SELECT oid FROM pg_catalog.<table> WHERE <key> = name LIMIT 1)``: what ``'x'::regclass`` means."""
    if isinstance(name, exp.Literal):
        value: exp.Expression = exp.Literal.string(name.name.split(".")[-1].strip('"'))
    else:  # a parameter holding 'schema.name' or 'name'
        value = exp.Anonymous(
            this="split_part", expressions=[name, exp.Literal.string("."), exp.Literal.number(-1)]
        )
    return exp.paren(
        sqlglot.select("oid")
        .from_(f"pg_catalog.{table}")
        .where(exp.EQ(this=exp.column(key), expression=value))
        .limit(1),
        copy=False,
    )


_REG_TYPES = {"REGCLASS": ("pg_class", "relname"), "REGTYPE": ("pg_type", "typname")}
_AS_BIGINT = {"REGCLASS", "REGTYPE", "REGPROC", "REGPROCEDURE", "REGNAMESPACE", "OID", "XID", "REGROLE"}


# pg_catalog.text and friends: the same types under their schema-qualified names.
_PLAIN_TYPES = {"TEXT": "TEXT", "NAME": "TEXT", "VARCHAR": "TEXT", "INT2": "SMALLINT", "INT4": "INTEGER",
                "INT8": "BIGINT", "BOOL": "BOOLEAN", "FLOAT8": "DOUBLE", "FLOAT4": "FLOAT", "CHAR": "TEXT",
                "BPCHAR": "TEXT", "TIMESTAMPTZ": "TIMESTAMPTZ", "TIMESTAMP": "TIMESTAMP", "NUMERIC": "DECIMAL"}  # fmt: skip
_FALSE_FUNCTIONS = {"pg_relation_is_publishable", "pg_is_in_recovery"}
_SIZE_FUNCTIONS = {"pg_table_size", "pg_relation_size", "pg_total_relation_size", "pg_indexes_size"}


def type_name(data_type: exp.DataType) -> str:
    """A cast's target as PostgreSQL spells it, without a schema: REGCLASS, TEXT, INT4 ..."""
    return data_type.sql(dialect="postgres").upper().split(".")[-1].strip('"')


_MAX_ARGS = {"pg_get_expr": 2}
_RENAMED = {"json_build_object": "json_object", "jsonb_build_object": "json_object"}
# Definitions of objects the store never has (extended statistics, triggers, rules, partitions).
_NULL_FUNCTIONS = {
    "pg_get_statisticsobjdef_columns", "pg_get_triggerdef", "pg_get_ruledef", "pg_get_partkeydef",
    "pg_get_function_result", "pg_get_function_arguments", "pg_get_function_identity_arguments",
    "pg_get_serial_sequence", "pg_get_partition_constraintdef",
    "pg_advisory_unlock_all",  # no advisory locks are ever taken; asyncpg's pool calls it on release
}  # fmt: skip

# PostgreSQL functions DuckDB lacks, as DuckDB expressions over their arguments _a0, _a1 ...
_TEMPLATES = {
    # An identifier is quoted unless it is lower case letters, digits, _ and $ (not first) and no
    # keyword other than an unreserved one; DuckDB's keyword list is PostgreSQL's grammar's.
    "quote_ident": "CASE WHEN regexp_full_match(_a0, '[a-z_][a-z0-9_$]*') AND _a0 NOT IN "
    "(SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category <> 'unreserved') "
    "THEN _a0 ELSE '\"' || replace(_a0, '\"', '\"\"') || '\"' END",
    # 'a."B c"' -> [a, B c]: dots split outside double quotes; quoted parts keep their case.
    "parse_ident": 'list_transform(regexp_extract_all(_a0, \'"(?:[^"]|"")*"|[^."]+\'), '
    "p -> CASE WHEN starts_with(p, '\"') THEN replace(p[2:-2], '\"\"', '\"') ELSE lower(trim(p)) END)",
    "array_lower": "CASE WHEN len(_a0) > 0 THEN 1 END",  # lists count from 1, as arrays do
    "pg_get_indexdef": pg_catalog.INDEX_DEFINITION,
}


@lru_cache(maxsize=16)
def _template_tree(name: str) -> exp.Expression:
    return sqlglot.parse_one(_TEMPLATES[name], read="duckdb")


def _from_template(name: str, args: list[exp.Expression]) -> exp.Expression:
    tree = _template_tree(name).copy()
    for column in list(tree.find_all(exp.Column)):
        if re.fullmatch(r"_a\d", column.name):
            column.replace(args[int(column.name[2:])].copy())
    return tree


def function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    return node.sql_name().lower() if isinstance(node, exp.Func) else ""


_OPERATORS = {
    "~": lambda a, b: exp.RegexpLike(this=a, expression=b),
    "!~": lambda a, b: exp.not_(exp.RegexpLike(this=a, expression=b)),
    "~*": lambda a, b: exp.RegexpILike(this=a, expression=b),
    "!~*": lambda a, b: exp.not_(exp.RegexpILike(this=a, expression=b)),
    "=": lambda a, b: exp.EQ(this=a, expression=b),
    "<>": lambda a, b: exp.NEQ(this=a, expression=b),
    "<": lambda a, b: exp.LT(this=a, expression=b),
    ">": lambda a, b: exp.GT(this=a, expression=b),
    "<=": lambda a, b: exp.LTE(this=a, expression=b),
    ">=": lambda a, b: exp.GTE(this=a, expression=b),
}


def _named(node: exp.Expression, value: exp.Expression, name: str) -> exp.Expression:
    """``value`` in place of the call ``node``; a bare select-list item keeps the call's column name."""
    if isinstance(node.parent, exp.Select) and node.arg_key == "expressions":
        return exp.alias_(value, name)
    return value


def _is_bare_user(node: exp.Expression) -> bool:
    """``user`` unquoted: in PostgreSQL always the current user, never a column."""
    return (
        isinstance(node, exp.Column)
        and not node.table
        and isinstance(node.this, exp.Identifier)
        and not node.this.quoted
        and node.name.lower() == "user"
    )


def _current_schemas(args: list[exp.Expression]) -> exp.Expression:
    """The search path's schemas that exist (only ``main``), ``pg_catalog`` first when implicit ones count."""
    plain = exp.Array(expressions=[exp.Literal.string("main")])
    implicit = exp.Array(expressions=[exp.Literal.string("pg_catalog"), exp.Literal.string("main")])
    if not args:
        return plain
    return exp.Case().when(args[0].copy(), implicit).else_(plain)


_INTEGER_TYPES = {exp.DataType.Type.SMALLINT, exp.DataType.Type.INT, exp.DataType.Type.BIGINT}


def _is_integer(node: exp.Expression) -> bool:
    """An integer literal or a cast to an integer type: what makes ``/`` an integer division."""
    if isinstance(node, exp.Literal):
        return not node.is_string and node.name.isdigit()
    return isinstance(node, exp.Cast) and node.to.this in _INTEGER_TYPES


def _rewrite_node(node: exp.Expression, user: str, settings: dict[str, str]) -> exp.Expression:
    if isinstance(node, exp.Operator):
        # psql writes OPERATOR(pg_catalog.~) so a user's search_path cannot redefine ~
        op = str(node.args.get("operator", "")).split(".")[-1]
        if op in _OPERATORS:
            return _OPERATORS[op](node.this, node.expression)
    if isinstance(node, exp.CurrentVersion) or (
        isinstance(node, exp.Anonymous) and function_name(node) == "version"
    ):
        return _named(node, exp.Literal.string(pg_catalog.VERSION_TEXT), "version")
    if isinstance(node, exp.Div) and _is_integer(node.this) and _is_integer(node.expression):
        # PostgreSQL divides integers as integers (Grafana reads server_version_num::int/100);
        # DuckDB's / would give 1500.0.
        return exp.IntDiv(this=node.this, expression=node.expression)
    if isinstance(node, exp.CurrentUser | exp.SessionUser) or _is_bare_user(node):
        # DuckDB's user is "duckdb"; PostgreSQL's is whom the client logged in as.
        name = node.name.lower() if isinstance(node, exp.Column) else function_name(node)
        return _named(node, exp.Literal.string(user), name)
    if isinstance(node, exp.CurrentSchemas):
        return _named(node, _current_schemas([node.this] if node.this else []), "current_schemas")
    if isinstance(node, exp.Anonymous):
        name = function_name(node)
        args = node.expressions
        if name == "pg_get_userbyid":
            return _named(node, exp.Literal.string(user), name)
        if name == "current_setting" and args:
            if isinstance(args[0], exp.Literal):
                return _named(node, _literal(settings.get(args[0].name.lower())), name)
            table = pg_catalog.replaced_tables(user, settings)["pg_settings"]
            lookup = sqlglot.parse_one(
                f"(SELECT any_value(setting) FROM ({table}) AS s WHERE name = lower(''))"
            )
            lookup.find(exp.Lower).set("this", args[0])
            return _named(node, lookup, name)
        if name in _MAX_ARGS and len(args) > _MAX_ARGS[name]:
            # PostgreSQL's optional "pretty" flag; DuckDB's macro has no such argument.
            return exp.Anonymous(this=node.this, expressions=args[: _MAX_ARGS[name]])
        if name == "pg_get_indexdef" and args:
            column = args[1] if len(args) > 1 else exp.Literal.number(0)  # 0: the whole definition
            return _named(node, _from_template(name, [args[0], column]), name)
        if name in _NULL_FUNCTIONS:
            return _named(node, exp.cast(exp.Null(), exp.DataType.build("VARCHAR")), name)
        if name in _SIZE_FUNCTIONS:  # DuckDB keeps no per-table size; unknown, not zero
            return _named(node, exp.cast(exp.Null(), exp.DataType.build("BIGINT")), name)
        if name in ("to_regtype", "to_regclass") and args:
            return _named(node, _oid_lookup(*_REG_TYPES["REG" + name[6:].upper()], args[0]), name)
        if name == "format_type" and args:
            cases = exp.Case(this=args[0].copy())
            for oid, text in pg_catalog.FORMAT_TYPE_NAMES.items():
                cases = cases.when(exp.Literal.number(oid), exp.Literal.string(text))
            fallback = exp.Anonymous(this="format_type", expressions=[a.copy() for a in args])
            return _named(node, cases.else_(fallback), name)
        if name == "array_upper" and args:
            return exp.Anonymous(this="len", expressions=args[:1])
        if name == "_pg_expandarray" and args:
            # information_schema._pg_expandarray(a): one row (x, n) per element, as pgJDBC's
            # getPrimaryKeys and getIndexInfo use it.
            expand = sqlglot.parse_one(
                "UNNEST(list_transform(_arr, (v, i) -> struct_pack(x := v, n := i)))", read="duckdb"
            )
            expand.find(exp.Column).replace(args[0])
            return expand
        if name in _RENAMED:
            return exp.Anonymous(this=_RENAMED[name], expressions=args)
        if name in _TEMPLATES and args:
            return _named(node, _from_template(name, args), name)
        if name in _FALSE_FUNCTIONS:
            return _named(node, exp.false(), name)
        if name == "pg_encoding_to_char":
            return _named(node, exp.Literal.string("UTF8"), name)
    if isinstance(node, exp.Cast):
        cast_to = type_name(node.to)
        if cast_to in _REG_TYPES and isinstance(node.this, exp.Literal | exp.Parameter | exp.Placeholder):
            return _oid_lookup(*_REG_TYPES[cast_to], node.this)
        if cast_to in _AS_BIGINT:
            return exp.cast(node.this, exp.DataType.build("BIGINT"))
        base, brackets = cast_to.removesuffix("[]"), "[]" if cast_to.endswith("[]") else ""
        if "PG_CATALOG" in node.to.sql(dialect="postgres").upper() and base in _PLAIN_TYPES:
            return exp.cast(node.this, exp.DataType.build(_PLAIN_TYPES[base] + brackets, dialect="duckdb"))
    return node


# Scalar functions PostgreSQL lets a FROM list call (a one-row table); DuckDB wants table functions.
_SCALARS_IN_FROM = {"parse_ident", "regexp_split_to_array"}


def _scalar_in_from(table: exp.Table) -> bool:
    call = table.this
    return isinstance(call, exp.StringToArray | exp.CurrentSchemas) or (
        isinstance(call, exp.Anonymous) and function_name(call) in _SCALARS_IN_FROM
    )


def _as_one_row_table(table: exp.Table) -> exp.Expression:
    """``f(x) AS s`` in FROM -> ``(SELECT f(x) AS s) AS s``: PostgreSQL names the column as the table."""
    alias = table.args.get("alias")
    table_name = alias.name if alias is not None and alias.name else function_name(table.this)
    columns = alias.columns if alias is not None else []
    column = columns[0].name if columns else table_name
    body = exp.select(exp.alias_(table.this.copy(), column, quoted=True))
    return exp.Subquery(this=body, alias=exp.TableAlias(this=exp.to_identifier(table_name)))


def _patch_catalog_tables(tree: exp.Expression, user: str, settings: dict[str, str]) -> None:
    """pg_catalog tables DuckDB lacks or answers with engine internals become subqueries of ours."""
    replaced = pg_catalog.replaced_tables(user, settings)
    for table in list(tree.find_all(exp.Table)):
        if _scalar_in_from(table):
            table.replace(_as_one_row_table(table))
            continue
        if isinstance(table.this, exp.Func) and table.db.lower() == "pg_catalog":
            table.set("db", None)  # pg_catalog.generate_series(...): DuckDB's live in main
            continue
        name = table.name.lower()
        if table.db.lower() == "information_schema" and name in pg_catalog.INFORMATION_SCHEMA_VIEWS:
            body = sqlglot.parse_one(pg_catalog.INFORMATION_SCHEMA_VIEWS[name], read="duckdb")
            alias = table.alias or name
            table.replace(exp.Subquery(this=body, alias=exp.TableAlias(this=exp.to_identifier(alias))))
            continue
        if table.db.lower() not in ("", "pg_catalog") or table.catalog:
            continue
        if name in replaced:
            body = sqlglot.parse_one(replaced[name], read="duckdb")
        elif name in pg_catalog.EMPTY_TABLES:
            body = sqlglot.parse_one(pg_catalog.empty_table_sql(name), read="duckdb")
        elif name in pg_catalog.EXTRA_COLUMNS:
            extras = ", ".join(f"{v} AS {k}" for k, v in pg_catalog.EXTRA_COLUMNS[name].items())
            body = sqlglot.parse_one(f"SELECT *, {extras} FROM pg_catalog.{name}", read="duckdb")
        else:
            if table.db and not table.alias:
                # DuckDB binds "pg_catalog.t" joined to another pg_catalog table under a name
                # of its own; an explicit alias keeps "t.col" (and "pg_catalog.t.col") resolvable.
                table.set("alias", exp.TableAlias(this=exp.to_identifier(name)))
            continue
        alias = table.alias or name
        table.replace(exp.Subquery(this=body, alias=exp.TableAlias(this=exp.to_identifier(alias))))


def _unqualify_pg_catalog_calls(tree: exp.Expression) -> None:
    # pg_catalog.func(...) parses as a Dot over the call; the rewrites above look at the call.
    for dot in list(tree.find_all(exp.Dot)):
        qualifier = dot.this
        if (
            isinstance(qualifier, exp.Identifier | exp.Column)
            and qualifier.name.lower() in ("pg_catalog", "information_schema")
            and isinstance(dot.expression, exp.Func)
        ):
            dot.replace(dot.expression)


@lru_cache(maxsize=512)
def to_duckdb(sql: str, user: str, settings_items: tuple[tuple[str, str], ...]) -> str:
    """``sql`` as DuckDB SQL, or unchanged when sqlglot cannot read it (DuckDB may still)."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
        return _rewrite(tree, user, dict(settings_items)).sql(dialect="duckdb") if tree else sql
    except SqlglotError:
        return sql


def _rewrite(tree: exp.Expression, user: str, settings: dict[str, str]) -> exp.Expression:
    _unqualify_pg_catalog_calls(tree)
    _patch_catalog_tables(tree, user, settings)
    for column in list(tree.find_all(exp.Column)):
        if column.args.get("db") is not None and column.db.lower() == "pg_catalog":
            # pg_catalog.pg_class.relname: DuckDB binds the table by its bare name once joined.
            column.set("db", None)
    for collate in list(tree.find_all(exp.Collate)):
        # PostgreSQL collation names (pg_catalog.default, "C") mean nothing to DuckDB.
        collate.replace(collate.this)
    # Children first, so a rewritten node's inner parts (a cast inside a cast) are rewritten too.
    for node in reversed(list(tree.dfs())):
        new = _rewrite_node(node, user, settings)
        if new is not node:
            if node is tree:
                tree = new
            else:
                node.replace(new)
    return tree


# Words that mark a query as PostgreSQL-flavoured or catalog-bound: rewrite before the first try.
_PG_MARKERS = re.compile(
    r"pg_catalog|_pg_expandarray|pg_get_|_size\s*\(|to_reg|json_build|format_type|pg_settings|pg_roles|pg_user|pg_database|current_setting|version\s*\(|::\s*reg|::\s*oid|pg_encoding|\bANY\s*\(|!~|~\*"
    r"|pg_advisory|quote_ident|parse_ident|string_to_array|array_lower|current_schemas|information_schema|\buser\b|session_user|current_user",
    re.IGNORECASE,
)


def wants_rewrite_first(sql: str) -> bool:
    """True when ``sql`` would run wrongly or not at all as written (e.g. DuckDB's own version())."""
    return bool(_PG_MARKERS.search(sql))

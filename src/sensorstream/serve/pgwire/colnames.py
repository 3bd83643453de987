"""The names PostgreSQL gives a query's result columns, for the names DuckDB gave them.

PostgreSQL names an unaliased result column after what it is (FigureColname in its parser):
a column by its name, a function call by the function, a cast by what it casts (or the type),
anything else "?column?". DuckDB names it after the expression's text ("count_star()",
'avg("value")'), which would change Grafana's series names and pandas' columns.
"""

from __future__ import annotations

import re
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from sensorstream.serve.pgwire import types as pg_types
from sensorstream.serve.pgwire.params import cast_oid
from sensorstream.serve.pgwire.translate import function_name, type_name

_NO_NAME = "?column?"
_SPECIAL_NAMES: dict[type[exp.Expression], str] = {
    exp.Exists: "exists",
    exp.Array: "array",
    exp.Struct: "row",
    exp.Coalesce: "coalesce",
    exp.Nullif: "nullif",
    exp.Greatest: "greatest",
    exp.Least: "least",
    exp.CurrentTimestamp: "current_timestamp",
    exp.CurrentDate: "current_date",
    exp.CurrentTime: "current_time",
    exp.CurrentUser: "current_user",
    exp.SessionUser: "session_user",
    exp.Boolean: "bool",  # TRUE is 't'::bool to PostgreSQL's parser
}


def _identifier_name(identifier: exp.Expression) -> str:
    """An identifier as PostgreSQL keeps it: folded to lower case unless quoted."""
    text = identifier.name
    return text if isinstance(identifier, exp.Identifier) and identifier.quoted else text.lower()


def _cast_type_name(to: exp.DataType) -> str:
    oid = cast_oid(to)
    if oid in pg_types.TYPES:
        return pg_types.TYPES[oid].name
    return type_name(to).lower().removesuffix("[]")


def _figure(node: exp.Expression) -> tuple[str, int]:
    """(name, strength) of one select item: 2 for a real name, 1 for a type's, 0 for none."""
    if isinstance(node, exp.Alias):
        return _identifier_name(node.args["alias"]), 2
    if isinstance(node, exp.Column):
        return (_identifier_name(node.this), 2) if not isinstance(node.this, exp.Star) else (_NO_NAME, 0)
    if isinstance(node, exp.Dot):  # pg_catalog.f(x) or (composite).field
        return _figure(node.expression) if isinstance(node.expression, exp.Func) else (node.name.lower(), 2)
    if isinstance(node, exp.Paren | exp.Collate):
        return _figure(node.this)
    if isinstance(node, exp.Cast):
        name, strength = _figure(node.this)
        return (name, strength) if strength > 1 else (_cast_type_name(node.to), 1)
    if isinstance(node, exp.Window | exp.Filter | exp.WithinGroup):
        return _figure(node.this)
    if isinstance(node, exp.Case):
        name, strength = _figure(node.args["default"]) if node.args.get("default") else (_NO_NAME, 0)
        return (name, strength) if strength > 1 else ("case", 1)
    if isinstance(node, exp.Subquery):
        inner = node.unnest()
        if isinstance(inner, exp.Select) and len(inner.expressions) == 1:
            return _figure(inner.expressions[0])
        return _NO_NAME, 0
    for kind, name in _SPECIAL_NAMES.items():
        if isinstance(node, kind):
            return name, 2
    if isinstance(node, exp.Anonymous):
        return function_name(node), 2
    if isinstance(node, exp.Func) and not isinstance(node, exp.Binary | exp.Unary | exp.Predicate):
        # sqlglot's class for a known function; its PostgreSQL spelling gives the name written
        # (string_agg, date_trunc ...), which sqlglot's own class name may not.
        spelled = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(", node.sql(dialect="postgres"))
        return (spelled.group(1).lower() if spelled else node.sql_name().lower()), 2
    return _NO_NAME, 0


def _outermost_select(tree: exp.Expression) -> exp.Select | None:
    while isinstance(tree, exp.SetOperation | exp.Subquery):
        tree = tree.this  # a UNION is named by its first SELECT
    return tree if isinstance(tree, exp.Select) else None


@lru_cache(maxsize=512)
def _select_names(sql: str) -> tuple[tuple[str, ...], int] | None:
    """(name of each non-star select item in order, index of the one star or -1), or None when
    ``sql`` is not one SELECT sqlglot reads, or has more than one ``*``."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except SqlglotError:
        return None
    select = _outermost_select(tree) if tree is not None else None
    if select is None:
        return None
    stars = [
        i
        for i, e in enumerate(select.expressions)
        if isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))
    ]
    if len(stars) > 1:
        return None
    names = tuple(_figure(e)[0] for i, e in enumerate(select.expressions) if i not in stars)
    return names, stars[0] if stars else -1


def result_names(sql: str, duckdb_names: list[str]) -> list[str]:
    """The names PostgreSQL gives the columns of ``sql``, given the ones DuckDB gave (kept for
    what a ``*`` expands to, and altogether when the two cannot be lined up)."""
    found = _select_names(sql)
    if found is None:
        return duckdb_names
    names, star = found
    if star < 0:
        return list(names) if len(names) == len(duckdb_names) else duckdb_names
    expanded = len(duckdb_names) - len(names)
    if expanded < 0:
        return duckdb_names
    return [*names[:star], *duckdb_names[star : star + expanded], *names[star:]]

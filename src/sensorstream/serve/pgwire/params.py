"""Parameter types for ``$1, $2 ...`` that the client left unspecified (OID 0) in Parse.

PostgreSQL infers them while planning; DuckDB's Python API does not expose its inference, so we
look at what each placeholder stands next to: a cast names its type, a comparison with a store
column takes that column's type, ``LIMIT``/``OFFSET`` take int8, anything else is text (DuckDB
casts text where it needs another type). Drivers encode their values for the type we announce in
ParameterDescription (pgx does exactly that), so a timestamptz column gets a timestamptz value.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from sensorstream.serve.pgwire import types as t

_CAST_TYPES = {
    exp.DataType.Type.BOOLEAN: t.BOOL,
    exp.DataType.Type.SMALLINT: t.INT2,
    exp.DataType.Type.INT: t.INT4,
    exp.DataType.Type.BIGINT: t.INT8,
    exp.DataType.Type.FLOAT: t.FLOAT4,
    exp.DataType.Type.DOUBLE: t.FLOAT8,
    exp.DataType.Type.DECIMAL: t.NUMERIC,
    exp.DataType.Type.TEXT: t.TEXT,
    exp.DataType.Type.VARCHAR: t.VARCHAR,
    exp.DataType.Type.DATE: t.DATE,
    exp.DataType.Type.TIME: t.TIME,
    exp.DataType.Type.TIMESTAMP: t.TIMESTAMP,
    exp.DataType.Type.TIMESTAMPTZ: t.TIMESTAMPTZ,
    exp.DataType.Type.INTERVAL: t.INTERVAL,
    exp.DataType.Type.UUID: t.UUID,
    exp.DataType.Type.VARBINARY: t.BYTEA,
    exp.DataType.Type.JSON: t.JSON,
}


def cast_oid(to: exp.DataType) -> int | None:
    """The OID of a cast's target type, when it is one of the types above."""
    return _CAST_TYPES.get(to.this)


_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.In, exp.Like, exp.ILike)


# The protocol counts a statement's parameters in 16 bits (PostgreSQL: at most 65535). A larger
# placeholder is refused before anything is sized by it (a list per parameter up to the largest).
MAX_PARAMETERS = 65535


class TooManyParameters(ValueError):
    """A placeholder beyond what the protocol can bind (SQLSTATE 54000)."""


def _placeholder_number(node: exp.Expression) -> int | None:
    # sqlglot reads PostgreSQL's $1 as a Parameter (or a Placeholder, depending on context).
    text = node.sql(dialect="postgres").lstrip("$@:")
    if not text.isdigit():
        return None
    if len(text) > len(str(MAX_PARAMETERS)) or int(text) > MAX_PARAMETERS:
        raise TooManyParameters(
            f"placeholder ${text[:20]} is out of range: a statement may have at most "
            f"{MAX_PARAMETERS:,} parameters ($1 to ${MAX_PARAMETERS})"
        )
    return int(text)


def _column_type(node: exp.Expression, columns: dict[str, str]) -> int | None:
    if isinstance(node, exp.Column) and node.name.lower() in columns:
        return t.pg_type(columns[node.name.lower()]).oid
    return None


def _infer_one(node: exp.Expression, columns: dict[str, str]) -> int:
    parent = node.parent
    while isinstance(parent, exp.Paren | exp.Tuple):
        parent = parent.parent
    if isinstance(parent, exp.Cast):
        return _CAST_TYPES.get(parent.to.this, t.TEXT)
    if isinstance(parent, exp.Limit | exp.Offset):
        return t.INT8
    if isinstance(parent, _COMPARISONS):
        for other in (parent.this, *parent.args.get("expressions", []), parent.args.get("expression")):
            for candidate in (other, parent.args.get("low"), parent.args.get("high")):
                if candidate is not None and candidate is not node:
                    oid = _column_type(candidate, columns)
                    if oid is not None:
                        return oid
    return t.TEXT


def infer_param_types(sql: str, declared: list[int], columns: dict[str, str]) -> list[int]:
    """One OID per placeholder: the client's where it gave one, else our inference.

    Raises :class:`TooManyParameters` for a placeholder beyond ``$65535``.
    """
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except SqlglotError:
        tree = None
    found: dict[int, int] = {}
    if tree is not None:
        for node in tree.find_all(exp.Parameter, exp.Placeholder):
            number = _placeholder_number(node)
            if number is not None and number not in found:
                found[number] = _infer_one(node, columns)
    count = max([len(declared), *found.keys()]) if (found or declared) else 0
    result = []
    for i in range(count):
        given = declared[i] if i < len(declared) else 0
        result.append(given if given else found.get(i + 1, t.TEXT))
    return result

"""What a checked statement needs of the store: nothing, only its catalog, or its tables.

An endpoint's own process (``serve.front.RemoteGate``) asks this of each statement the guard let
through, so that only reads which need the store's data cost the writer's process:

* ``"none"``: no table, view or catalog function at all (``SELECT 1``, ``version()``, the
  endpoint's own ``VALUES`` tables such as ``pg_settings``). The same DuckDB answers it the same
  in the endpoint's process, on an in-memory instance.
* ``"catalog"``: only DuckDB's catalog (``pg_catalog``, ``information_schema``, ``duckdb_tables()``
  ...), which changes only with the store's schema. Drivers and Grafana send the same metadata
  queries over and over; their answers can be kept a little while (``stable``: no function whose
  answer changes from one run to the next, such as ``now()`` or ``random()``).
* ``"store"``: anything else, and anything this module does not recognise.

It judges by the statement's syntax tree (DuckDB's ``json_serialize_sql``, as the guard does) and
by the names the engine of the endpoint's own process lists (catalog views, table functions,
function stability, built-in types), so it follows the DuckDB version in use.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import duckdb

from sensorstream.reads.sqlguard import _nodes, syntax_tree

Kind = Literal["none", "catalog", "store"]

# Table functions that generate rows from their arguments alone.
GENERATORS = frozenset({"range", "generate_series", "unnest", "json_each", "json_tree"})
# Catalog table functions whose answer is the schema (not pragma_storage_info: the data's layout).
CATALOG_FUNCTIONS = frozenset(
    {
        "duckdb_tables", "duckdb_views", "duckdb_columns", "duckdb_indexes", "duckdb_constraints",
        "duckdb_schemas", "duckdb_types", "duckdb_functions", "duckdb_keywords", "duckdb_sequences",
        "duckdb_dependencies", "pragma_table_info", "pragma_version",
    }
)  # fmt: skip
# Scalar functions over the store's own objects (its sequences).
STORE_FUNCTIONS = frozenset({"nextval", "currval", "setval"})
CATALOG_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
# Written as a bare name, these are the current time (DuckDB binds them as functions).
CLOCK_NAMES = frozenset(
    {"current_timestamp", "current_date", "current_time", "localtimestamp", "localtime", "now"}
)
# The other parts of a query's tree (expressions are told apart by their "class").
PLAIN_NODES = frozenset(
    {
        "SELECT_NODE", "SET_OPERATION_NODE", "CTE_NODE", "JOIN", "SUBQUERY", "EXPRESSION_LIST", "EMPTY",
        "ORDER_MODIFIER", "LIMIT_MODIFIER", "LIMIT_PERCENT_MODIFIER", "DISTINCT_MODIFIER",
        "ASCENDING", "DESCENDING", "ORDER_DEFAULT",
    }
)  # fmt: skip
KEPT = 1024  # judged texts remembered, newest kept


@dataclass(frozen=True)
class Reach:
    kind: Kind
    stable: bool = True  # the same answer on every run while the schema stays


class ReachJudge:
    """``judge(text) -> Reach`` for texts the guard already checked; thread-safe.

    ``con`` is an instance without the store (the endpoint process's in-memory one): the names it
    lists are DuckDB's own, so a name it does not know belongs to the store.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        cur = con.cursor()
        try:
            self.catalog_views = frozenset(
                str(name).lower()
                for (name,) in cur.execute(
                    "SELECT view_name FROM duckdb_views() WHERE schema_name IN ('pg_catalog', 'information_schema')"
                ).fetchall()
            )
            functions = cur.execute(
                "SELECT DISTINCT lower(function_name), function_type, coalesce(stability, 'CONSISTENT') "
                "FROM duckdb_functions()"
            ).fetchall()
            self.types = frozenset(
                str(t).lower() for (t,) in cur.execute("SELECT type_name FROM duckdb_types()").fetchall()
            )
        finally:
            cur.close()
        # A macro may read the catalog (current_database(), col_description(), has_table_privilege()).
        self.macros = frozenset(name for name, kind, _ in functions if "macro" in str(kind))
        self.functions = frozenset(name for name, _, _ in functions)
        self.unstable = frozenset(name for name, _, stability in functions if stability != "CONSISTENT")
        self._kept: OrderedDict[str, Reach] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> Reach:
        with self._lock:
            known = self._kept.get(text)
            if known is not None:
                self._kept.move_to_end(text)
                return known
        reach = self._judge(text)
        with self._lock:
            self._kept[text] = reach
            while len(self._kept) > KEPT:
                self._kept.popitem(last=False)
        return reach

    def _judge(self, text: str) -> Reach:
        cur = self._con.cursor()
        try:
            tree = syntax_tree(cur, text)
        except (duckdb.Error, RecursionError, ValueError):
            return Reach("store", stable=False)
        finally:
            cur.close()
        if tree.get("error"):
            return Reach("store", stable=False)
        return self.of_tree(tree)

    def of_tree(self, tree: object) -> Reach:
        nodes = list(_nodes(tree))
        ctes = {
            str(entry.get("key", "")).lower()
            for node in nodes
            for entry in (node.get("cte_map") or {}).get("map") or []
            if isinstance(entry, dict)
        }
        kind: Kind = "none"
        stable = True
        for node in nodes:
            step: Kind = "none"
            if node.get("type") == "BASE_TABLE":
                schema = str(node.get("schema_name") or "").lower()
                name = str(node.get("table_name") or "").lower()
                if node.get("catalog_name"):
                    step = "store"
                elif schema in CATALOG_SCHEMAS or (not schema and name in self.catalog_views):
                    step = "catalog"
                elif not schema and name in ctes:
                    step = "none"  # the statement's own WITH: its body is judged as a node of its own
                else:
                    step = "store"
            elif node.get("type") == "TABLE_FUNCTION":
                name = str((node.get("function") or {}).get("function_name", "")).lower()
                step = "none" if name in GENERATORS else "catalog" if name in CATALOG_FUNCTIONS else "store"
            elif node.get("type") == "SHOW_REF":
                step = "store"
            elif node.get("class") == "FUNCTION":
                name = str(node.get("function_name", "")).lower()
                if (
                    name in STORE_FUNCTIONS
                    or name not in self.functions
                    or (node.get("schema") and str(node["schema"]).lower() not in CATALOG_SCHEMAS | {"main"})
                ):
                    step = "store"
                elif name in self.macros:
                    step = "catalog"
                stable = stable and name not in self.unstable
            elif node.get("class") == "COLUMN_REF":
                names = node.get("column_names") or []
                stable = stable and not (len(names) == 1 and str(names[0]).lower() in CLOCK_NAMES)
            elif node.get("class") == "TYPE":
                if (
                    str(node.get("type_name", "")).lower() not in self.types
                    or node.get("schema")
                    or node.get("catalog")
                ):
                    step = "catalog"  # a type the store defines (an ENUM)
            elif "class" not in node and node.get("type") not in (None, *PLAIN_NODES):
                step = "store"  # a kind of table reference (or anything else) this module does not know
            if step == "store":
                return Reach("store", stable=False)
            if step == "catalog":
                kind = "catalog"
        return Reach(kind, stable)

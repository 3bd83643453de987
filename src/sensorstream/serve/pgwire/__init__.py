"""A read-only PostgreSQL v3 protocol endpoint on the live store (Grafana, Tableau, psql, JDBC ...).

Modules, one concern each: ``codec`` (message framing), ``auth`` (SCRAM-SHA-256), ``types`` (OIDs
and value encodings), ``params`` (parameter types), ``translate`` (PostgreSQL -> DuckDB SQL and
session commands), ``pg_catalog`` (what the "server" and its catalog report), ``gate`` (the shared read gate's guard and
limits), ``session`` (one connection) and ``server`` (the listener thread).
"""

from sensorstream.serve.pgwire.server import PgServer, PgStartError

__all__ = ["PgServer", "PgStartError"]

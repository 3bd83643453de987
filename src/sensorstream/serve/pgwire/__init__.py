"""A read-only PostgreSQL v3 protocol endpoint on the live store (Grafana, Tableau, psql, JDBC ...).

Modules, one concern each: ``codec`` (message framing), ``auth`` (SCRAM-SHA-256), ``handshake``
(start-up, authentication, CancelRequest), ``types`` (OIDs and value encodings), ``params``
(parameter types), ``statements`` (splitting and sorting statements), ``translate`` (PostgreSQL ->
DuckDB SQL), ``colnames`` (PostgreSQL's result column names), ``pg_catalog`` (what the "server" and
its catalog report), ``gate`` (the shared read gate's guard and limits), ``session`` (one
connection, the simple protocol), ``extended`` (the extended protocol), ``results`` (outcomes and
row encoding), ``cursors`` (portals, DECLARE/FETCH), ``copy_out`` (COPY TO STDOUT), ``cancel``
(CancelRequest), ``server`` (the listener thread) and ``process`` (its own process).
"""

from sensorstream.serve.pgwire.server import PgServer, PgStartError

__all__ = ["PgServer", "PgStartError"]

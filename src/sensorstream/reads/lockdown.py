"""The engine's half of read safety: a DuckDB instance that cannot reach outside its own files.

Reads run in the writer's process, on cursors of the writer's connection (DuckDB allows one
process per file, and one configuration per file within a process), so the lock-down is for the
whole database instance and happens once, after everything the writer needs from the outside:
migrations ran in ``db.connect``; snapshots write their file through a separate DuckDB instance
(``store.snapshot``); the sink's batches are Arrow tables registered in memory, which need no file
access. Spilling to DuckDB's own temp directory keeps working.

After :func:`lock_down`:

- ``enable_external_access=false``: no file readers or writers (``read_csv``, ``COPY … TO``,
  ``ATTACH``, ``INSTALL``, ``UPDATE EXTENSIONS``), no HTTP;
- extension auto-install and auto-load off: a function from a missing extension is an error,
  not a download into the writer's process;
- ``lock_configuration=true``: no statement can turn any of that back on, change the memory
  limit or the thread count. Only the settings in :data:`CHANGEABLE` stay open: the time zone
  (every cursor of the sink and of the readers sets UTC) and a cursor's own operator memory limit.
"""

from __future__ import annotations

import logging

import duckdb

from sensorstream.store.db import is_locked

log = logging.getLogger(__name__)

CHANGEABLE = ("TimeZone", "operator_memory_limit")


class LockdownError(RuntimeError):
    """The instance is locked, but not the way reads need it (someone else locked it)."""


def lock_down(con: duckdb.DuckDBPyConnection, *, memory_limit: str | None = None) -> None:
    """Lock ``con``'s database instance for serving reads (see the module doc). Safe to call twice.

    ``memory_limit`` (DuckDB's own syntax, e.g. ``"4GB"``) caps DuckDB's buffer manager for the
    whole process, writer included; ``None`` keeps DuckDB's default (80 % of RAM).
    """
    if is_locked(con):
        row = con.execute("SELECT current_setting('enable_external_access')").fetchone()
        if row and row[0]:
            raise LockdownError("the store's DuckDB configuration is locked with external access on")
        return
    con.execute("SET GLOBAL TimeZone = 'UTC'")
    if memory_limit:
        con.execute(f"SET memory_limit = '{_quoted(memory_limit)}'")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET allowed_configs = $names", {"names": list(CHANGEABLE)})
    con.execute("SET lock_configuration = true")
    log.debug("store engine locked down (memory_limit %s)", memory_limit or "default")


def in_memory(config: dict[str, str | int] | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB in memory for reads, with no temp directory: DuckDB's default for a database in
    memory is ``./.tmp``, so a client's big sort spilled into whatever folder the process started
    from, a disk outside the read's memory limit. Beyond its memory a read is TooLarge instead."""
    return duckdb.connect(":memory:", config={**(config or {}), "temp_directory": ""})


def _quoted(text: str) -> str:
    return text.replace("'", "''")

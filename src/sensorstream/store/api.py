"""The store's read API: HTTP on 127.0.0.1, served from the writer's own process.

DuckDB lets one process open the file while it is written, so the dashboard, ``sensorstream
status`` and scripts read through here. Each request runs on its own cursor (a separate DuckDB
connection to the same database): MVCC gives it the last committed batch, and a slow read never
holds up the writer's transaction.

Routes:
    GET  /health          ok, writer pid, schema version, last batch id/age
    GET  /queries         the named queries with their parameters and columns
    GET  /query/{name}    ?param=value…  -> {"columns": [...], "types": [...], "rows": [[...]]}
    POST /sql             {"sql": "SELECT …", "params": [...] | {...}}  guarded read-only SQL
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

import duckdb
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from sensorstream.config import Settings
from sensorstream.store import queries
from sensorstream.store.queries import DEFAULT_TIMEOUT_S, MAX_ROWS, QueryError, Result
from sensorstream.store.sqlguard import run_sql

log = logging.getLogger(__name__)


class ApiStartError(RuntimeError):
    """The read API could not start (most often: its port is taken)."""


class SqlRequest(BaseModel):
    sql: str
    params: list[Any] | dict[str, Any] | None = None


def _json(result: Result) -> Response:
    # json.dumps of plain lists is several times faster than FastAPI's jsonable_encoder.
    return Response(json.dumps(result.to_json(), allow_nan=False), media_type="application/json")


def make_app(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    *,
    query_timeout: float = DEFAULT_TIMEOUT_S,
    max_rows: int = MAX_ROWS,
) -> FastAPI:
    """The FastAPI app over ``con``. Handlers are plain ``def``: they run in a thread pool."""
    app = FastAPI(title="sensorstream store (read-only)", docs_url="/docs", redoc_url=None)
    started = time.time()

    @app.exception_handler(QueryError)
    def _bad_request(_: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "kind": type(exc).__name__}, status_code=400)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "ok": True,
            "mode": "api",
            "writer_pid": os.getpid(),
            "db": str(settings.db),
            "uptime_seconds": round(time.time() - started, 3),
            **queries.health(con),
        }

    @app.get("/queries")
    def list_queries() -> dict[str, Any]:
        return {"queries": queries.describe()}

    @app.get("/query/{name}")
    def query(name: str, request: Request) -> Response:
        params = dict(request.query_params)
        return _json(queries.run_query(con, name, params, timeout=query_timeout))

    @app.post("/sql")
    def sql(body: SqlRequest) -> Response:
        return _json(run_sql(con, body.sql, body.params, max_rows=max_rows, timeout=query_timeout))

    return app


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # Lets a restarted writer reuse the port at once (TIME_WAIT), never two live listeners.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ApiStartError(
            f"the store's read API cannot listen on {host}:{port} ({exc.strerror}); another process "
            "holds that port. Set SENSORSTREAM_API_PORT to a free port or stop that process."
        ) from exc
    sock.set_inheritable(False)
    return sock


class ReadApi:
    """The read API in a background thread of the writer's process: ``start()`` / ``stop()``."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        settings: Settings,
        *,
        port: int | None = None,
        query_timeout: float = DEFAULT_TIMEOUT_S,
        max_rows: int = MAX_ROWS,
    ) -> None:
        self.settings = settings
        self.host = settings.host
        self.port = settings.api_port if port is None else port
        self.app = make_app(con, settings, query_timeout=query_timeout, max_rows=max_rows)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ReadApi:
        """Bind the port (a clear error if taken), serve in a daemon thread, return once it answers."""
        if self._thread is not None:
            return self
        # Binding here, not inside uvicorn, turns a busy port into an exception for our caller
        # instead of a log line and a SystemExit in a thread nobody watches.
        self._sock = _bind(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            timeout_keep_alive=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="store-read-api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ApiStartError(f"the store's read API did not start on {self.url}")
            time.sleep(0.01)
        log.info("store read API on %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit, wait for its thread, release the port. Safe to call twice."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("store read API thread did not stop within %.1f s", timeout)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> ReadApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""The store's read API: HTTP on 127.0.0.1, for the store the writer's process holds open.

DuckDB lets one process open the file while it is written, so the dashboard, ``sensorstream
status`` and scripts read through here. Every read goes through one :class:`~sensorstream.reads.gate.ReadGate`
(guard, limits, engine lock-down; shared with any other endpoint), each on its own cursor: MVCC
gives it the last committed batch, and a slow read never holds up the writer's transaction.
The writer's runtime serves HTTP from a process of its own (``ReadApi(process=True)``:
``serve.front`` parses, guards and answers; ``serve.backend`` runs the checked queries in the
writer's process), so a flood of requests does not take the writer's GIL.

Routes:
    GET  /health          ok, schema version, last batch id/age (nothing about the machine)
    GET  /queries         the named queries with their parameters and columns
    GET  /query/{name}    ?param=value…  -> {"columns": [...], "types": [...], "rows": [[...]]}
    POST /sql             {"sql": "SELECT …", "params": [...] | {...}}  guarded read-only SQL

Every refused request is a 4xx with ``{"error": "<one sentence>", "kind": ..., "sqlstate": ...}``:
400 bad SQL or parameters, 413 over a size limit, 429 (with ``Retry-After``) when the read slots
are taken; a ``Host`` header not in ``SENSORSTREAM_API_ALLOWED_HOSTS`` (a page using DNS
rebinding) gets Starlette's plain 400 "Invalid host header".
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from sensorstream.config import Settings
from sensorstream.procs import host_port, listening_socket
from sensorstream.reads import catalog
from sensorstream.reads.errors import QueryError, ReadBusy
from sensorstream.reads.execute import Result
from sensorstream.reads.gate import Gate, ReadGate
from sensorstream.reads.priority import idle_priority
from sensorstream.serve.backend import ReadBackend
from sensorstream.serve.child import ChildServer

log = logging.getLogger(__name__)


class ApiStartError(RuntimeError):
    """The read API could not start (most often: its port is taken)."""


class SqlRequest(BaseModel):
    sql: str
    params: list[Any] | dict[str, Any] | None = None


def _json(result: Result) -> Response:
    # json.dumps of plain lists is several times faster than FastAPI's jsonable_encoder.
    return Response(json.dumps(result.to_json(), allow_nan=False), media_type="application/json")


# The least time before ad-hoc SQL's refusal or "busy" is answered (see the /sql handler).
REFUSAL_PAUSE_S = 0.2


def _error(status: int, message: str, kind: str, sqlstate: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": message, "kind": kind, "sqlstate": sqlstate}, status_code=status, headers=headers
    )


class BodyLimit:
    """ASGI middleware: refuse a body over ``max_bytes`` (413) or of unknown length (411) unread."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            length = dict(scope.get("headers") or []).get(b"content-length")
            refusal = None
            if length is None:
                refusal = _error(
                    411, "send the request body with a Content-Length", "LengthRequired", "08P01"
                )
            elif not length.isdigit() or int(length) > self.max_bytes:
                refusal = _error(
                    413, f"the request body is over {self.max_bytes:,} bytes", "TooLarge", "54000"
                )
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def make_app(
    con: duckdb.DuckDBPyConnection | None,
    settings: Settings,
    *,
    gate: Gate | None = None,
    query_timeout: float | None = None,
    max_rows: int | None = None,
) -> FastAPI:
    """The FastAPI app over ``con`` (or over ``gate`` alone, which may be the writer's, remotely).

    Handlers are plain ``def`` (they run in Starlette's thread pool), but ``/sql``, which runs on
    idle-priority threads of its own."""
    if gate is None:
        assert con is not None, "make_app needs a connection or a gate"
        gate = ReadGate(con, settings)
    app = FastAPI(title="sensorstream store (read-only)", docs_url="/docs", redoc_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.api_allowed_hosts, www_redirect=False)
    started = time.time()

    @app.exception_handler(QueryError)
    def _refused(_: Request, exc: QueryError) -> JSONResponse:
        headers = {"Retry-After": str(math.ceil(exc.retry_after))} if isinstance(exc, ReadBusy) else {}
        return _error(exc.http_status, str(exc), type(exc).__name__, exc.sqlstate, **headers)

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "the request"
        message = f"{where}: {first.get('msg', 'is not valid')}" if first else "the request is not valid"
        return _error(400, f"bad request body, {message}", "InvalidRequest", "22023")

    @app.exception_handler(HTTPException)
    def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), "HTTPException", "42000")

    @app.exception_handler(Exception)
    def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Our bug, not the user's: logged with its traceback here, one sentence over the wire.
        log.exception("read API request failed")
        return _error(500, f"the read API failed on this request ({type(exc).__name__})", "Internal", "XX000")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "mode": "api", "uptime_seconds": round(time.time() - started, 3), **gate.health()}

    @app.get("/queries")
    def list_queries() -> dict[str, Any]:
        return {"queries": catalog.describe()}

    @app.get("/query/{name}")
    def query(name: str, request: Request) -> Response:
        params = dict(request.query_params)
        return _json(gate.run_named(name, params, timeout=query_timeout))

    # Ad-hoc SQL (guard, the wait for the store, JSON) runs on idle-priority threads: anyone on the
    # machine can send it as fast as they like, and it must only use CPU the stream does not want.
    # Beyond these threads a request is told 429 at once instead of queueing.
    limits = gate.limits
    sql_threads = max(4, 4 * limits.max_concurrent)
    app.state.sql_pool = ThreadPoolExecutor(
        sql_threads, thread_name_prefix="api-sql", initializer=idle_priority
    )
    sql_slots = threading.BoundedSemaphore(sql_threads)

    def run_sql(body: SqlRequest) -> Response:
        return _json(gate.run(body.sql, body.params, max_rows=max_rows, timeout=query_timeout))

    @app.post("/sql")
    async def sql(body: SqlRequest) -> Response:
        try:
            if not sql_slots.acquire(blocking=False):
                raise ReadBusy(
                    f"the store is busy with other reads; retry in {limits.retry_after:g} s",
                    retry_after=limits.retry_after,
                )
            try:
                return await asyncio.get_running_loop().run_in_executor(app.state.sql_pool, run_sql, body)
            finally:
                sql_slots.release()
        except QueryError:
            # A refusal or a "busy" answers no sooner than this: a client that sends its next
            # request the moment it has the answer (a retry loop, a hostile reader) then sends a
            # few a second, not hundreds, and waiting costs no thread and no CPU. A person
            # correcting a query does not notice.
            await asyncio.sleep(REFUSAL_PAUSE_S)
            raise

    # Added last, so outermost: a huge body is refused before the host check or JSON parsing.
    app.add_middleware(BodyLimit, max_bytes=gate.limits.max_sql_bytes * 4 + 65_536)
    return app


def _bind(host: str, port: int) -> socket.socket:
    return listening_socket(
        host,
        port,
        busy=lambda exc: ApiStartError(
            f"the store's read API cannot listen on {host}:{port} ({exc.strerror}); another process "
            "holds that port. Set SENSORSTREAM_API_PORT to a free port or stop that process."
        ),
    )


class ReadApi:
    """The read API: ``start()`` / ``stop()``.

    ``process=False`` serves it from a thread of this process (tests, benchmarks, a script).
    ``process=True`` (the writer's runtime, through ``StoreService``) serves HTTP, JSON and the
    SQL guard from a process of its own (``serve.front``) and runs only the checked queries here
    (``serve.backend``), so what the readers cost stays out of the writer's GIL.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        settings: Settings,
        *,
        port: int | None = None,
        gate: ReadGate | None = None,
        query_timeout: float | None = None,
        max_rows: int | None = None,
        process: bool = False,
    ) -> None:
        self.settings = settings
        self.host = settings.host
        self.port = settings.api_port if port is None else port
        self.gate = gate or ReadGate(con, settings)
        self.process = process
        self._app_options = {"query_timeout": query_timeout, "max_rows": max_rows}
        self.app = None if process else make_app(con, settings, gate=self.gate, **self._app_options)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._backend: ReadBackend | None = None
        self._child: ChildServer | None = None

    @property
    def url(self) -> str:
        return f"http://{host_port(self.host, self.port)}"

    @property
    def pid(self) -> int:
        """The process that answers HTTP: this one, or the API's own."""
        return (self._child.pid if self._child is not None else None) or os.getpid()

    def start(self, timeout: float = 10.0) -> ReadApi:
        """Bind the port (a clear error if taken), serve, return once it answers."""
        if self._thread is not None or self._child is not None:
            return self
        # Binding here, not inside uvicorn, turns a busy port into an exception for our caller
        # instead of a log line and a SystemExit in a thread (or process) nobody watches.
        self._sock = _bind(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        try:
            self._start_process(timeout * 3) if self.process else self._start_thread(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("store read API on %s%s", self.url, f" (process {self.pid})" if self.process else "")
        return self

    def _start_thread(self, timeout: float) -> None:
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
                raise ApiStartError(f"the store's read API did not start on {self.url}")
            time.sleep(0.01)

    def _start_process(self, timeout: float) -> None:
        assert self._sock is not None
        self._backend = ReadBackend(self.gate).start()
        self._child = ChildServer(
            "sensorstream.serve.front", "store's read API", self.settings, ApiStartError
        )
        config = {
            "limits": dataclasses.asdict(self.gate.limits),
            "backend": self._backend.path,
            "app": self._app_options,
        }
        self._child.start(config, self._sock.fileno(), timeout)
        # The socket is the child's now; ours would keep the port bound after the child exits.
        self._sock.close()
        self._sock = None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving (requests in flight get up to 2 s), release the port. Safe to call twice."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("store read API thread did not stop within %.1f s", timeout)
            self.app.state.sql_pool.shutdown(wait=False)
        if self._child is not None:
            self._child.stop(timeout)
        if self._backend is not None:
            self._backend.stop()
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = self._backend = self._child = None

    def __enter__(self) -> ReadApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

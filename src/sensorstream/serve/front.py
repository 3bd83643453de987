"""The read API's own process: HTTP, JSON and the SQL guard, away from the writer's GIL.

Measured with the API in the writer's process, a hostile reader's requests (parsing, the
guard's syntax-tree walk, building rows and JSON) held the writer's GIL about half the time
and the stream's batches took twice as long. Here they cost a process of their own, on CPU
time the writer does not want (``serve.child.start_up``), and the writer's process only runs the checked queries
(``serve.backend``), whose answers DuckDB fills as Arrow without the GIL.

The writer's process starts this one (``ReadApi(..., process=True)``, which ``StoreService``
uses) with the listening socket already bound (so a busy port is the writer's error, at start),
its settings in the environment (``settings_env``) and one line of JSON on stdin: the backend's
socket and the read limits. It prints ``ready`` once it answers. It stops on SIGTERM (the writer's stop: requests in flight are answered first) and
leaves at once when its stdin closes (the writer is gone, however it ended).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import uvicorn

from sensorstream.config import load_settings
from sensorstream.reads import errors
from sensorstream.reads.answer import ArrowResult, ReadResult, answer_size
from sensorstream.reads.errors import QueryError
from sensorstream.reads.execute import Result
from sensorstream.reads.gate import ReadGate
from sensorstream.reads.limits import Params, ReadLimits, check_params
from sensorstream.reads.lockdown import in_memory, lock_down
from sensorstream.reads.reach import ReachJudge
from sensorstream.serve import child
from sensorstream.serve.backend import connect_backend, recv_frame, send_frame

log = logging.getLogger(__name__)

WHAT = "read API"
HANG_MARGIN_S = 30.0  # beyond a read's own time limit, how long to wait for the writer's answer
CATALOG_KEEP_S = 5.0  # how long a catalog answer is served from here before the writer is asked again
CATALOG_ANSWER_BYTES = 256 * 2**10  # a larger catalog answer is not kept
CATALOG_KEPT_BYTES = 8 * 2**20  # all kept catalog answers together


def _error(header: dict[str, Any]) -> Exception:
    """The writer's refusal as the same QueryError (class, sentence, sqlstate) it raised there."""
    kind, message = str(header.get("kind")), str(header.get("message"))
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, QueryError)):
        return RuntimeError(f"the writer's process could not run the read ({message})")
    if issubclass(cls, errors.ReadBusy):
        error: QueryError = cls(message, retry_after=header.get("retry_after") or 1.0)
    else:
        error = cls(message)
    if header.get("sqlstate"):
        error.sqlstate = str(header["sqlstate"])
    return error


class KeptAnswers:
    """Answers that need no data of the store (``reads.reach``), kept for :data:`CATALOG_KEEP_S`
    within a byte budget (the oldest dropped first).

    Drivers and Grafana send the same metadata queries again and again (a pool's every connection,
    a dashboard's every refresh), and the catalog changes only with the store's schema, which the
    writer migrates before it starts this process: the writer would answer the same. What may
    move within a schema (``duckdb_tables().estimated_size``) is at most this old, an estimate
    as PostgreSQL's own ``reltuples`` is.
    """

    def __init__(self, keep_s: float = CATALOG_KEEP_S, budget: int = CATALOG_KEPT_BYTES) -> None:
        self.keep_s, self.budget = keep_s, budget
        self._kept: OrderedDict[tuple[Any, ...], tuple[float, int, ReadResult]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> ReadResult | None:
        with self._lock:
            kept = self._kept.get(key)
            if kept is None:
                return None
            if kept[0] < time.monotonic():
                self._drop(key)
                return None
            result = kept[2]
        return _own_copy(result)  # each caller its own rows: a session may page through them

    def put(self, key: tuple[Any, ...], result: ReadResult, size: int) -> None:
        if size > CATALOG_ANSWER_BYTES or size > self.budget:
            return
        with self._lock:
            if key in self._kept:
                self._drop(key)
            self._kept[key] = (time.monotonic() + self.keep_s, size, _own_copy(result))
            self._bytes += size
            while self._bytes > self.budget:
                self._drop(next(iter(self._kept)))

    def _drop(self, key: tuple[Any, ...]) -> None:
        self._bytes -= self._kept.pop(key)[1]


def _own_copy(result: ReadResult) -> ReadResult:
    return ReadResult(result.columns, result.types, [list(r) for r in result.rows], result.truncated)


def _rows(table: pa.Table, columns: list[str], types: list[str], truncated: bool) -> ReadResult:
    """An Arrow answer as the rows of a :class:`ReadResult` (DuckDB's Python values)."""
    values = [column.to_pylist() for column in table.columns]
    rows = [list(row) for row in zip(*values, strict=True)] if values else []
    return ReadResult(columns=columns, types=types, rows=rows, truncated=truncated)


class RemoteGate:
    """A :class:`~sensorstream.reads.gate.Gate` served by the writer's own ``ReadGate``.

    The guard runs here, on an in-memory DuckDB used only to parse (``json_serialize_sql`` does not
    bind the query to any table); the writer runs the checked text with its gate's slots and limits.
    Only what needs the store reaches the writer (``reads.reach``): a statement that reads no table
    (``SELECT 1``, ``version()``, the PostgreSQL endpoint's own ``VALUES`` tables) runs on that
    in-memory DuckDB, through a gate of its own with the same limits; the answer of a catalog
    query, or of such a statement, is kept here a few seconds (:class:`KeptAnswers`) unless it has
    a clock or a random number in it. Both are what a client's driver, Grafana and a
    hostile client send most, and each read in the writer's process takes CPU, and the GIL, from
    the stream's batches.
    """

    def __init__(self, backend: str, limits: ReadLimits, *, what: str = WHAT) -> None:
        self.backend, self.limits, self.what = backend, limits, what
        # One DuckDB thread, its buffers within one read's memory: what runs here is small.
        self._parser = in_memory({"threads": 1, "memory_limit": f"{limits.memory}B"})
        lock_down(self._parser)
        self._here = ReadGate(self._parser, limits=limits)
        self._reach = ReachJudge(self._parser)
        self._answers = KeptAnswers()
        self._local = threading.local()
        # Past the read's own limit the writer answers a timeout itself; this only catches a hang.
        self._socket_timeout = limits.timeout + HANG_MARGIN_S

    def check(self, sql: str) -> str:
        cur = self._parser.cursor()
        try:
            return self.limits.check(cur, sql)
        finally:
            cur.close()

    def _call(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        # One connection per API thread, kept: the writer serves each on a thread of its own.
        for attempt in (1, 2):
            sock = getattr(self._local, "sock", None)
            try:
                if sock is None:
                    sock = self._local.sock = connect_backend(self.backend, self._socket_timeout)
                send_frame(sock, request)
                frame = recv_frame(sock)
                if frame is None:
                    raise ConnectionError("closed")
                break
            except TimeoutError:
                # A writer that is alive but slow (a saturated machine): this read is abandoned,
                # with a sentence; the connection goes, since its answer may still arrive on it.
                self._drop(sock)
                raise errors.QueryTimeout(
                    f"the store did not answer within {self._socket_timeout:g} s; the read was abandoned"
                ) from None
            except (OSError, ConnectionError) as exc:
                self._drop(sock)
                if attempt == 2:
                    child.leave(self.what, f"its reads connection failed ({exc})")
        header, payload = frame
        if not header.get("ok"):
            raise _error(header)
        return header, payload

    def _drop(self, sock: socket.socket | None) -> None:
        if sock is not None:
            sock.close()
        self._local.sock = None

    def run(
        self,
        sql: str,
        params: Params = None,
        *,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        timeout: float | None = None,
        tag: str | None = None,
    ) -> ReadResult:
        rows, size, seconds = self.limits.caps(max_rows, max_bytes, timeout)
        request = {"op": "sql", "params": check_params(params), "max_rows": rows, "max_bytes": size}
        request["timeout"] = seconds
        if tag is not None:
            request["tag"] = tag
        text = request["text"] = self.check(sql)  # refused here, before the writer hears of it
        reach = self._reach(text)
        # A stable answer (no clock, no random) of what only the catalog or nothing of the store
        # decides is kept: the same text and parameters get the same rows for a while.
        key = (text, repr(request["params"]), rows, size) if reach.stable and reach.kind != "store" else None
        if key is not None and (kept := self._answers.get(key)) is not None:
            return kept
        if reach.kind == "none":
            answer = self._here.run_checked(
                text, request["params"], max_rows=rows, max_bytes=size, timeout=seconds, tag=tag
            )
            if isinstance(answer, ArrowResult):
                result, nbytes = (
                    _rows(answer.table, answer.columns, answer.types, answer.truncated),
                    answer.table.nbytes,
                )
            else:
                result, nbytes = answer, answer_size(answer.rows)
        else:
            header, payload = self._call(request)
            if header["form"] == "json":
                result = ReadResult(**json.loads(payload))
            else:
                table = pa.ipc.open_stream(payload).read_all()
                result = _rows(table, header["columns"], header["types"], header["truncated"])
            nbytes = len(payload)
        if key is not None:
            self._answers.put(key, result, nbytes)
        return result

    def cancel(self, tag: str) -> bool:
        """Interrupt the read running under ``tag``, here or in the writer (``ReadGate.cancel``)."""
        if self._here.cancel(tag):
            return True
        _, payload = self._call({"op": "cancel", "tag": tag})
        return bool(json.loads(payload)["canceled"])

    def run_named(
        self, name: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Result:
        _, payload = self._call({"op": "named", "name": name, "params": params, "timeout": timeout})
        return Result(**json.loads(payload))

    def health(self) -> dict[str, Any]:
        _, payload = self._call({"op": "health"})
        return json.loads(payload)


def _announce_when_started(server: uvicorn.Server) -> None:
    while not server.started:
        if server.should_exit:
            return
        threading.Event().wait(0.01)
    print(child.READY, flush=True)


def main() -> None:
    from sensorstream.serve.api import make_app

    config = child.start_up(WHAT)  # from here on, on CPU time the writer does not want
    settings = load_settings()  # the writer passes its own through the environment
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gate = RemoteGate(config["backend"], ReadLimits(**config["limits"]))
    app = make_app(None, settings, gate=gate, **config.get("app", {}))
    sock = socket.socket(fileno=int(config["fd"]))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            timeout_keep_alive=5,
        )
    )
    threading.Thread(target=_announce_when_started, args=(server,), daemon=True).start()
    server.run(sockets=[sock])
    # Served and closed: nothing is left to flush, and tearing down DuckDB and Arrow at exit
    # only delays the writer's own stop.
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()

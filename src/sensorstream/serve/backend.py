"""The writer's side of the read API's own process: runs what that process already checked.

The read API (HTTP, JSON, the SQL guard's parsing) runs in a process of its own
(``serve.front``), so a flood of requests costs the writer's process neither GIL time nor
memory. DuckDB lets only this process open the file, though, so the queries themselves still run
here, on the :class:`~sensorstream.reads.gate.ReadGate`'s cursors (locked-down engine, read
slots, time and memory watchdog, byte cap). This module serves them over a Unix socket in a
directory only this user can enter, one frame per request and one per answer::

    request   {"op": "sql", "text": …, "params": …, "max_rows": …, "max_bytes": …, "timeout": …}
              (with "tag": … a read that {"op": "cancel", "tag": …} interrupts)
              {"op": "named", "name": …, "params": {…}, "timeout": …}   {"op": "health"}
    answer    {"ok": true, "form": "arrow" | "json", …} + an Arrow IPC stream or JSON text
              {"ok": false, "kind": "<QueryError subclass>", "message": …, "retry_after": …}

A frame is two big-endian lengths (header, payload), a JSON header and the payload's bytes.
Each connection is served by its own thread at the readers' lower CPU priority.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import socketserver
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa

from sensorstream.reads.answer import ArrowResult
from sensorstream.reads.errors import QueryError
from sensorstream.reads.gate import ReadGate
from sensorstream.reads.priority import lower_priority

log = logging.getLogger(__name__)


_LENGTHS = struct.Struct(">IQ")
MAX_HEADER = 64 * 2**20  # a request's header holds SQL text and parameters: far below this


def send_frame(sock: socket.socket, header: dict[str, Any], payload: bytes | memoryview = b"") -> None:
    head = json.dumps(header, allow_nan=False).encode()
    sock.sendall(_LENGTHS.pack(len(head), len(payload)) + head)
    if payload:
        sock.sendall(payload)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(buf)


def recv_frame(sock: socket.socket) -> tuple[dict[str, Any], bytes] | None:
    """The next frame, or None when the other side closed the connection between frames."""
    lengths = _read_exactly(sock, _LENGTHS.size)
    if lengths is None:
        return None
    head_size, payload_size = _LENGTHS.unpack(lengths)
    if head_size > MAX_HEADER:
        raise ConnectionError(f"a read frame's header of {head_size:,} bytes is over the limit")
    head = _read_exactly(sock, head_size)
    payload = _read_exactly(sock, payload_size) if payload_size else b""
    if head is None or payload is None:
        raise ConnectionError("the read connection closed in the middle of a frame")
    return json.loads(head), payload


def arrow_bytes(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _answer(gate: ReadGate, request: dict[str, Any]) -> tuple[dict[str, Any], bytes | memoryview]:
    op = request.get("op")
    if op == "sql":
        result = gate.run_checked(
            request["text"],
            request.get("params"),
            max_rows=int(request["max_rows"]),
            max_bytes=int(request["max_bytes"]),
            timeout=float(request["timeout"]),
            tag=request.get("tag"),
        )
        if isinstance(result, ArrowResult):
            head = {"ok": True, "form": "arrow", "columns": result.columns, "types": result.types}
            return {**head, "truncated": result.truncated}, memoryview(arrow_bytes(result.table))
        return {"ok": True, "form": "json"}, json.dumps(result.to_json(), allow_nan=False).encode()
    if op == "named":
        result = gate.run_named(request["name"], request.get("params"), timeout=request.get("timeout"))
        return {"ok": True, "form": "json"}, json.dumps(result.to_json(), allow_nan=False).encode()
    if op == "cancel":
        canceled = gate.cancel(str(request["tag"]))
        return {"ok": True, "form": "json"}, json.dumps({"canceled": canceled}).encode()
    if op == "health":
        return {"ok": True, "form": "json"}, json.dumps(gate.health()).encode()
    raise ValueError(f"unknown read operation {op!r}")


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def setup(self) -> None:
        lower_priority()  # a thread of its own for this connection: the writer comes first

    def handle(self) -> None:
        sock: socket.socket = self.request
        while True:
            try:
                frame = recv_frame(sock)
            except (OSError, ConnectionError, ValueError) as exc:
                log.debug("read connection dropped: %s", exc)
                return
            if frame is None:
                return
            try:
                header, payload = _answer(self.server.gate, frame[0])
            except QueryError as exc:
                # sqlstate too: a DuckDB error's is set per error (42P01, 22P02...), not by its class.
                header = {
                    "ok": False,
                    "kind": type(exc).__name__,
                    "message": str(exc),
                    "sqlstate": exc.sqlstate,
                }
                header["retry_after"] = getattr(exc, "retry_after", None)
                payload = b""
            except Exception as exc:  # our bug: logged here with its traceback, one line there
                log.exception("read request failed")
                header, payload = {"ok": False, "kind": "Internal", "message": type(exc).__name__}, b""
            try:
                send_frame(sock, header, payload)
            except OSError:
                return  # the API's process went away mid-answer


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    request_queue_size = 64  # the API process opens a connection per thread of its own, at once
    gate: ReadGate


class ReadBackend:
    """Serves ``gate`` on a Unix socket for the read API's process: ``start()``, ``.path``, ``stop()``."""

    def __init__(self, gate: ReadGate) -> None:
        self.gate = gate
        self._dir: Path | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        assert self._dir is not None, "start() first"
        return str(self._dir / "read.sock")

    def start(self) -> ReadBackend:
        # mkdtemp makes the directory 0700: only this user can connect to the socket in it.
        self._dir = Path(tempfile.mkdtemp(prefix="sensorstream-read-"))
        self._server = _Server(self.path, _Handler)
        self._server.gate = self.gate
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="store-read-backend",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._server = self._thread = self._dir = None


def connect_backend(path: str | os.PathLike[str], timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return sock

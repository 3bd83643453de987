"""PostgreSQL v3 protocol framing: reading client messages and building server messages.

Every message after start-up is a type byte, an int32 length (counting itself) and a body. Only
the framing and field layout live here; what a message means is ``session.py``'s business.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PROTOCOL_3_0 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_MESSAGE = 64 * 1024 * 1024  # a larger message is an attack or a bug, never a query

_I16, _I32 = struct.Struct("!h"), struct.Struct("!i")


class ProtocolError(Exception):
    """The client broke the protocol (SQLSTATE 08P01); the connection is closed."""


async def read_startup(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(code, rest of the body) of a start-up packet: no type byte, just length and code."""
    (length,) = _I32.unpack(await reader.readexactly(4))
    if not 8 <= length <= 10_000:
        raise ProtocolError(f"invalid start-up packet length {length}")
    body = await reader.readexactly(length - 4)
    return _I32.unpack_from(body)[0], body[4:]


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(type byte, body) of the next regular message."""
    header = await reader.readexactly(5)
    (length,) = _I32.unpack_from(header, 1)
    if not 4 <= length <= MAX_MESSAGE:
        raise ProtocolError(f"invalid message length {length}")
    return header[:1], await reader.readexactly(length - 4)


def parse_startup_params(body: bytes) -> dict[str, str]:
    parts = body.split(b"\x00")
    return {parts[i].decode(): parts[i + 1].decode() for i in range(0, len(parts) - 1, 2) if parts[i]}


@dataclass
class Reader:
    """Cursor over one message body: the field types of the protocol's message formats."""

    data: bytes
    pos: int = 0

    def int16(self) -> int:
        (value,) = _I16.unpack_from(self.data, self.pos)
        self.pos += 2
        return value

    def int32(self) -> int:
        (value,) = _I32.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def cstring(self) -> str:
        end = self.data.index(b"\x00", self.pos)
        value = self.data[self.pos : end].decode()
        self.pos = end + 1
        return value

    def bytes_(self, n: int) -> bytes:
        value = self.data[self.pos : self.pos + n]
        if len(value) != n:
            raise ProtocolError("message shorter than its fields")
        self.pos += n
        return value

    def int16s(self) -> list[int]:
        return [self.int16() for _ in range(self.int16())]

    def int32s_after_int16_count(self) -> list[int]:
        return [self.int32() for _ in range(self.int16())]


# --- server messages ---------------------------------------------------------------------------------
def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + _I32.pack(len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode() + b"\x00"


def auth_request(code: int, payload: bytes = b"") -> bytes:
    return message(b"R", _I32.pack(code) + payload)


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", struct.pack("!ii", pid, secret))


def ready_for_query(status: str) -> bytes:
    return message(b"Z", status.encode())


def command_complete(tag: str) -> bytes:
    return message(b"C", cstr(tag))


def error_response(sqlstate: str, text: str, severity: str = "ERROR", hint: str | None = None) -> bytes:
    fields = [b"S" + cstr(severity), b"V" + cstr(severity), b"C" + cstr(sqlstate), b"M" + cstr(text)]
    if hint:
        fields.append(b"H" + cstr(hint))
    return message(b"E", b"".join(fields) + b"\x00")


def notice_response(sqlstate: str, text: str) -> bytes:
    fields = [b"SWARNING\x00", b"VWARNING\x00", b"C" + cstr(sqlstate), b"M" + cstr(text)]
    return message(b"N", b"".join(fields) + b"\x00")


def row_description(fields: Sequence[tuple[str, int, int, int]]) -> bytes:
    """``fields``: (name, type oid, type size, format code) per column."""
    body = [_I16.pack(len(fields))]
    for name, oid, size, fmt in fields:
        body.append(cstr(name) + struct.pack("!ihihih", 0, 0, oid, size, -1, fmt))
    return message(b"T", b"".join(body))


def parameter_description(oids: Sequence[int]) -> bytes:
    return message(b"t", _I16.pack(len(oids)) + b"".join(_I32.pack(o) for o in oids))


def data_row(values: Iterable[bytes | None]) -> bytes:
    parts = []
    count = 0
    for value in values:
        count += 1
        parts.append(b"\xff\xff\xff\xff" if value is None else _I32.pack(len(value)) + value)
    return message(b"D", _I16.pack(count) + b"".join(parts))


PARSE_COMPLETE = message(b"1")
BIND_COMPLETE = message(b"2")
CLOSE_COMPLETE = message(b"3")
NO_DATA = message(b"n")
EMPTY_QUERY = message(b"I")
PORTAL_SUSPENDED = message(b"s")

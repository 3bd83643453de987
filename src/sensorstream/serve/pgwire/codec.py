"""PostgreSQL v3 protocol framing: reading client messages and building server messages.

Every message after start-up is a type byte, an int32 length (counting itself) and a body. Only
the framing and field layout live here; what a message means is ``session.py``'s business.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

PROTOCOL_3_0 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
# Sizes a message may have before the client has proven the password: PostgreSQL's own start-up
# packet limit, and a few KB for a SCRAM message (libpq's are about 100 bytes). Larger is refused
# before its body is read, so an unauthenticated connection never costs more than this.
MAX_STARTUP = 10_000
MAX_AUTH_MESSAGE = 4096
# The framing's own bound after authentication: beyond it the stream is not PostgreSQL's. Below
# it, a message over the session's bound is read in chunks and dropped, never buffered.
MAX_MESSAGE = 1 << 30
_SKIP_CHUNK = 1 << 16

_I16, _I32 = struct.Struct("!h"), struct.Struct("!i")


class ProtocolError(Exception):
    """The client broke the protocol (SQLSTATE 08P01); the connection is closed."""


class MessageTooLarge(Exception):
    """A message over the caller's bound; its body was read and dropped, the connection goes on."""

    def __init__(self, kind: bytes, size: int) -> None:
        super().__init__(f"a {kind.decode('latin-1')!r} message of {size:,} bytes")
        self.kind, self.size = kind, size


class InvalidText(ValueError):
    """A string field that is not UTF-8 (SQLSTATE 22021, as PostgreSQL reports it)."""


def utf8(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise InvalidText(f'invalid byte sequence for encoding "UTF8": 0x{bad}') from None


async def read_startup(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(code, rest of the body) of a start-up packet: no type byte, just length and code."""
    (length,) = _I32.unpack(await reader.readexactly(4))
    if not 8 <= length <= MAX_STARTUP:
        raise ProtocolError(f"invalid start-up packet length {length}")
    body = await reader.readexactly(length - 4)
    return _I32.unpack_from(body)[0], body[4:]


async def read_message(
    reader: asyncio.StreamReader, max_body: Callable[[bytes], int], *, drop_larger: bool
) -> tuple[bytes, bytes]:
    """(type byte, body) of the next regular message, its body at most ``max_body(type)`` bytes.

    A larger one is a :class:`ProtocolError` before its body is read, or with ``drop_larger`` a
    :class:`MessageTooLarge` once the body has been read and dropped (the stream stays in step).
    """
    header = await reader.readexactly(5)
    kind = header[:1]
    (length,) = _I32.unpack_from(header, 1)
    if not 4 <= length <= MAX_MESSAGE:
        raise ProtocolError(f"invalid message length {length}")
    size = length - 4
    if size > max_body(kind):
        if not drop_larger:
            raise ProtocolError(
                f"a {kind.decode('latin-1')!r} message of {size:,} bytes before authentication; "
                f"at most {max_body(kind):,} are accepted"
            )
        left = size
        while left:
            left -= len(await reader.readexactly(min(left, _SKIP_CHUNK)))
        raise MessageTooLarge(kind, size)
    return kind, await reader.readexactly(size)


def parse_startup_params(body: bytes) -> dict[str, str]:
    if not body.endswith(b"\x00"):  # as PostgreSQL: a cut packet is not read as a shorter one
        raise ProtocolError("invalid startup packet layout: expected terminator as last byte")
    parts = body.split(b"\x00")
    try:
        return {utf8(parts[i]): utf8(parts[i + 1]) for i in range(0, len(parts) - 1, 2) if parts[i]}
    except InvalidText as exc:
        raise ProtocolError(f"start-up packet: {exc}") from None


@dataclass
class Reader:
    """Cursor over one message body: the field types of the protocol's message formats."""

    data: bytes
    pos: int = 0

    def int16(self) -> int:
        return self._unpack(_I16)

    def int32(self) -> int:
        return self._unpack(_I32)

    def _unpack(self, layout: struct.Struct) -> int:
        try:
            (value,) = layout.unpack_from(self.data, self.pos)
        except struct.error:
            raise ProtocolError("invalid message format: shorter than its fields") from None
        self.pos += layout.size
        return value

    def cbytes(self) -> bytes:
        """A null-terminated field as sent, not decoded (its size can be checked first)."""
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise ProtocolError("invalid message format: a string field without its terminator")
        value = self.data[self.pos : end]
        self.pos = end + 1
        return value

    def cstring(self) -> str:
        return utf8(self.cbytes())

    def bytes_(self, n: int) -> bytes:
        value = self.data[self.pos : self.pos + n]
        if n < 0 or len(value) != n:
            raise ProtocolError("invalid message format: shorter than its fields")
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


def copy_out_response(columns: int) -> bytes:
    """CopyOutResponse for text or CSV: overall format 0, and 0 (text) for every column."""
    return message(b"H", b"\x00" + _I16.pack(columns) + _I16.pack(0) * columns)


def copy_data(data: bytes) -> bytes:
    return message(b"d", data)


COPY_DONE = message(b"c")

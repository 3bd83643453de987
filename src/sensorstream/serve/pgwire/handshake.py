"""A connection's start: the start-up packet, SCRAM-SHA-256, admission, or a CancelRequest.

Everything here runs within the authentication deadline and reads only messages whose size was
checked from their header (``codec.MAX_STARTUP``, ``codec.MAX_AUTH_MESSAGE``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from sensorstream.serve.pgwire import codec
from sensorstream.serve.pgwire.auth import AuthFailed
from sensorstream.serve.pgwire.codec import InvalidText, ProtocolError, Reader
from sensorstream.serve.pgwire.pg_catalog import STARTUP_PARAMETERS

log = logging.getLogger(__name__)

# PostgreSQL's identifier length: application_name is cut to it, as PostgreSQL cuts it.
MAX_NAME = 63


class Handshake:
    """The start of :class:`~sensorstream.serve.pgwire.session.Session` (a mixin: its state is the session's)."""

    backend: Any
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    user: str
    values: dict[str, str]
    pid: int
    secret: int

    if TYPE_CHECKING:  # the session's

        def send(self, data: bytes) -> None: ...
        async def flush(self) -> None: ...
        def _fatal(self, sqlstate: str, text: str) -> None: ...

    async def _startup(self) -> bool:
        """The start-up packet and SCRAM, within the authentication deadline: True once proven."""
        while True:
            code, body = await codec.read_startup(self.reader)
            if code in (codec.SSL_REQUEST, codec.GSSENC_REQUEST):
                # No TLS here: the endpoint binds loopback by default; 'N' makes clients go on in clear.
                self.writer.write(b"N")
                await self.writer.drain()
                continue
            if code == codec.CANCEL_REQUEST:
                # As PostgreSQL: no answer either way, so a wrong key tells the sender nothing.
                self.backend.cancel(body)
                return False
            break
        if code >> 16 != 3:
            raise ProtocolError(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: only 3.0 is")
        params = codec.parse_startup_params(body)
        if code & 0xFFFF or any(k.startswith("_pq_.") for k in params):
            unknown = [k for k in params if k.startswith("_pq_.")]
            payload = codec.struct.pack("!ii", codec.PROTOCOL_3_0, len(unknown))
            self.send(codec.message(b"v", payload + b"".join(codec.cstr(k) for k in unknown)))
        self.user = params.get("user", "")
        self.values["application_name"] = params.get("application_name", "")[:MAX_NAME]
        return await self._authenticate()

    async def _admitted(self) -> bool:
        """An authenticated slot, then AuthenticationOk and the session's parameters."""
        refusal = self.backend.admit(self)
        if refusal is not None:
            self._fatal("53300", refusal)
            await self.flush()
            return False
        self.send(codec.auth_request(0))
        for name, value in STARTUP_PARAMETERS.items():
            self.send(codec.parameter_status(name, value))
        self.send(codec.parameter_status("application_name", self.values["application_name"]))
        self.send(codec.parameter_status("session_authorization", self.user))
        self.send(codec.backend_key_data(self.pid, self.secret))
        self.send(codec.ready_for_query("I"))
        await self.flush()
        return True

    async def _auth_message(self, expected: str) -> bytes:
        kind, body = await codec.read_message(
            self.reader, lambda _: codec.MAX_AUTH_MESSAGE, drop_larger=False
        )
        if kind != b"p":
            raise ProtocolError(f"expected a {expected}")
        return body

    async def _authenticate(self) -> bool:
        exchange = self.backend.credentials.exchange(self.user)
        self.send(codec.auth_request(10, codec.cstr("SCRAM-SHA-256") + b"\x00"))
        await self.flush()
        try:
            msg = Reader(await self._auth_message("SASLInitialResponse"))
            mechanism = msg.cstring()
            if mechanism != "SCRAM-SHA-256":
                raise AuthFailed(f"unsupported SASL mechanism {mechanism}")
            length = msg.int32()
            self.send(codec.auth_request(11, exchange.first(msg.bytes_(length))))
            await self.flush()
            self.send(codec.auth_request(12, exchange.final(await self._auth_message("SASLResponse"))))
            return True
        except (AuthFailed, InvalidText) as exc:
            log.info("postgres endpoint: authentication failed for user %r: %s", self.user, exc)
            self.send(
                codec.error_response(
                    "28P01",
                    f'password authentication failed for user "{self.user}"',
                    severity="FATAL",
                    hint="use the user and password set by SENSORSTREAM_PG_USER and SENSORSTREAM_PG_PASSWORD",
                )
            )
            await self.flush()
            return False

"""SCRAM-SHA-256 password authentication (RFC 5802 / 7677), the way PostgreSQL runs it.

The password never crosses the wire, and the server keeps only the derived keys (StoredKey,
ServerKey). PostgreSQL's SASL exchange: AuthenticationSASL lists the mechanism, the client's
first and final messages come as SASLInitialResponse / SASLResponse, ours as
AuthenticationSASLContinue / Final.

Written on hashlib/hmac rather than on the ``scramp`` package: PostgreSQL ignores the user name
inside the SCRAM messages and libpq sends an empty one (``n=,``), which scramp rejects as malformed.
The name that counts is the start-up packet's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

MECHANISM = "SCRAM-SHA-256"


class AuthFailed(Exception):
    """Wrong user or password, or a broken exchange (SQLSTATE 28P01 to the client)."""


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Credentials:
    """The one user the endpoint accepts, with its SCRAM keys derived once at start-up."""

    def __init__(self, user: str, password: str, iterations: int = 4096) -> None:
        self.user = user
        self.salt = secrets.token_bytes(16)
        self.iterations = iterations
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), self.salt, iterations)
        self.stored_key = hashlib.sha256(_hmac(salted, b"Client Key")).digest()
        self.server_key = _hmac(salted, b"Server Key")

    def exchange(self, startup_user: str) -> ScramExchange:
        return ScramExchange(self, hmac.compare_digest(startup_user.encode(), self.user.encode()))


class ScramExchange:
    """One client's exchange: ``first(client_first) -> server_first``, ``final(client_final) -> server_final``."""

    def __init__(self, credentials: Credentials, user_ok: bool) -> None:
        self._cred = credentials
        # A wrong user name runs the whole exchange and fails at the proof, like PostgreSQL:
        # failing early would tell a prober which user names exist.
        self._user_ok = user_ok
        self._gs2 = self._first_bare = self._server_first = self._nonce = ""

    def first(self, client_first: bytes) -> bytes:
        text = client_first.decode(errors="replace")
        parts = text.split(",", 2)
        if len(parts) != 3 or parts[0] not in ("n", "y"):
            # "p=..." asks for channel binding, which needs TLS; we offered neither.
            raise AuthFailed("malformed SCRAM client-first message (or channel binding requested)")
        self._gs2 = f"{parts[0]},{parts[1]},"
        self._first_bare = parts[2]
        attrs = dict(a.split("=", 1) for a in self._first_bare.split(",") if "=" in a)
        client_nonce = attrs.get("r", "")
        if not client_nonce:
            raise AuthFailed("SCRAM client-first message has no nonce")
        self._nonce = client_nonce + _b64(secrets.token_bytes(18))
        self._server_first = f"r={self._nonce},s={_b64(self._cred.salt)},i={self._cred.iterations}"
        return self._server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        text = client_final.decode(errors="replace")
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        attrs = dict(a.split("=", 1) for a in without_proof.split(",") if "=" in a)
        if not sep or attrs.get("r") != self._nonce or attrs.get("c") != _b64(self._gs2.encode()):
            raise AuthFailed("malformed SCRAM client-final message")
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError:
            raise AuthFailed("malformed SCRAM proof") from None
        signature = _hmac(self._cred.stored_key, auth_message)
        if len(proof) != len(signature):
            raise AuthFailed("malformed SCRAM proof")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self._cred.stored_key):
            raise AuthFailed("wrong password")
        if not self._user_ok:
            raise AuthFailed("unknown user")
        return f"v={_b64(_hmac(self._cred.server_key, auth_message))}".encode()

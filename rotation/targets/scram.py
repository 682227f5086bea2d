"""SCRAM-SHA-256 password verifiers as PostgreSQL stores them (RFC 5802, RFC 7677).

They let a password be set without the plain value ever reaching the server, and checked
against `pg_authid` without logging in, where the only way in is a container's local socket.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata

__all__ = ["matches", "verifier"]

ITERATIONS = 4096


def _saslprep(password: str) -> bytes:
    """The bytes PostgreSQL hashes: SASLprep (RFC 4013) of the password, or the password itself where
    SASLprep rejects it, as the server and libpq do."""
    raw = password.encode("utf-8", "surrogateescape")
    if password.isascii():
        return raw  # SASLprep leaves printable and control ASCII alone, and PostgreSQL skips it
    mapped = "".join(" " if stringprep.in_table_c12(ch) else ch for ch in password if not stringprep.in_table_b1(ch))
    prepared = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if not prepared or any(check(ch) for ch in prepared for check in prohibited):
        return raw
    rtl = [stringprep.in_table_d1(ch) for ch in prepared]
    if any(rtl) and (any(stringprep.in_table_d2(ch) for ch in prepared) or not (rtl[0] and rtl[-1])):
        return raw
    return prepared.encode("utf-8")


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return hashlib.sha256(client_key).digest(), server_key


def verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` string for `password`."""
    salt = secrets.token_bytes(16) if salt is None else salt
    stored, server = _keys(password, salt, iterations)
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


def matches(stored: str, password: str) -> bool:
    """Whether a verifier read from `pg_authid.rolpassword` accepts `password`."""
    try:
        method, rest = stored.split("$", 1)
        params, keys = rest.split("$", 1)
        iterations, salt = params.split(":", 1)
        stored_key, server_key = keys.split(":", 1)
        if method != "SCRAM-SHA-256":
            return False
        want = _keys(password, base64.b64decode(salt), int(iterations))
        return hmac.compare_digest(want[0], base64.b64decode(stored_key)) and hmac.compare_digest(
            want[1], base64.b64decode(server_key)
        )
    except ValueError:
        return False

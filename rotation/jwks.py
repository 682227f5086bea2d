"""Supabase's key sets and opaque API keys (self-hosted v0.8): the HS256 secret inside a JWKS, tokens
checked as PostgREST and GoTrue check them, and `sb_publishable_`/`sb_secret_` keys with their checksum.

Upstream decides the formats: `docker/utils/add-new-auth-keys.sh` of supabase/supabase at
self-hosted/v0.8.2 writes JWT_KEYS as a JSON array of JWKs (an EC P-256 key whose key_ops hold
`sign`, and `{"kty": "oct", "k": base64url(JWT_SECRET), "alg": "HS256"}`), JWT_JWKS as
`{"keys": [the EC public key, the same oct key]}`, and the opaque keys as prefix +
base64url(17 random bytes)[:22] + "_" + base64url(sha256("supabase-self-hosted|" + prefix + random))[:8].
PostgREST reads `PGRST_JWT_SECRET: ${JWT_JWKS:-${JWT_SECRET}}` (docker-compose.yml:275): a token with
a `kid` is checked with that key, one without is tried against every key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

from .errors import UnsafeValue
from .generate import Secret

__all__ = ["OPAQUE_PREFIXES", "opaque_key", "opaque_problem", "oct_k", "verify_with_jwks", "with_oct"]

PROJECT_REF = "supabase-self-hosted"  # add-new-auth-keys.sh: const PROJECT_REF
OPAQUE_PREFIXES = ("sb_publishable_", "sb_secret_")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def oct_k(secret: str) -> str:
    """The `k` of the oct JWK that carries an HS256 secret: base64url of its UTF-8 bytes, unpadded."""
    return _b64url(secret.encode())


def keys_of(value: str) -> list[dict[str, Any]]:
    """The JWKs of a JWT_KEYS array or a JWT_JWKS `{"keys": [...]}`; a ValueError if it is neither."""
    data = json.loads(value)
    found = data.get("keys") if isinstance(data, dict) else data
    if not isinstance(found, list) or not all(isinstance(k, dict) for k in found):
        raise ValueError('not a JSON array of keys nor {"keys": [...]}')
    return found


def with_oct(name: str, value: str, old: Secret, new: Secret) -> Secret:
    """`value` (JWT_KEYS or JWT_JWKS) with the oct key of `old` now carrying `new`: only the characters of
    that `k` change, so the EC keys, kids, key order and every other byte stay as they were."""
    try:
        keys = keys_of(value)
    except ValueError as exc:
        raise UnsafeValue(f"{name} is not a JSON key set ({exc}); nothing was changed", key=name) from None
    octs = [k for k in keys if k.get("kty") == "oct"]
    was, now = json.dumps(oct_k(old.reveal())), json.dumps(oct_k(new.reveal()))
    if not octs or any(k.get("k") != oct_k(old.reveal()) for k in octs) or value.count(was) != len(octs):
        raise UnsafeValue(
            f"{name} holds no oct key of the current signing secret, so it cannot follow the new one; set its "
            "oct key to base64url(JWT_SECRET) (as add-new-auth-keys.sh does) first; nothing was changed",
            key=name,
        )
    return Secret(value.replace(was, now))


def verify_with_jwks(token: str, jwks: str) -> dict[str, Any]:
    """The claims of `token` as PostgREST accepts it with `jwks`: the key its `kid` names, else any key
    of the set that verifies it. A `jwt.InvalidTokenError` (or ValueError) when none does."""
    import jwt  # deferred with its cryptography backend: most commands never verify a token

    header = jwt.get_unverified_header(token)
    keys = keys_of(jwks)
    if header.get("kid") is not None:
        keys = [k for k in keys if k.get("kid") == header["kid"]]
    for key in keys:
        try:
            found = jwt.PyJWK(key)
            claims: dict[str, Any] = jwt.decode(token, found.key, algorithms=[found.algorithm_name or "HS256"])
            return claims
        except (jwt.InvalidTokenError, jwt.PyJWKError):
            continue
    raise jwt.InvalidSignatureError("no key of the set verifies it")


def opaque_key(prefix: str) -> Secret:
    """A new opaque API key as add-new-auth-keys.sh makes one (generateOpaqueKey)."""
    random = _b64url(secrets.token_bytes(17))[:22]
    return Secret(f"{prefix}{random}_{_checksum(prefix + random)}")


def _checksum(intermediate: str) -> str:
    return _b64url(hashlib.sha256(f"{PROJECT_REF}|{intermediate}".encode()).digest())[:8]


def opaque_problem(value: str, prefix: str) -> str | None:
    """Why `value` is not an opaque key of `prefix` with a valid checksum, or None."""
    rest = value.removeprefix(prefix)  # base64url holds "_" too: the parts are found by position
    body, separator, checksum = rest[:22], rest[22:23], rest[23:]
    if not value.startswith(prefix) or separator != "_" or len(body) != 22 or len(checksum) != 8:
        return f"is not an opaque key of the form {prefix}<22 characters>_<8-character checksum>"
    if checksum != _checksum(prefix + body):
        return "has a checksum that does not match (a typo, or a key cut short?)"
    return None

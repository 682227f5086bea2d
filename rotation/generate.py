"""New secret values: random strings from a safe alphabet, and Supabase-style HS256 JWTs."""

from __future__ import annotations

import secrets
import time
from typing import Any

from .config import ALPHABETS

__all__ = ["Secret", "random_value", "sign_jwt", "verify_jwt"]


class Secret:
    """A secret value that never shows itself in output, logs or exceptions.

    `str()` and `repr()` give only its length and alphabet; `reveal()` is the one way to the value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself, for writing to a file or a database, never for printing."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)

    def describe(self) -> str:
        """Length and character class, the most a person is ever shown of a value."""
        for name in ("hex", "alnum", "base64url"):
            if self._value and set(self._value) <= set(ALPHABETS[name]):
                return f"{len(self._value)} chars, {name}"
        if self._value.count(".") == 2:
            return f"{len(self._value)} chars, jwt"
        return f"{len(self._value)} chars"

    def __repr__(self) -> str:
        return f"Secret(<{self.describe()}>)"

    __str__ = __repr__


def random_value(length: int, alphabet: str) -> Secret:
    """A uniformly random string of exactly `length` characters from the named alphabet."""
    chars = ALPHABETS[alphabet]
    return Secret("".join(secrets.choice(chars) for _ in range(length)))


def sign_jwt(key: Secret, role: str, issuer: str, expires_in: int, now: float | None = None) -> Secret:
    """An HS256 JWT with the claims Supabase expects: role, iss, iat and exp."""
    issued = int(time.time() if now is None else now)
    claims = {"role": role, "iss": issuer, "iat": issued, "exp": issued + expires_in}
    import jwt  # deferred with its cryptography backend: most commands never sign or verify

    return Secret(jwt.encode(claims, key.reveal(), algorithm="HS256", headers={"typ": "JWT"}))


def verify_jwt(token: Secret, key: Secret) -> dict[str, Any]:
    """The claims of `token` if it verifies against `key`; raises `jwt.InvalidTokenError` if not."""
    import jwt

    claims: dict[str, Any] = jwt.decode(token.reveal(), key.reveal(), algorithms=["HS256"])
    return claims

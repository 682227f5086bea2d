"""The EC signing key of a Supabase key set, rotated with overlap: standby, rotate, revoke.

Upstream's `docker/utils/add-new-auth-keys.sh` (self-hosted/v0.8.2) writes one EC P-256 key into
JWT_KEYS (with `d`, `key_ops: ["sign", "verify"]`) and its public half into JWT_JWKS, and signs
ANON_KEY_ASYMMETRIC and SERVICE_ROLE_KEY_ASYMMETRIC with it (ES256, `kid` in the header). Running the
script again replaces the key outright, so every session token of the old key fails at once. Here
the key moves as hosted Supabase moves it, one phase per run:

- standby: a new key joins both sets, verify only; the old key still signs;
- rotate: `sign` moves to the new key (exactly one key signs), the tokens are re-signed with its kid;
- revoke: the old key leaves both sets, once every session token it signed has expired.

The phase is read from the sets themselves (the standby key follows the signing key), so a restored
backup is simply in the phase it was in.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from .generate import Secret
from .jwks import keys_of

__all__ = ["KeyState", "Step", "key_state", "next_step", "sign_es256", "signing_kid"]

State = Literal["single", "standby", "rotated"]
NEXT = {"single": "standby", "standby": "rotate", "rotated": "revoke"}


@dataclass(frozen=True, slots=True)
class KeyState:
    """Where a key set stands: `single` (one EC key, signing), `standby` (a second key waits, verify
    only) or `rotated` (the second key signs, the first only verifies), and the kid that signs."""

    state: State
    signing: str
    other: str | None = None  # standby: the waiting key's kid; rotated: the old key's, which revoke removes

    @property
    def next(self) -> str:
        """The phase the next `rotate --secrets JWT_KEYS` runs."""
        return NEXT[self.state]


@dataclass(frozen=True, slots=True)
class Step:
    """One phase's new values of both sets, and whether the tokens are re-signed (rotate only)."""

    phase: str
    private: Secret
    public: Secret
    resign: bool


def _ec(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [k for k in keys if k.get("kty") == "EC"]


def _signs(key: dict[str, Any]) -> bool:
    return "sign" in (key.get("key_ops") or ())


def key_state(private: str) -> KeyState:
    """The phase of JWT_KEYS; a ValueError that says what is wrong with a set no phase fits."""
    keys = _ec(keys_of(private))
    signing = [k for k in keys if _signs(k)]
    if not keys or any(not isinstance(k.get("kid"), str) or not k.get("d") for k in keys):
        raise ValueError("holds no EC private key with a kid (run Supabase's utils/add-new-auth-keys.sh first)")
    if len(keys) > 2 or len(signing) != 1:
        raise ValueError(f"holds {len(keys)} EC keys of which {len(signing)} sign; one signs, beside at most one more")
    if len(keys) == 1:
        return KeyState("single", keys[0]["kid"])
    if keys[0] is signing[0]:
        return KeyState("standby", keys[0]["kid"], keys[1]["kid"])
    return KeyState("rotated", keys[1]["kid"], keys[0]["kid"])


def signing_kid(private: str) -> str | None:
    """The kid of the key that signs, or None where the set holds no usable EC key."""
    try:
        return key_state(private).signing
    except ValueError:
        return None


def _public_matches(private: list[dict[str, Any]], public: list[dict[str, Any]]) -> str | None:
    """Why the public set does not hold exactly the private set's EC keys, or None."""
    halves = {k["kid"]: (k.get("x"), k.get("y")) for k in _ec(public) if isinstance(k.get("kid"), str)}
    wanted = {k["kid"]: (k.get("x"), k.get("y")) for k in _ec(private)}
    if halves != wanted:
        return "does not hold exactly the public halves of JWT_KEYS's EC keys"
    if any("d" in k for k in _ec(public)):
        return "holds a private key (`d`): the public set is read by every service"
    return None


def new_key() -> dict[str, Any]:
    """A fresh EC P-256 key as add-new-auth-keys.sh writes it, with a uuid kid; verify only (standby)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    numbers = ec.generate_private_key(ec.SECP256R1()).private_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(32, "big")).decode().rstrip("=")

    return {
        "kty": "EC",
        "kid": str(uuid.uuid4()),
        "use": "sig",
        "key_ops": ["verify"],
        "alg": "ES256",
        "ext": True,
        "crv": "P-256",
        "x": b64(numbers.public_numbers.x),
        "y": b64(numbers.public_numbers.y),
        "d": b64(numbers.private_value),
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))  # JSON.stringify, as the script writes both sets


def next_step(private: str, public: str) -> Step:
    """The next phase's JWT_KEYS and JWT_JWKS; a ValueError where the sets fit no phase or disagree.

    Only the EC keys change: the oct key (JWT_SECRET's), its position and every other member stay.
    """
    keys, shown = keys_of(private), json.loads(public)
    problem = _public_matches(keys, keys_of(public))
    if problem is not None:
        raise ValueError(f"JWT_JWKS {problem}")
    state = key_state(private)
    listed = shown["keys"] if isinstance(shown, dict) else shown
    if state.state == "single":
        key = new_key()
        after = next(i for i, k in enumerate(keys) if k.get("kid") == state.signing) + 1
        keys.insert(after, key)
        half = {k: v for k, v in key.items() if k != "d"}
        after = next(i for i, k in enumerate(listed) if k.get("kid") == state.signing) + 1
        listed.insert(after, half)
        return Step("standby", Secret(_dumps(keys)), Secret(_dumps(shown)), resign=False)
    if state.state == "standby":
        for key in _ec(keys):
            key["key_ops"] = ["verify"] if key["kid"] == state.signing else ["sign", "verify"]
        return Step("rotate", Secret(_dumps(keys)), Secret(public), resign=True)
    keys = [k for k in keys if k.get("kid") != state.other]
    listed[:] = [k for k in listed if k.get("kid") != state.other]
    return Step("revoke", Secret(_dumps(keys)), Secret(_dumps(shown)), resign=False)


def sign_es256(private: Secret, role: str, issuer: str, expires_in: int, issued: int) -> Secret:
    """A token as add-new-auth-keys.sh signs ANON_KEY_ASYMMETRIC: ES256 with the signing key's kid in
    the header, and the claims role, iss, iat and exp."""
    import jwt  # deferred with its cryptography backend

    state = key_state(private.reveal())
    key = next(k for k in _ec(keys_of(private.reveal())) if k["kid"] == state.signing)
    signer = jwt.PyJWK({**key, "key_ops": ["sign"]})
    claims = {"role": role, "iss": issuer, "iat": issued, "exp": issued + expires_in}
    headers = {"kid": state.signing, "typ": "JWT"}
    return Secret(jwt.encode(claims, signer.key, algorithm="ES256", headers=headers))

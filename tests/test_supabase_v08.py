"""Supabase self-hosted v0.8's new key family, on a stack built the way upstream's opt-in
docker/utils/add-new-auth-keys.sh (self-hosted/v0.8.2) builds it: JWT_KEYS and JWT_JWKS carry
JWT_SECRET as their oct key, ES256 tokens name the EC key's kid, and the opaque API keys carry a checksum."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from rotation import envfile

from . import baoserver
from .conftest import CLI, one_line_error, tree

FILES = (".env", "supabase/docker/.env")
TOKENS = ("ANON_KEY", "SERVICE_ROLE_KEY", "ANON_KEY_ASYMMETRIC", "SERVICE_ROLE_KEY_ASYMMETRIC")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def opaque(prefix: str) -> str:
    """generateOpaqueKey of add-new-auth-keys.sh, transcribed."""
    random = b64url(secrets.token_bytes(17))[:22]
    checksum = b64url(hashlib.sha256(f"supabase-self-hosted|{prefix}{random}".encode()).digest())[:8]
    return f"{prefix}{random}_{checksum}"


def opaque_checksum_holds(value: str, prefix: str) -> bool:
    rest = value.removeprefix(prefix)
    body, checksum = rest[:22], rest[23:]
    expected = b64url(hashlib.sha256(f"supabase-self-hosted|{prefix}{body}".encode()).digest())[:8]
    return value.startswith(prefix) and rest[22] == "_" and checksum == expected


def add_new_auth_keys(root: Path) -> dict[str, str]:
    """What `add-new-auth-keys.sh --update-env` appends to .env, and start_services.py copies over the
    Supabase one: JSON.stringify output (no spaces), unquoted, one KEY=value line each."""
    secret = envfile.read(root / ".env").get("JWT_SECRET") or ""
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private))
    kid = str(uuid.uuid4())
    oct_key = {"kty": "oct", "k": b64url(secret.encode()), "alg": "HS256"}
    ec_base = {"kty": "EC", "kid": kid, "use": "sig"}
    signing = {**ec_base, "key_ops": ["sign", "verify"], "alg": "ES256", "ext": True, "crv": jwk["crv"]}
    signing |= {"x": jwk["x"], "y": jwk["y"], "d": jwk["d"]}
    public = {**ec_base, "key_ops": ["verify"], "alg": "ES256", "ext": True, "crv": jwk["crv"]}
    public |= {"x": jwk["x"], "y": jwk["y"]}
    iat = int(time.time())
    exp = iat + 5 * 365 * 24 * 3600

    def es256(role: str) -> str:
        claims = {"role": role, "iss": "supabase", "iat": iat, "exp": exp}
        return jwt.encode(claims, private, algorithm="ES256", headers={"typ": "JWT", "kid": kid})

    compact = {"separators": (",", ":")}
    added = {
        "SUPABASE_PUBLISHABLE_KEY": opaque("sb_publishable_"),
        "SUPABASE_SECRET_KEY": opaque("sb_secret_"),
        "ANON_KEY_ASYMMETRIC": es256("anon"),
        "SERVICE_ROLE_KEY_ASYMMETRIC": es256("service_role"),
        "JWT_KEYS": json.dumps([signing, oct_key], **compact),  # type: ignore[arg-type]
        "JWT_JWKS": json.dumps({"keys": [public, oct_key]}, **compact),  # type: ignore[arg-type]
    }
    text = (root / ".env").read_text() + "".join(f"{k}={v}\n" for k, v in added.items())
    for name in FILES:
        (root / name).write_text(text)
    return added


def postgrest_claims(token: str, jwks: str) -> dict[str, Any]:
    """PostgREST with PGRST_JWT_SECRET set to a JWKS: a token's kid picks its key; without a kid, any
    key of the set that verifies it will do."""
    kid = jwt.get_unverified_header(token).get("kid")
    keys = [k for k in json.loads(jwks)["keys"] if kid is None or k.get("kid") == kid]
    for key in keys:
        found = jwt.PyJWK(key)
        try:
            claims: dict[str, Any] = jwt.decode(token, found.key, algorithms=[found.algorithm_name])
            return claims
        except jwt.InvalidTokenError:
            continue
    raise AssertionError("no key of the set verifies the token")


@pytest.fixture
def v08(stack: Path) -> tuple[Path, dict[str, str]]:
    return stack, add_new_auth_keys(stack)


def values(root: Path, name: str = ".env") -> dict[str, str]:
    parsed = envfile.read(root / name)
    return {k: v for k in parsed.names() if (v := parsed.get(k)) is not None}


def test_jwt_secret_carries_its_key_sets_and_every_token_still_verifies(
    v08: tuple[Path, dict[str, str]], inproc: CLI
) -> None:
    root, added = v08
    before = {name: (root / name).read_bytes() for name in FILES}
    old = values(root)
    ran = inproc("rotate", "--secrets", "JWT_SECRET")
    assert ran.code == 0, ran.text
    new = values(root)
    assert new["JWT_SECRET"] != old["JWT_SECRET"]
    old_k, new_k = b64url(old["JWT_SECRET"].encode()), b64url(new["JWT_SECRET"].encode())
    for name in ("JWT_KEYS", "JWT_JWKS"):  # only the oct key's k changed: EC keys, kids, order, bytes
        assert new[name] == added[name].replace(old_k, new_k), name
    for token in TOKENS:
        claims = postgrest_claims(new[token], new["JWT_JWKS"])
        assert claims["role"] == ("anon" if token.startswith("ANON") else "service_role")
    assert new["ANON_KEY_ASYMMETRIC"] == added["ANON_KEY_ASYMMETRIC"]  # its EC key did not change
    signers = [k for k in json.loads(new["JWT_KEYS"]) if "sign" in k.get("key_ops", [])]
    assert len(signers) == 1 and signers[0]["kty"] == "EC"  # GoTrue takes exactly one signing key
    for name in FILES:  # every other byte as it was, in both files
        changed = {k: new[k] for k in ("JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY", "JWT_KEYS", "JWT_JWKS")}
        assert (root / name).read_bytes() == envfile.from_bytes(before[name]).rendered(changed), name
    private = json.loads(added["JWT_KEYS"])[0]["d"]
    shown = ran.text + (root / "backups/secrets/audit.log").read_text()
    shown += next((root / "backups/secrets").glob("secrets-backup-*/metadata.json")).read_text()
    assert private not in shown and added["SUPABASE_SECRET_KEY"] not in shown
    assert inproc("restore", "--latest").code == 0
    assert {name: (root / name).read_bytes() for name in FILES} == before


def test_a_key_set_that_does_not_carry_the_current_secret_stops_the_rotation(
    v08: tuple[Path, dict[str, str]], inproc: CLI
) -> None:
    root, added = v08
    stale = added["JWT_JWKS"].replace(b64url((values(root)["JWT_SECRET"]).encode()), b64url(b"an older secret"))
    for name in FILES:
        path = root / name
        path.write_text(path.read_text().replace(added["JWT_JWKS"], stale))
    before = tree(root)
    ran = inproc("rotate", "--secrets", "JWT_SECRET")
    assert ran.code == 2 and "JWT_JWKS" in one_line_error(ran), ran.text
    assert tree(root) == before


def test_the_public_set_follows_its_secret_and_its_signing_set_and_is_not_rotated_alone(
    v08: tuple[Path, dict[str, str]], inproc: CLI
) -> None:
    ran = inproc("rotate", "--secrets", "JWT_JWKS")
    error = one_line_error(ran)
    assert ran.code == 2 and "follows JWT_SECRET" in error and "rotate JWT_KEYS" in error, ran.text
    ran = inproc("rotate", "--secrets", "JWT_KEYS,JWT_SECRET")
    assert ran.code == 2 and "in a run of its own" in one_line_error(ran), ran.text


def test_opaque_api_keys_rotate_in_upstreams_format(v08: tuple[Path, dict[str, str]], inproc: CLI) -> None:
    root, added = v08
    ran = inproc("rotate", "--secrets", "SUPABASE_PUBLISHABLE_KEY,SUPABASE_SECRET_KEY")
    assert ran.code == 0, ran.text
    now = values(root)
    for name, prefix in (("SUPABASE_PUBLISHABLE_KEY", "sb_publishable_"), ("SUPABASE_SECRET_KEY", "sb_secret_")):
        assert now[name] != added[name] and opaque_checksum_holds(now[name], prefix), now[name]
        assert now[name] not in ran.text


@pytest.mark.vault
def test_a_pulled_opaque_key_with_a_broken_checksum_is_refused(
    v08: tuple[Path, dict[str, str]], bao: baoserver.Server, inproc: CLI
) -> None:
    from .test_untrusted import env_for, unique, with_store

    root, added = v08
    path = unique()
    with_store(root, path, ["SUPABASE_SECRET_KEY"])
    good = opaque("sb_secret_")
    bao.write(path, {"SUPABASE_SECRET_KEY": good[:-1] + ("A" if good[-1] != "A" else "B")})
    before = tree(root)
    ran = inproc("pull", env=env_for(bao.address))
    assert ran.code == 2 and "checksum" in one_line_error(ran), ran.text
    assert tree(root) == before
    bao.write(path, {"SUPABASE_SECRET_KEY": good})
    assert inproc("pull", env=env_for(bao.address)).code == 0
    assert values(root)["SUPABASE_SECRET_KEY"] == good != added["SUPABASE_SECRET_KEY"]


def ec_keys(value: str) -> list[dict[str, Any]]:
    keys = json.loads(value)
    return [k for k in (keys["keys"] if isinstance(keys, dict) else keys) if k["kty"] == "EC"]


def moved_back(root: Path, seconds: float) -> None:
    """Mark the newest run verified, its readers recreated `seconds` ago (as `restart verify` records)."""
    from rotation.backup import BackupStore, RunStatus

    store = BackupStore.for_stack(root, "backups/secrets")
    run = store.latest_rotation()
    assert run is not None
    store.update(run, status=RunStatus.VERIFIED, restarts=[{"at": time.time() - seconds, "services": ["auth"]}])


def test_the_signing_key_moves_through_standby_rotate_and_revoke_and_no_session_fails(
    v08: tuple[Path, dict[str, str]], inproc: CLI
) -> None:
    """A session token GoTrue signed with the old key before the rotation verifies after every phase up
    to revoke; revoke waits for JWT_EXPIRY after the rotate phase, and then removes the old key."""
    root, added = v08
    first = ec_keys(added["JWT_KEYS"])[0]
    session = jwt.encode(
        {"role": "authenticated", "iss": "supabase", "iat": int(time.time()), "exp": int(time.time()) + 3600},
        jwt.PyJWK({**first, "key_ops": ["sign"]}).key,
        algorithm="ES256",
        headers={"kid": first["kid"]},
    )

    ran = inproc("rotate", "--secrets", "JWT_KEYS", "--json")
    assert ran.code == 0, ran.text
    result = json.loads(ran.out)
    assert sorted(result["rotated_secrets"]) == ["JWT_JWKS", "JWT_KEYS"] and result["phases"] == {"JWT_KEYS": "standby"}
    standby = values(root)
    private, public = ec_keys(standby["JWT_KEYS"]), ec_keys(standby["JWT_JWKS"])
    assert [k["kid"] for k in private] == [k["kid"] for k in public] and private[0] == first
    assert private[1]["key_ops"] == ["verify"] and "d" not in public[1] and public[1]["x"] == private[1]["x"]
    assert standby["ANON_KEY_ASYMMETRIC"] == added["ANON_KEY_ASYMMETRIC"]  # the old key still signs
    assert postgrest_claims(session, standby["JWT_JWKS"])["role"] == "authenticated"
    assert values(root, FILES[1]) == standby
    moved_back(root, 0)
    listing = inproc("restore", "--list")
    assert "JWT_KEYS (standby)" in listing.out, listing.text

    assert inproc("rotate", "--secrets", "JWT_KEYS").code == 0
    rotated = values(root)
    private = ec_keys(rotated["JWT_KEYS"])
    assert [k["key_ops"] for k in private] == [["verify"], ["sign", "verify"]]
    assert rotated["JWT_JWKS"] == standby["JWT_JWKS"]  # both keys verify already
    for token in ("ANON_KEY_ASYMMETRIC", "SERVICE_ROLE_KEY_ASYMMETRIC"):
        assert jwt.get_unverified_header(rotated[token])["kid"] == private[1]["kid"]
        assert postgrest_claims(rotated[token], rotated["JWT_JWKS"])["role"] in ("anon", "service_role")
    assert postgrest_claims(session, rotated["JWT_JWKS"])["role"] == "authenticated"
    for token in ("ANON_KEY", "SERVICE_ROLE_KEY"):  # the HS256 family is untouched
        assert rotated[token] == standby[token]
    moved_back(root, 600)  # its readers were recreated ten minutes ago; JWT_EXPIRY is 3600

    before = {k: v for k, v in tree(root).items() if not k.endswith(("audit.log", ".lock"))}
    refused = inproc("rotate", "--secrets", "JWT_KEYS", "--json")
    error = json.loads(refused.out)
    assert refused.code == 2 and error["key"] == "--secrets" and "JWT_EXPIRY=3600s" in error["error"]
    assert "51 min" in error["error"] or "50 min" in error["error"]
    assert {k: v for k, v in tree(root).items() if not k.endswith(("audit.log", ".lock"))} == before
    due = inproc("due")
    assert "JWT_KEYS" in due.out and "revoke" in due.out, due.text

    moved_back(root, 3700)
    ran = inproc("rotate", "--secrets", "JWT_KEYS")
    assert ran.code == 0, ran.text
    revoked = values(root)
    assert [k["kid"] for k in ec_keys(revoked["JWT_KEYS"])] == [private[1]["kid"]]
    assert [k["kid"] for k in ec_keys(revoked["JWT_JWKS"])] == [private[1]["kid"]]
    assert json.loads(revoked["JWT_KEYS"])[-1]["kty"] == "oct"  # the oct key stays where it was
    with pytest.raises(AssertionError):
        postgrest_claims(session, revoked["JWT_JWKS"])  # expired by now in real time; its key is gone
    shown = "".join(p.read_text() for p in (root / "backups/secrets").rglob("*.json"))
    shown += (root / "backups/secrets/audit.log").read_text()
    assert first["d"] not in shown and private[1]["d"] not in shown

    assert inproc("restore", "--latest").code == 0  # back to the rotated phase, both keys
    assert values(root) == rotated


def test_a_stack_without_a_signing_key_set_says_so_in_one_line(stack: Path, inproc: CLI) -> None:
    ran = inproc("rotate", "--secrets", "JWT_KEYS")
    assert ran.code == 2 and ran.err.count("\n") == 1 and "JWT_KEYS" in ran.err, ran.text

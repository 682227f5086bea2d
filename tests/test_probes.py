"""Probes on plain data: a stale-key probe only runs when that key was rotated in this run."""

from __future__ import annotations

from pathlib import Path

from rotation.config import Config, HttpProbe, JwtProbe, SecretSpec
from rotation.generate import Secret, sign_jwt
from rotation.probes import run_probes


def no_database(point: object) -> object:
    raise AssertionError("no database probe configured")


def config(*probes: object) -> Config:
    secrets = {
        "JWT_SECRET": SecretSpec("JWT_SECRET", "random", (".env",)),
        "ANON_KEY": SecretSpec("ANON_KEY", "jwt-token", (".env",), role="anon", depends_on="JWT_SECRET"),
    }
    return Config(Path("x.yaml"), secrets, verify=tuple(probes))  # type: ignore[arg-type]


def test_stale_key_probe_is_skipped_when_the_key_did_not_change() -> None:
    probe = HttpProbe("old key refused", "http://127.0.0.1:9/", headers={"apikey": "${previous:ANON_KEY}"}, expect=401)
    values = {"ANON_KEY": "same"}
    [result] = run_probes(config(probe), values, values, no_database)  # type: ignore[arg-type]
    assert result.ok and "skipped: ANON_KEY not rotated in this run" in result.detail


def test_missing_reference_fails_and_names_it() -> None:
    probe = HttpProbe("needs a key", "http://127.0.0.1:9/", headers={"apikey": "${NOPE}"})
    [result] = run_probes(config(probe), {}, {}, no_database)  # type: ignore[arg-type]
    assert not result.ok and "${NOPE} has no value" in result.detail


def test_jwt_probe_checks_signature_and_role() -> None:
    key = Secret("k" * 40)
    good = {"JWT_SECRET": key.reveal(), "ANON_KEY": sign_jwt(key, "anon", "supabase", 3600).reveal()}
    [result] = run_probes(config(JwtProbe()), good, good, no_database)  # type: ignore[arg-type]
    assert result.ok and "ANON_KEY verifies against JWT_SECRET" in result.detail
    wrong_role = {**good, "ANON_KEY": sign_jwt(key, "service_role", "supabase", 3600).reveal()}
    [result] = run_probes(config(JwtProbe()), wrong_role, good, no_database)  # type: ignore[arg-type]
    assert not result.ok and "expected anon" in result.detail
    stale = {**good, "JWT_SECRET": "x" * 40}
    [result] = run_probes(config(JwtProbe()), stale, good, no_database)  # type: ignore[arg-type]
    assert not result.ok and "does not verify" in result.detail

"""Planning: who gets rotated, who gets re-signed, what is refused, and values that are safe to write."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from rotation import composefiles, envfile
from rotation.config import check_stack, load
from rotation.errors import DataLossRefused, SelectionError
from rotation.generate import Secret, random_value, verify_jwt
from rotation.plan import make_plan, render_files


@pytest.fixture
def loaded(stack: Path):  # type: ignore[no-untyped-def]
    config = load(stack / "secrets-config.yaml")
    return config, check_stack(config, stack), composefiles.read(stack, ())


@pytest.mark.parametrize("alphabet", ["alnum", "hex", "base64url"])
def test_generated_values_have_exact_length_and_nothing_compose_would_interpret(alphabet: str) -> None:
    for length in (16, 32, 61):
        value = random_value(length, alphabet).reveal()
        assert len(value) == length
        assert envfile.safe_value(value)
        assert not re.search(r"[$'\"#\s\\]", value)


def test_secret_never_shows_its_value() -> None:
    secret = Secret("hunter2hunter2hunter2")
    assert "hunter2" not in str(secret) and "hunter2" not in repr(secret) and "hunter2" not in f"{secret}"
    assert secret.describe() == "21 chars, alnum"


def test_default_rotation_skips_static_encrypting_and_manual_secrets(loaded) -> None:  # type: ignore[no-untyped-def]
    config, files, _ = loaded
    plan = make_plan(config, files)
    assert "OPENAI_API_KEY" not in plan.names and "DASHBOARD_USERNAME" not in plan.names
    assert "N8N_ENCRYPTION_KEY" not in plan.names and "VAULT_ENC_KEY" not in plan.names
    assert "POSTGRES_PASSWORD" not in plan.names
    assert {"JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY"} <= set(plan.names)


def test_jwt_secret_re_signs_its_tokens_with_fresh_claims(loaded) -> None:  # type: ignore[no-untyped-def]
    config, files, readers = loaded
    now = time.time()
    plan = make_plan(config, files, ["JWT_SECRET"], now=now, readers=readers)
    assert plan.names == ("ANON_KEY", "JWT_SECRET", "SERVICE_ROLE_KEY")
    key = plan.change("JWT_SECRET").new  # type: ignore[union-attr]
    for name, role in (("ANON_KEY", "anon"), ("SERVICE_ROLE_KEY", "service_role")):
        claims = verify_jwt(plan.change(name).new, key)  # type: ignore[union-attr]
        assert claims["role"] == role and claims["iss"] == "supabase"
        assert claims["iat"] == int(now)
        assert claims["exp"] - claims["iat"] >= 5 * 365 * 86400
    assert "auth" in plan.services and "kong" in plan.services and "db" not in plan.services
    assert plan.because["kong"] == ("ANON_KEY", "SERVICE_ROLE_KEY") and plan.because["auth"] == ("JWT_SECRET",)


def test_naming_only_anon_key_re_signs_it_with_the_current_jwt_secret(loaded) -> None:  # type: ignore[no-untyped-def]
    config, files, _ = loaded
    plan = make_plan(config, files, ["ANON_KEY"])
    assert plan.names == ("ANON_KEY",)
    current = Secret(files[".env"].get("JWT_SECRET"))
    assert verify_jwt(plan.change("ANON_KEY").new, current)["role"] == "anon"  # type: ignore[union-attr]


def test_static_and_unknown_names_are_refused(loaded) -> None:  # type: ignore[no-untyped-def]
    config, files, _ = loaded
    with pytest.raises(SelectionError, match="OPENAI_API_KEY is static"):
        make_plan(config, files, ["OPENAI_API_KEY"])
    with pytest.raises(SelectionError, match="unknown secret 'NOPE'"):
        make_plan(config, files, ["NOPE"])


@pytest.mark.parametrize("name", ["N8N_ENCRYPTION_KEY", "VAULT_ENC_KEY"])
def test_encrypting_keys_need_accept_data_loss(loaded, name: str) -> None:  # type: ignore[no-untyped-def]
    config, files, _ = loaded
    with pytest.raises(DataLossRefused, match=name):
        make_plan(config, files, [name])
    plan = make_plan(config, files, [name], accept_data_loss=True)
    assert plan.names == (name,)
    assert len(plan.change(name).new) == config.secrets[name].length  # type: ignore[union-attr]


def test_auto_rotate_of_an_encrypting_key_is_refused_too(loaded) -> None:  # type: ignore[no-untyped-def]
    config, files, _ = loaded
    spec = config.secrets["N8N_ENCRYPTION_KEY"]
    secrets = dict(config.secrets)
    secrets["N8N_ENCRYPTION_KEY"] = type(spec)(**{**{f: getattr(spec, f) for f in spec.__slots__}, "auto_rotate": True})
    config = type(config)(config.path, secrets, config.backup, config.compose)
    with pytest.raises(DataLossRefused, match="N8N_ENCRYPTION_KEY"):
        make_plan(config, files)
    assert "N8N_ENCRYPTION_KEY" in make_plan(config, files, accept_data_loss=True).names


def test_rendered_files_change_only_the_rotated_values(loaded, stack: Path) -> None:  # type: ignore[no-untyped-def]
    config, files, _ = loaded
    plan = make_plan(config, files, ["DASHBOARD_PASSWORD"])
    new = render_files(plan, files)
    for name, data in new.items():
        old = (stack / name).read_bytes()
        old_value = (files[name].get("DASHBOARD_PASSWORD") or "").encode()
        change = plan.change("DASHBOARD_PASSWORD")
        assert change is not None and data == old.replace(old_value, change.new.reveal().encode())

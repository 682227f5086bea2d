"""Configuration: the bundled file is valid, and every bad input is one clear line that changes nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from rotation.config import find_config, load, parse_duration
from rotation.errors import ConfigError

from .conftest import CLI, REPO, edited_config, tree


def test_bundled_config_covers_the_local_ai_stack() -> None:
    config = load(REPO / "secrets-config.yaml")
    secrets = config.secrets
    assert secrets["N8N_ENCRYPTION_KEY"].encrypts_data
    assert secrets["VAULT_ENC_KEY"].encrypts_data and secrets["VAULT_ENC_KEY"].length == 32
    assert secrets["POSTGRES_PASSWORD"].alphabet == "hex"
    assert secrets["OPENAI_API_KEY"].type == "static"
    assert secrets["ANON_KEY"].depends_on == "JWT_SECRET" and secrets["ANON_KEY"].role == "anon"
    assert secrets["SERVICE_ROLE_KEY"].role == "service_role"
    # the HS256 tokens it signs, and the v0.8 key sets that carry it as their oct key
    assert config.dependents(["JWT_SECRET"]) == ("ANON_KEY", "SERVICE_ROLE_KEY", "JWT_KEYS", "JWT_JWKS")
    roles = secrets["POSTGRES_PASSWORD"].apply[0].roles
    assert {"postgres", "supabase_admin", "authenticator", "supabase_auth_admin"} <= set(roles)


def test_config_is_found_in_the_stack_then_scripts_else_none(tmp_path: Path) -> None:
    assert find_config(tmp_path, None) is None  # the caller decides about the bundled one
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "secrets-config.yaml").write_text("x")
    assert find_config(tmp_path, None) == tmp_path / "scripts" / "secrets-config.yaml"
    (tmp_path / "secrets-config.yaml").write_text("x")
    assert find_config(tmp_path, None) == tmp_path / "secrets-config.yaml"


def test_durations() -> None:
    assert parse_duration("30d", "x") == 30 * 86400
    assert parse_duration("12h", "x") == 12 * 3600
    assert parse_duration(60, "x") == 60
    with pytest.raises(ConfigError, match="x: 'soon'"):
        parse_duration("soon", "x")


Edit = Callable[[dict], None]


def _set(path: str, value: object) -> Edit:
    def edit(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


def _delete(path: str) -> Edit:
    def edit(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        del node[last]

    return edit


BAD = [
    pytest.param(_set("secrets.JWT_SECRET.type", "magic"), "secrets.JWT_SECRET.type", id="unknown-type"),
    pytest.param(_delete("secrets.ANON_KEY.depends_on"), "secrets.ANON_KEY.depends_on", id="jwt-without-signer"),
    pytest.param(_set("secrets.ANON_KEY.depends_on", "NOPE"), "secrets.ANON_KEY.depends_on", id="unknown-signer"),
    pytest.param(_set("secrets.JWT_SECRET.length", 8), "secrets.JWT_SECRET.length", id="too-short"),
    pytest.param(_set("secrets.JWT_SECRET.files", ["../outside.env"]), "secrets.JWT_SECRET.files", id="dotdot"),
    pytest.param(_set("secrets.JWT_SECRET.files", ["/etc/passwd"]), "secrets.JWT_SECRET.files", id="absolute"),
    pytest.param(_set("secrets.JWT_SECRET.alphabet", "emoji"), "secrets.JWT_SECRET.alphabet", id="alphabet"),
    pytest.param(_set("compose", {"single_writer": "db-data"}), "compose.single_writer", id="single-writer"),
    pytest.param(_set("compose", {"single_writers": ["db-data"]}), "compose.single_writers", id="compose-key"),
]


def _cycle(raw: dict) -> None:
    raw["secrets"]["JWT_SECRET"] = {
        "type": "jwt-token",
        "role": "x",
        "depends_on": "ANON_KEY",
        "files": [".env"],
    }


BAD.append(pytest.param(_cycle, "dependency cycle", id="cycle"))


@pytest.mark.parametrize(("edit", "named"), BAD)
def test_bad_config_is_one_line_naming_file_and_key_and_changes_nothing(
    stack: Path, inproc: CLI, edit: Edit, named: str
) -> None:
    config = stack / "secrets-config.yaml"
    with edited_config(stack) as raw:
        edit(raw)
    before = tree(stack)
    ran = inproc("rotate")
    assert ran.code != 0
    message = ran.err.strip()
    assert len(message.splitlines()) == 1, ran.err
    assert "Traceback" not in ran.text
    assert str(config) in message and named in message
    assert tree(stack) == before


@pytest.mark.parametrize(
    ("edit", "secret", "words"),
    [
        (_set("secrets.JWT_SECRET.files", ["missing.env"]), "JWT_SECRET", "missing.env does not exist"),
        (
            _set("secrets.N8N_USER_MANAGEMENT_JWT_SECRET.files", [".env", "other.env"]),
            "N8N_USER_MANAGEMENT_JWT_SECRET",
            "other.env does not exist",
        ),
    ],
)
def test_a_secret_its_files_cannot_serve_blocks_only_itself(
    stack: Path, inproc: CLI, edit: Edit, secret: str, words: str
) -> None:
    (stack / "other.env").unlink(missing_ok=True)
    with edited_config(stack) as raw:
        edit(raw)
    before = tree(stack)
    named = inproc("rotate", "--secrets", secret)
    assert named.code == 2 and secret in named.err and words in named.err and len(named.err.splitlines()) == 1
    assert tree(stack) == before
    ran = inproc("rotate")  # not named: left alone with one warning line, the others rotate
    assert ran.code == 0, ran.err
    assert f"warning: {secret} is left alone: {words}" in ran.out
    rotated = ran.out.split("Rotated", 1)[1].split("files:", 1)[0]
    assert not re.search(rf"^{secret} ", rotated, re.M) and re.search(r"^DASHBOARD_PASSWORD ", rotated, re.M)


def test_yaml_syntax_error_names_the_file_and_line(stack: Path, inproc: CLI) -> None:
    config = stack / "secrets-config.yaml"
    config.write_text("secrets:\n  JWT_SECRET: [unclosed\n")
    before = tree(stack)
    ran = inproc("rotate")
    assert ran.code == 2
    assert ran.err.strip().count("\n") == 0
    assert str(config) in ran.err and "YAML syntax error" in ran.err and "line" in ran.err
    assert tree(stack) == before


def test_missing_config_flag_file_is_named(stack: Path, inproc: CLI) -> None:
    ran = inproc("rotate", "--config", "nope.yaml")
    assert ran.code == 2 and "nope.yaml" in ran.err and "--config" in ran.err

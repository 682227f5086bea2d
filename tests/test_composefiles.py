"""Who reads what, from compose files on disk: the syntax and the edges a real stack has."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotation.composefiles import read
from rotation.interpolation import compose_variables

from .conftest import CLI, edited_config, tree


@pytest.mark.parametrize(
    ("text", "variables"),
    [
        ("${JWT_JWKS:-${JWT_SECRET}}", {"JWT_JWKS", "JWT_SECRET"}),
        ('${JWT_JWKS:-{"keys":[]}} and $ANON_KEY', {"JWT_JWKS", "ANON_KEY"}),
        ("$$NOT_READ ${A-x} ${B:?needed} ${C:+alt}", {"A", "B", "C"}),
        ("postgres://u:${POSTGRES_PASSWORD}@db:5432/${DB:-postgres}", {"POSTGRES_PASSWORD", "DB"}),
        ("no dollar, $ alone, $1", set()),
    ],
)
def test_variables_follow_composes_interpolation_syntax(text: str, variables: set[str]) -> None:
    assert compose_variables(text) == variables


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_includes_overrides_env_files_and_secrets_are_followed(tmp_path: Path) -> None:
    write(
        tmp_path,
        "compose.yaml",
        "include:\n  - path: [sub/base.yml, sub/extra.yml]\n"
        "services:\n"
        "  web:\n    environment: [TOKEN, 'PLAIN=1']\n    env_file: web.env\n    secrets: [db_pw]\n"
        "  # commented: ${NEVER_READ}\n"
        "secrets:\n  db_pw: {environment: DB_PASSWORD}\n",
    )
    write(tmp_path, "web.env", "FROM_FILE=1\nREF=${INNER}\n")
    base = "services:\n  api:\n    container_name: my-api\n    environment: {KEY: '${API_KEY}'}\n"
    write(tmp_path, "sub/base.yml", base)
    write(tmp_path, "sub/extra.yml", "services:\n  api:\n    environment: {MORE: '${EXTRA}'}\n")
    write(tmp_path, "compose.override.yaml", "services:\n  api:\n    environment: !override {ONLY: '${OVERRIDDEN}'}\n")
    found = read(tmp_path, ())
    assert found.files == ("compose.yaml", "sub/base.yml", "sub/extra.yml", "compose.override.yaml")
    assert found.reads["web"] == {"TOKEN", "FROM_FILE", "REF", "INNER", "DB_PASSWORD"}
    assert found.reads["api"] == {"OVERRIDDEN"}  # !override replaced what the included files gave
    assert found.service("my-api") == "api" and found.service("nope") is None
    assert found.warnings == ()


def test_a_container_name_is_known_as_compose_interpolates_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, ".env", "COMPOSE_PROJECT_NAME=prod\nSUFFIX=from-env-file\n")
    write(
        tmp_path,
        "compose.yaml",
        "services:\n"
        "  gateway:\n    container_name: ${COMPOSE_PROJECT_NAME}-gateway\n"
        "  api:\n    container_name: api-${SUFFIX}\n"
        "  db:\n    container_name: ${DB_NAME:?set it}\n",
    )
    monkeypatch.setenv("SUFFIX", "from-shell")  # the shell's value wins over the .env, as in compose
    containers = read(tmp_path, []).containers
    assert containers == {"prod-gateway": "gateway", "api-from-shell": "api", "${DB_NAME:?set it}": "db"}


def test_files_outside_the_stack_or_unreadable_are_warnings_not_reads(tmp_path: Path) -> None:
    outside = tmp_path / "outside.yml"
    outside.write_text("services:\n  evil:\n    environment: ['${JWT_SECRET}']\n")
    root = tmp_path / "stack"
    write(root, "docker-compose.yml", "include: [../outside.yml, missing.yml]\nservices:\n  ok: {image: x}\n")
    (root / "link.yml").symlink_to(outside)
    write(root, "broken.yml", "services: [unclosed\n")
    found = read(root, ["docker-compose.yml", "link.yml", "broken.yml"])
    assert set(found.reads) == {"ok"}
    assert len(found.warnings) == 4 and all("outside" in w or "missing" in w or "broken" in w for w in found.warnings)


def test_a_yaml_alias_bomb_is_read_in_bounded_time(tmp_path: Path) -> None:
    """2**40 strings once expanded; each shared node is scanned once."""
    lines = ["x-0: &l0 ['${A}', '${A}']"] + [f"x-{i}: &l{i} [*l{i - 1}, *l{i - 1}]" for i in range(1, 41)]
    write(tmp_path, "compose.yaml", "\n".join(lines) + "\nservices:\n  s: {environment: {X: *l40}}\n")
    assert read(tmp_path, ()).reads["s"] == {"A"}


def test_a_rotation_whose_compose_files_cannot_be_read_is_refused_and_changes_nothing(stack: Path, inproc: CLI) -> None:
    """Recreating no one would leave the stack on its old values; the error names the key that fixes it."""
    with edited_config(stack) as raw:
        raw["compose"] = {**(raw.get("compose") or {}), "files": ["compose.prod.yml"]}
    before = tree(stack)
    ran = inproc("rotate", "--secrets", "JWT_SECRET")
    assert ran.code == 2 and ran.err.count("\n") == 1
    assert "compose.prod.yml: no such compose file" in ran.err and "secrets.JWT_SECRET.restart_services" in ran.err
    assert tree(stack) == before


def test_a_compose_file_the_configuration_names_outside_the_stack_is_read_with_its_folder(tmp_path: Path) -> None:
    root, project = tmp_path / "stack", tmp_path / "project"
    write(project, "docker-compose.yml", "services:\n  db: {image: x, env_file: [db.env]}\n")
    write(project, "db.env", "POSTGRES_PASSWORD=x\n")
    found = read(root, [str(project / "docker-compose.yml")])
    assert found.reads["db"] == {"POSTGRES_PASSWORD"} and not found.warnings

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
    assert f"warning: {secret} is left alone: {words}" in ran.err  # beside the result, not in it
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


def _leaves(node: object, at: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Every key path of a parsed YAML document: mapping keys and list indexes."""
    inner = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    return [path for key, value in inner for path in [(*at, key), *_leaves(value, (*at, key))]]


HOSTILE = [None, "", 0, -1, True, 3.5, [], ["../x"], {}, {"a\nb": 1}, "/etc/passwd", "x" * 300, "a\nb\x1b[2J"]


def test_any_value_anywhere_in_the_bundled_config_is_accepted_or_one_config_error() -> None:
    """Every setting of the bundled file, replaced by each hostile value in turn: the schema either
    accepts it or raises a ConfigError that names a key path on one line, never another exception."""
    import copy

    import yaml

    from rotation.config.schema import build

    bundled = yaml.safe_load((REPO / "secrets-config.yaml").read_text())
    bundled["secrets"]["DB_TLS"] = {  # a certificate too, with every kind of setting it takes
        **{"type": "tls-certificate", "cert": "certs/db.crt", "key": "certs/db.key", "common_name": "db"},
        **{"ca": {"cert": "certs/ca.crt", "key": "certs/ca.key"}, "sans": ["db", "127.0.0.1"], "days": 90},
        "reload": [{"postgres": {"host": "localhost", "port": 5432}}, {"signal": {"service": "db", "tls": "db:5432"}}],
    }
    bundled["stores"] = [{"vault": {"address": "http://bao:8200", "path": "stack", "auth": {"method": "token"}}}]
    for path in _leaves(bundled):
        for value in HOSTILE:
            raw = copy.deepcopy(bundled)
            node = raw
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            try:
                build(Path("secrets-config.yaml"), raw)
            except ConfigError as exc:
                assert exc.key and "\n" not in str(exc) and "\x1b" not in str(exc), (path, value, str(exc))


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (_set("secrets.JWT_SECRET.lenght", 40), "secrets.JWT_SECRET.lenght", "did you mean 'length'"),
        (_set("backup.retention", 3), "backup.retention", "did you mean 'retention_days'"),
        (_set("compose", {"projct": "x"}), "compose.projct", "did you mean 'project'"),
        (_set("notify", [{"url": "https://x.example", "name": "a"}]), "notify[0].name", "known: url"),
        (_set("stores", [{"bao": {}}]), "stores[0].bao", "known: vault"),
        (_set("verify", [{"http": {"url": "http://x", "exepct": 200}}]), "verify[0].http.exepct", "'expect'"),
        (
            _set("secrets.N8N_ENCRYPTION_KEY.encrypts_data", None),
            "secrets.N8N_ENCRYPTION_KEY.encrypts_data",
            "no value",
        ),
        (_set("secrets.JWT_SECRET.description", ["a", "list"]), "secrets.JWT_SECRET.description", "a single value"),
    ],
)
def test_unknown_keys_get_the_closest_known_one_and_null_never_means_the_default(
    stack: Path, inproc: CLI, edit: Edit, key: str, words: str
) -> None:
    """A typo anywhere says what was meant; `encrypts_data:` left empty is not taken as false, which
    would let a key that encrypts data be rotated without --accept-data-loss."""
    with edited_config(stack) as raw:
        edit(raw)
    ran = inproc("rotate", "--dry-run", "--json")
    error = __import__("json").loads(ran.out)
    assert ran.code == 2 and error["key"] == key and words in error["error"], error

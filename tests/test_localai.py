"""The local AI stack as it ships (tests/fixtures/local-ai-packaged, copied from upstream)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from rotation import composefiles, envfile
from rotation.config import check_stack, load
from rotation.plan import make_plan

from . import composeref, pgserver
from .conftest import CLI, REPO, edited_config, stack_password, tree

FIXTURE = REPO / "tests" / "fixtures" / "local-ai-packaged"
BUNDLED = REPO / "secrets-config.yaml"
FILES = (".env", "supabase/docker/.env")
COMPOSE = [FIXTURE / "docker-compose.yml", FIXTURE / "docker-compose.override.private.yml"]

# The secrets of Supabase's docker/.env.example (plus REALTIME_DB_ENC_KEY from its newer
# utils/generate-keys.sh) and of local-ai-packaged's .env.example: every one is configured.
UPSTREAM_SECRETS = {
    "POSTGRES_PASSWORD", "JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY", "DASHBOARD_USERNAME", "DASHBOARD_PASSWORD",
    "SECRET_KEY_BASE", "VAULT_ENC_KEY", "PG_META_CRYPTO_KEY", "LOGFLARE_PUBLIC_ACCESS_TOKEN",
    "LOGFLARE_PRIVATE_ACCESS_TOKEN", "S3_PROTOCOL_ACCESS_KEY_ID", "S3_PROTOCOL_ACCESS_KEY_SECRET", "OPENAI_API_KEY",
    "SMTP_PASS", "MINIO_ROOT_PASSWORD", "REALTIME_DB_ENC_KEY",
    "N8N_ENCRYPTION_KEY", "N8N_USER_MANAGEMENT_JWT_SECRET", "NEO4J_AUTH", "CLICKHOUSE_PASSWORD", "LANGFUSE_SALT",
    "NEXTAUTH_SECRET", "ENCRYPTION_KEY", "JWT_AUTH_TOKEN_SECRET",
}  # fmt: skip
ENCRYPTING = {"N8N_ENCRYPTION_KEY", "VAULT_ENC_KEY", "REALTIME_DB_ENC_KEY", "ENCRYPTION_KEY", "LANGFUSE_SALT"}


def bundled() -> dict:
    return yaml.safe_load(BUNDLED.read_text())["secrets"]


def test_every_upstream_secret_is_configured_and_encrypting_keys_are_marked() -> None:
    secrets = bundled()
    assert set(secrets) >= UPSTREAM_SECRETS
    for name in ENCRYPTING:
        assert secrets[name].get("encrypts_data") is True and secrets[name].get("auto_rotate") is False, name
    assert secrets["VAULT_ENC_KEY"]["length"] == 32 and secrets["REALTIME_DB_ENC_KEY"]["length"] == 16
    assert secrets["REALTIME_DB_ENC_KEY"]["alphabet"] == "hex"
    for name, spec in secrets.items():
        assert spec.get("description"), name


UPSTREAM_V08 = REPO / "tests" / "fixtures" / "supabase-v0.8.2"
LAYOUTS = ("pre-v0.8", "v0.8.2", "v0.8.2-kong", "v0.8.2-opted-in")


def layout(root: Path, name: str) -> tuple[Path, list[Path]]:
    """local-ai-packaged around the Supabase `name` ships, as start_services.py leaves it (the root
    .env copied over Supabase's), without a configuration of its own; and the compose files compose
    reads for it, with which tests/composeref.py recomputes who reads what."""
    shutil.copytree(FIXTURE, root)
    (root / "README.md").unlink()
    if name.startswith("v0.8.2"):
        shutil.rmtree(root / "supabase/docker")
        shutil.copytree(UPSTREAM_V08 / "docker", root / "supabase/docker")
        shutil.copy(root / ".env", root / "supabase/docker/.env")
    compose = root / "docker-compose.yml"
    if name == "v0.8.2-kong":  # the Kong override, included with the file it overrides
        text = compose.read_text().replace(
            "  - ./supabase/docker/docker-compose.yml",
            "  - path: [./supabase/docker/docker-compose.yml, ./supabase/docker/docker-compose.kong.yml]",
        )
        assert text != compose.read_text()
        compose.write_text(text)
    if name == "v0.8.2-opted-in":  # the sed of utils/add-new-auth-keys.sh, and the keys it appends
        upstream = root / "supabase/docker/docker-compose.yml"
        upstream.write_text(
            re.sub(r"(?m)^( *)#(GOTRUE_JWT_KEYS|API_JWT_JWKS|JWT_JWKS|SUPABASE_JWKS):", r"\1\2:", upstream.read_text())
        )
        from .test_supabase_v08 import add_new_auth_keys

        add_new_auth_keys(root)
    return root, [compose, root / "docker-compose.override.private.yml"]


def test_the_upstream_fixtures_are_the_release_byte_for_byte() -> None:
    inventory = {}
    for line in (UPSTREAM_V08 / "v0.8.2-inventory.tsv").read_text().splitlines():
        path, _size, _blob, sha256 = line.split("\t")[:4]
        inventory[path] = sha256
    copied = [p for p in (UPSTREAM_V08 / "docker").rglob("*") if p.is_file()]
    assert len(copied) == 9
    for copy in copied:
        name = str(copy.relative_to(UPSTREAM_V08))
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == inventory[name], name


@pytest.mark.parametrize("name", LAYOUTS)
def test_services_are_derived_from_the_files_compose_reads(name: str, tmp_path: Path) -> None:
    """Every layout's readers, recomputed by an independent reading of the same files."""
    root, compose = layout(tmp_path / "localai", name)
    derived = composefiles.read(root, [p.name for p in compose])
    expected = composeref.readers(compose)
    for variable in {*expected, *bundled()}:
        assert set(derived.of(variable)) == expected.get(variable, set()), (name, variable)
    assert derived.warnings == ()


@pytest.mark.parametrize("name", LAYOUTS)
def test_every_plan_names_only_services_the_stack_has_and_says_why(name: str, tmp_path: Path, inproc: CLI) -> None:
    root, compose = layout(tmp_path / "localai", name)
    services = set(composeref.services(compose))
    readers = composeref.readers(compose)
    everything = json.loads(inproc("rotate", "--dry-run", "--json", cwd=root).out)
    jwt = json.loads(inproc("rotate", "--dry-run", "--json", "--secrets", "JWT_SECRET", cwd=root).out)
    for plan in (everything, jwt):
        assert plan["affected_services"] and set(plan["affected_services"]) <= services, name
        assert set(plan["affected_by"]) == set(plan["affected_services"])
        for service, variables in plan["affected_by"].items():  # each service is named with what it reads
            assert variables and all(service in readers[v] for v in variables), (service, variables)
    gateway = "kong" if name == "pre-v0.8" else "api-gw"
    assert gateway in jwt["affected_services"] and "db" not in jwt["affected_services"], jwt["affected_services"]
    assert jwt["affected_by"][gateway] == ["ANON_KEY", "SERVICE_ROLE_KEY"]
    rotated = set(jwt["rotated_secrets"])
    wanted = {s for v in rotated for s in readers.get(v, set())} - {"db"}
    assert set(jwt["affected_services"]) == wanted
    if name == "v0.8.2-opted-in":  # the key sets follow JWT_SECRET, and so do their readers
        assert {"JWT_KEYS", "JWT_JWKS"} <= rotated
        assert jwt["affected_by"]["auth"] == ["JWT_KEYS", "JWT_SECRET"]
        assert {"realtime", "storage", "functions"} <= {s for s, v in jwt["affected_by"].items() if "JWT_JWKS" in v}
    text = inproc("rotate", "--dry-run", "--secrets", "JWT_SECRET", cwd=root).out
    line = rf"(?m)^(services:)? +{re.escape(gateway)} +stop-late +reads ANON_KEY, SERVICE_ROLE_KEY$"
    assert re.search(line, text), text


def test_langfuse_shares_the_database_password_and_is_restarted_with_it(tmp_path: Path) -> None:
    root, _ = layout(tmp_path / "localai", "pre-v0.8")
    config = load(BUNDLED)
    plan = make_plan(config, check_stack(config, root), ["POSTGRES_PASSWORD"], readers=composefiles.read(root, ()))
    assert {"postgres", "langfuse-web", "langfuse-worker", "n8n", "db"} <= set(plan.services)
    spec = bundled()["POSTGRES_PASSWORD"]
    targets = [t["postgres"] for t in spec["apply"]]
    assert [t.get("container") for t in targets] == ["db", "postgres"]
    supabase = targets[0]
    assert supabase["dbname"] == "_supabase" and supabase["user"] == "supabase_admin"
    assert (
        set(supabase["roles"]) == set(pgserver.DB_PASSWD_ROLES) and "supabase_read_only_user" not in supabase["roles"]
    )


def test_a_stack_whose_key_sets_are_still_empty_rotates_jwt_secret_and_leaves_them(tmp_path: Path, inproc: CLI) -> None:
    """Supabase's .env.example ships `JWT_KEYS=` and `JWT_JWKS=` empty until add-new-auth-keys.sh runs."""
    root, _ = layout(tmp_path / "localai", "v0.8.2")
    for name in FILES:
        with (root / name).open("a") as env:
            env.write("JWT_KEYS=\nJWT_JWKS=\n")
    ran = inproc("rotate", "--secrets", "JWT_SECRET", cwd=root)
    assert ran.code == 0, ran.text
    after = envfile.read(root / ".env")
    assert after.get("JWT_KEYS") == "" and after.get("JWT_JWKS") == ""
    assert "JWT_KEYS" not in ran.out.split("files:")[0]


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """The stack as a user has it after start_services.py, with no configuration of its own."""
    root = tmp_path / "localai"
    shutil.copytree(FIXTURE, root)
    (root / "README.md").unlink()
    return root


def test_the_shipped_env_rotates_jwt_secret_with_a_warning_about_what_it_lacks(shipped: Path, inproc: CLI) -> None:
    original = {name: (shipped / name).read_bytes() for name in FILES}
    ran = inproc("rotate", "--secrets", "JWT_SECRET", cwd=shipped)
    assert ran.code == 0, ran.err
    assert "using the bundled configuration for the local AI stack" in ran.err
    assert "warning: PG_META_CRYPTO_KEY is left alone: .env does not contain it" in ran.err
    old = envfile.from_bytes(original[".env"])
    for name in FILES:
        new = envfile.read(shipped / name)
        changed = (shipped / name).read_bytes()
        for key in ("JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY"):
            assert new.get(key) != old.get(key)
            changed = changed.replace((new.get(key) or "").encode(), (old.get(key) or "").encode())
        assert changed == original[name], f"{name}: a byte outside the rotated values changed"
    ran = inproc("restore", "--latest", cwd=shipped)
    assert ran.code == 0, ran.err
    assert {name: (shipped / name).read_bytes() for name in FILES} == original


def test_naming_a_secret_the_shipped_env_lacks_is_an_error(shipped: Path, inproc: CLI) -> None:
    before = tree(shipped)
    ran = inproc("rotate", "--secrets", "PG_META_CRYPTO_KEY", cwd=shipped)
    assert ran.code == 2 and "PG_META_CRYPTO_KEY cannot be rotated in this stack: .env does not contain it" in ran.err
    assert tree(shipped) == before


def test_every_auto_secret_of_the_shipped_env_rotates(shipped: Path, inproc: CLI) -> None:
    ran = inproc("rotate", cwd=shipped)
    assert ran.code == 0, ran.err
    after = envfile.read(shipped / ".env")
    before = envfile.read(FIXTURE / ".env")
    for name in ("JWT_SECRET", "DASHBOARD_PASSWORD", "N8N_USER_MANAGEMENT_JWT_SECRET", "CLICKHOUSE_PASSWORD"):
        assert after.get(name) != before.get(name), name
    for name in ("N8N_ENCRYPTION_KEY", "ENCRYPTION_KEY", "POSTGRES_PASSWORD", "NEO4J_AUTH"):
        assert after.get(name) == before.get(name), name
    assert (shipped / ".env").read_bytes() == (shipped / "supabase/docker/.env").read_bytes()


def _analytics_url(server: pgserver.Server) -> str:
    with psycopg.connect(
        host=server.host, port=server.port, dbname="_supabase", user=pgserver.ADMIN, password=pgserver.ADMIN_PASSWORD
    ) as conn:
        rows: dict[str, Any] = dict(conn.execute("SELECT type, config FROM _analytics.source_backends").fetchall())
    assert rows["bigquery"] == {"project": "p"}  # other backends are left alone
    return str(rows["postgres"]["url"])


def _schemas(server: pgserver.Server, dbname: str) -> dict[str, str]:
    with psycopg.connect(
        host=server.host, port=server.port, dbname=dbname, user=pgserver.ADMIN, password=pgserver.ADMIN_PASSWORD
    ) as conn:
        rows = conn.execute(
            "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = '_supavisor'"
        ).fetchall()
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = '_supavisor'").fetchone()
    return {**dict(rows), "tables": str(tables[0] if tables else 0)}


@pytest.mark.postgres
def test_postgres_password_follows_db_passwd_sh_in_the_supabase_database(
    stack: Path, pg_server: pgserver.Server, inproc: CLI
) -> None:
    """The bundled target's roles and statements, run against a database laid out as Supabase's."""
    old = stack_password(stack)
    pgserver.supabase_layout(pg_server, old)
    env = stack / ".env"
    env.write_bytes(env.read_bytes() + f"TEST_DB_PORT={pg_server.port}\n".encode())
    with edited_config(stack) as raw:
        target = bundled()["POSTGRES_PASSWORD"]["apply"][0]["postgres"]
        del target["container"]
        raw["secrets"]["POSTGRES_PASSWORD"]["apply"] = [
            {"postgres": {**target, "host": pg_server.host, "port": "${TEST_DB_PORT}"}}
        ]
    ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD")
    assert ran.code == 0, ran.text
    new = stack_password(stack)
    assert new != old and new not in ran.text
    for role, attributes in pgserver.DB_PASSWD_ROLES.items():
        if "NOLOGIN" not in attributes:
            assert pg_server.logs_in(role, new), role
            assert not pg_server.logs_in(role, old), role
    with pg_server.connect() as conn:
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'supabase_read_only_user'").fetchone()
        assert stored == (None,)  # db-passwd.sh: "this role is not supposed to have a password"
        for role in ("anon", "authenticated", "service_role", "dashboard_user"):  # NOLOGIN, altered all the same
            verifier = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role]).fetchone()[0]  # type: ignore[index]
            from rotation.targets import scram

            assert scram.matches(verifier, new), role
    assert _schemas(pg_server, "_supabase") == {"_supavisor": "supabase_admin", "tables": "0"}  # reset, in _supabase
    assert _schemas(pg_server, "postgres") == {"tables": "0"}  # no stray schema in postgres
    assert _analytics_url(pg_server) == pgserver.ANALYTICS_URL.format(new)
    metadata = next((stack / "backups/secrets").glob("*/metadata.json")).read_text()
    assert new not in metadata and "${password}" in metadata
    ran = inproc("restore", "--latest")
    assert ran.code == 0, ran.text
    assert _analytics_url(pg_server) == pgserver.ANALYTICS_URL.format(old)
    assert pg_server.logs_in("supabase_admin", old)
    assert json.loads(inproc("restore", "--list", "--json").out)[0]["kind"] == "pre-restore"


def test_a_plan_says_which_applications_keep_a_copy_of_what_it_changes(stack: Path, inproc: CLI) -> None:
    """n8n keeps the database password and the service role key in its own credentials: verify cannot see them."""
    ran = inproc("rotate", "--dry-run", "--secrets", "JWT_SECRET", "--json")
    warnings = json.loads(ran.out)["warnings"]
    assert any("SERVICE_ROLE_KEY is also copied into n8n credentials of type Supabase API" in w for w in warnings)
    assert not any("POSTGRES_PASSWORD" in w for w in warnings)

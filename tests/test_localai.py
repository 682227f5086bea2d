"""The local AI stack as it ships (tests/fixtures/local-ai-packaged, copied from upstream)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from rotation import envfile

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


def test_restart_services_are_exactly_the_compose_services_that_read_each_secret() -> None:
    """Recomputed from the real compose files, so the bundled configuration cannot drift from them."""
    readers = composeref.readers(COMPOSE)
    by_container = composeref.container_names(COMPOSE)
    shipped = envfile.read(FIXTURE / ".env")
    for name, spec in bundled().items():
        configured = {by_container.get(s, s) for s in spec.get("restart_services") or []}
        reading = readers.get(name, set())
        if not reading and shipped.count(name) == 0:
            continue  # newer than these files (REALTIME_DB_ENC_KEY): nothing here to compare with
        assert configured == reading, f"{name}: configured {sorted(configured)}, compose reads it in {sorted(reading)}"


def test_langfuse_shares_the_database_password_and_is_restarted_with_it() -> None:
    spec = bundled()["POSTGRES_PASSWORD"]
    assert {"postgres", "langfuse-web", "langfuse-worker", "n8n"} <= set(spec["restart_services"])
    targets = [t["postgres"] for t in spec["apply"]]
    assert [t.get("container") for t in targets] == ["db", "postgres"]
    supabase = targets[0]
    assert supabase["dbname"] == "_supabase" and supabase["user"] == "supabase_admin"
    assert (
        set(supabase["roles"]) == set(pgserver.DB_PASSWD_ROLES) and "supabase_read_only_user" not in supabase["roles"]
    )


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """The stack as a user has it after start_services.py, with no configuration of its own."""
    root = tmp_path / "localai"
    shutil.copytree(FIXTURE, root)
    (root / "README.md").unlink()
    return root


def test_the_shipped_env_rotates_jwt_secret_with_a_warning_about_what_it_lacks(shipped: Path, cli: CLI) -> None:
    original = {name: (shipped / name).read_bytes() for name in FILES}
    ran = cli("rotate", "--secrets", "JWT_SECRET", cwd=shipped)
    assert ran.code == 0, ran.err
    assert "using the bundled configuration for the local AI stack" in ran.err
    assert "warning: PG_META_CRYPTO_KEY is left alone: .env does not contain it" in ran.out
    old = envfile.from_bytes(original[".env"])
    for name in FILES:
        new = envfile.read(shipped / name)
        changed = (shipped / name).read_bytes()
        for key in ("JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY"):
            assert new.get(key) != old.get(key)
            changed = changed.replace((new.get(key) or "").encode(), (old.get(key) or "").encode())
        assert changed == original[name], f"{name}: a byte outside the rotated values changed"
    ran = cli("restore", "--latest", cwd=shipped)
    assert ran.code == 0, ran.err
    assert {name: (shipped / name).read_bytes() for name in FILES} == original


def test_naming_a_secret_the_shipped_env_lacks_is_an_error(shipped: Path, cli: CLI) -> None:
    before = tree(shipped)
    ran = cli("rotate", "--secrets", "PG_META_CRYPTO_KEY", cwd=shipped)
    assert ran.code == 2 and "PG_META_CRYPTO_KEY cannot be rotated in this stack: .env does not contain it" in ran.err
    assert tree(shipped) == before


def test_every_auto_secret_of_the_shipped_env_rotates(shipped: Path, cli: CLI) -> None:
    ran = cli("rotate", cwd=shipped)
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
    stack: Path, pg_server: pgserver.Server, cli: CLI
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
    ran = cli("rotate", "--secrets", "POSTGRES_PASSWORD")
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
    ran = cli("restore", "--latest")
    assert ran.code == 0, ran.text
    assert _analytics_url(pg_server) == pgserver.ANALYTICS_URL.format(old)
    assert pg_server.logs_in("supabase_admin", old)
    assert json.loads(cli("restore", "--list", "--json").out)[0]["kind"] == "pre-restore"

"""A real PostgreSQL for the tests: `initdb -A scram-sha-256`, so every password is really checked."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ADMIN = "fixture_admin"
ADMIN_PASSWORD = "fixture-admin-password-not-rotated"
# The Supabase role set of STACK.md, with the attributes Supabase gives them.
SUPABASE_ROLES = {
    "postgres": "SUPERUSER LOGIN",
    "supabase_admin": "SUPERUSER LOGIN CREATEROLE",
    "authenticator": "LOGIN NOINHERIT",
    "pgbouncer": "LOGIN",
    "supabase_auth_admin": "LOGIN CREATEROLE",
    "supabase_storage_admin": "LOGIN CREATEROLE",
    "supabase_functions_admin": "LOGIN CREATEROLE",
    "supabase_replication_admin": "LOGIN REPLICATION",
    "supabase_read_only_user": "LOGIN",
    "dashboard_user": "NOLOGIN CREATEROLE",
}
BLOCKED = "blocked_login"  # pg_hba rejects it: its login check always fails


def binaries() -> Path | None:
    """The newest PostgreSQL server binaries on this machine, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Server:
    """A running test server."""

    host: str
    port: int
    socket_dir: Path

    def connect(self, user: str = ADMIN, password: str = ADMIN_PASSWORD, **kw: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.host, port=self.port, dbname="postgres", user=user, password=password, autocommit=True, **kw
        )

    def logs_in(self, user: str, password: str) -> bool:
        try:
            with self.connect(user, password, connect_timeout=5):
                return True
        except psycopg.OperationalError:
            return False

    def reset(self, password: str, roles: dict[str, str] = SUPABASE_ROLES) -> None:
        """Give every Supabase role `password`, and recreate `_supavisor` with a marker table."""
        with self.connect() as conn:
            for role, attributes in {**roles, BLOCKED: "LOGIN"}.items():
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
                verb = "ALTER" if exists else "CREATE"
                conn.execute(
                    sql.SQL(f"{verb} ROLE {{}} WITH {attributes} PASSWORD {{}}").format(
                        sql.Identifier(role), sql.Literal(password)
                    )
                )
            conn.execute("DROP SCHEMA IF EXISTS _supavisor CASCADE")
            conn.execute("CREATE SCHEMA _supavisor")
            conn.execute("CREATE TABLE _supavisor.tenants (stored_password text)")


# The roles Supabase's docker/utils/db-passwd.sh alters, with the attributes Supabase gives them.
DB_PASSWD_ROLES = {
    "anon": "NOLOGIN",
    "authenticated": "NOLOGIN",
    "authenticator": "LOGIN NOINHERIT",
    "dashboard_user": "NOLOGIN CREATEROLE",
    "pgbouncer": "LOGIN",
    "postgres": "SUPERUSER LOGIN",
    "service_role": "NOLOGIN",
    "supabase_admin": "SUPERUSER LOGIN CREATEROLE",
    "supabase_auth_admin": "LOGIN CREATEROLE",
    "supabase_functions_admin": "LOGIN CREATEROLE",
    "supabase_replication_admin": "LOGIN REPLICATION",
    "supabase_storage_admin": "LOGIN CREATEROLE",
}
ANALYTICS_URL = "postgresql://supabase_admin:{}@db:5432/postgres"


def supabase_layout(server: Server, password: str) -> None:
    """Supabase's database as its image sets it up: the db-passwd.sh roles on `password`,
    supabase_read_only_user with no password, and a `_supabase` database holding the pooler's
    `_supavisor` schema and Logflare's `_analytics.source_backends` (volumes/db/pooler.sql, logs.sql)."""
    server.reset(password, {**DB_PASSWD_ROLES, "supabase_read_only_user": "LOGIN"})
    with server.connect() as conn:
        conn.execute("ALTER ROLE supabase_read_only_user PASSWORD NULL")
        conn.execute("DROP SCHEMA IF EXISTS _supavisor CASCADE")  # not in `postgres`: only in _supabase
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = '_supabase'").fetchone():
            conn.execute("CREATE DATABASE _supabase OWNER supabase_admin")
    with psycopg.connect(
        host=server.host, port=server.port, dbname="_supabase", user=ADMIN, password=ADMIN_PASSWORD, autocommit=True
    ) as conn:
        conn.execute("DROP SCHEMA IF EXISTS _supavisor CASCADE")
        conn.execute("CREATE SCHEMA _supavisor")
        conn.execute("CREATE TABLE _supavisor.tenants (stored_password text)")
        conn.execute("DROP SCHEMA IF EXISTS _analytics CASCADE")
        conn.execute("CREATE SCHEMA _analytics")
        conn.execute("CREATE TABLE _analytics.source_backends (id int, type text, config jsonb)")
        conn.execute(
            "INSERT INTO _analytics.source_backends VALUES (1, 'postgres', jsonb_build_object('url', %s::text)),"
            " (2, 'bigquery', '{\"project\": \"p\"}')",
            [ANALYTICS_URL.format(password)],
        )


def _as_postgres() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam("postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid}


@contextmanager
def running(settings: Mapping[str, str] | None = None) -> Iterator[Server]:
    """Start a throwaway cluster on a free loopback port, with `settings` (ssl, ssl_cert_file...)
    given on its command line; stop and delete it afterwards."""
    bindir = binaries()
    assert bindir is not None
    base = Path(tempfile.mkdtemp(prefix="rotation-pg-"))
    owner = _as_postgres()
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    pwfile = base / "pw"
    pwfile.write_text(ADMIN_PASSWORD + "\n")
    if owner:
        for path in (base, sockets, pwfile):
            os.chown(path, owner["user"], owner["group"])
    port = _free_port()
    try:
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-A", "scram-sha-256", "-U", ADMIN, f"--pwfile={pwfile}"],
            check=True,
            capture_output=True,
            **owner,
        )
        with (data / "pg_hba.conf").open("r+") as hba:
            rules = hba.read()
            hba.seek(0)
            hba.write(f"host all {BLOCKED} 127.0.0.1/32 reject\n" + rules)
        subprocess.run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-l",
                str(base / "log"),
                "-o",
                f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
                + "".join(f" -c {name}={value}" for name, value in (settings or {}).items()),
                "start",
            ],
            check=True,
            capture_output=True,
            **owner,
        )
        yield Server("127.0.0.1", port, sockets)
    finally:
        subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            **owner,
        )
        shutil.rmtree(base, ignore_errors=True)

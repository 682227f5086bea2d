"""POSTGRES_PASSWORD against a real, scram-auth PostgreSQL: database first, proven, then files."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from docker import DockerClient

from rotation import envfile

from . import crashpoints, enginestack, pgserver
from .conftest import CLI, PG_ROLES, configure_postgres, edited_config, stack_password, tree

pytestmark = pytest.mark.postgres
LOGIN_ROLES = [r for r in PG_ROLES if r != "dashboard_user"]
FILES = (".env", "supabase/docker/.env")


def assert_on(server: pgserver.Server, password: str, roles: list[str] = LOGIN_ROLES) -> None:
    failing = [role for role in roles if not server.logs_in(role, password)]
    assert not failing, f"cannot log in with the expected password: {failing}"


def assert_not_on(server: pgserver.Server, password: str) -> None:
    working = [role for role in LOGIN_ROLES if server.logs_in(role, password)]
    assert not working, f"still log in with the old password: {working}"


def test_rotation_changes_the_database_first_then_every_file(
    pg_stack: Path, pg_server: pgserver.Server, inproc: CLI
) -> None:
    old = stack_password(pg_stack)
    with pg_server.connect() as conn:
        conn.execute("INSERT INTO _supavisor.tenants VALUES ('stale')")
    ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD")
    assert ran.code == 0, ran.err
    new = stack_password(pg_stack)
    assert new != old and stack_password(pg_stack, "supabase/docker/.env") == new
    assert len(new) == 32 and set(new) <= set("0123456789abcdef")
    assert_on(pg_server, new)
    assert_not_on(pg_server, old)
    assert old not in ran.text and new not in ran.text
    with pg_server.connect() as conn:  # the pooler's stored credentials were reset
        assert conn.execute("SELECT to_regclass('_supavisor.tenants')").fetchone() == (None,)
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = '_supavisor'").fetchone() == (1,)
    meta = json.loads(next((pg_stack / "backups/secrets").glob("secrets-backup-*/metadata.json")).read_text())
    assert meta["database"][0]["secret"] == "POSTGRES_PASSWORD"
    assert meta["database"][0]["endpoint"]["port"] == str(pg_server.port)


def test_restore_latest_puts_the_old_password_back_in_database_and_files(
    pg_stack: Path, pg_server: pgserver.Server, inproc: CLI
) -> None:
    before = {name: (pg_stack / name).read_bytes() for name in FILES}
    old = stack_password(pg_stack)
    assert inproc("rotate", "--secrets", "POSTGRES_PASSWORD").code == 0
    new = stack_password(pg_stack)
    ran = inproc("restore", "--latest")
    assert ran.code == 0, ran.err
    assert {name: (pg_stack / name).read_bytes() for name in FILES} == before
    assert_on(pg_server, old)
    assert_not_on(pg_server, new)
    # And the restore itself can be undone, database included.
    undo = json.loads(inproc("restore", "--list", "--json").out)[0]["id"]
    assert inproc("restore", "--backup", undo).code == 0
    assert_on(pg_server, new)


def _failing(stack: Path, inproc: CLI, words: str) -> None:
    before = tree(stack)
    ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD")
    assert ran.code != 0
    assert words in ran.err.strip().splitlines()[-1], ran.err
    assert "Traceback" not in ran.text
    after = tree(stack)
    for name in FILES:
        assert after[name] == before[name], f"{name} changed by a failed rotation"


def test_unknown_role_changes_nothing_anywhere(pg_stack: Path, pg_server: pgserver.Server, inproc: CLI) -> None:
    with edited_config(pg_stack) as raw:
        raw["secrets"]["POSTGRES_PASSWORD"]["apply"][0]["postgres"]["roles"].append("no_such_role")
    _failing(pg_stack, inproc, "no_such_role not found")
    assert_on(pg_server, stack_password(pg_stack))


def test_database_down_changes_nothing(stack: Path, pg_server: pgserver.Server, inproc: CLI) -> None:
    pg_server.reset(stack_password(stack))
    configure_postgres(stack, pgserver.Server("127.0.0.1", 1, Path("/nonexistent")))
    _failing(stack, inproc, "Nothing was changed")


def test_wrong_current_password_changes_nothing(pg_stack: Path, pg_server: pgserver.Server, inproc: CLI) -> None:
    pg_server.reset("not-the-password-in-the-files")
    _failing(pg_stack, inproc, "password authentication failed")
    assert_on(pg_server, "not-the-password-in-the-files")


def test_failed_login_check_puts_the_old_password_back(pg_stack: Path, pg_server: pgserver.Server, inproc: CLI) -> None:
    with edited_config(pg_stack) as raw:
        raw["secrets"]["POSTGRES_PASSWORD"]["apply"][0]["postgres"]["roles"].append(pgserver.BLOCKED)
    _failing(pg_stack, inproc, f"login as {pgserver.BLOCKED} with the new password failed")
    assert_on(pg_server, stack_password(pg_stack))


def test_dry_run_checks_the_database_and_changes_nothing(
    pg_stack: Path, pg_server: pgserver.Server, inproc: CLI
) -> None:
    before = tree(pg_stack)
    ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD", "--dry-run")
    assert ran.code == 0, ran.err
    assert f"postgres 127.0.0.1:{pg_server.port}/postgres: can alter {len(PG_ROLES)} roles" in ran.out
    assert tree(pg_stack) == before
    assert_on(pg_server, stack_password(pg_stack))
    pg_server.reset("something-else")
    ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD", "--dry-run")
    assert ran.code != 0 and "cannot log in with the current password as supabase_admin" in ran.err


def _two_targets(stack: Path, one: pgserver.Server, two: pgserver.Server, second_roles: list[str]) -> None:
    password = stack_password(stack)
    one.reset(password)
    two.reset(password)
    first = {"host": one.host, "port": str(one.port), "user": "postgres", "roles": PG_ROLES}
    second = {"host": two.host, "port": str(two.port), "user": "postgres", "roles": second_roles}
    configure_postgres(stack, one, [{"postgres": first}, {"postgres": second}])


def test_second_database_failing_reverts_the_first(
    stack: Path, pg_server: pgserver.Server, pg_server2: pgserver.Server, inproc: CLI
) -> None:
    _two_targets(stack, pg_server, pg_server2, ["postgres", "missing_langfuse_role"])
    _failing(stack, inproc, "missing_langfuse_role not found")
    assert_on(pg_server, stack_password(stack))
    assert_on(pg_server2, stack_password(stack), ["postgres"])


def test_two_databases_on_one_password_both_follow(
    stack: Path, pg_server: pgserver.Server, pg_server2: pgserver.Server, inproc: CLI
) -> None:
    old = stack_password(stack)
    _two_targets(stack, pg_server, pg_server2, ["postgres"])
    ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD")
    assert ran.code == 0, ran.err
    assert_on(pg_server, stack_password(stack))
    assert_on(pg_server2, stack_password(stack), ["postgres"])
    assert not pg_server2.logs_in("postgres", old)


# The child rotates POSTGRES_PASSWORD and SIGKILLs itself at one point after the database commit.
# Kill points of a POSTGRES_PASSWORD commit (crashpoints): after the journal and two staged
# copies, the database change is step 3; then the two files.
POINTS = {"before-login-check": 3, "before-files": 4, "between-files": 5}


@pytest.mark.parametrize("point", ["before-login-check", "before-files", "between-files"])
def test_kill_after_the_commit_is_reverted_by_the_next_command(
    pg_stack: Path, pg_server: pgserver.Server, inproc: CLI, point: str
) -> None:
    old = stack_password(pg_stack)
    before = {name: (pg_stack / name).read_bytes() for name in FILES}
    child = crashpoints.run(pg_stack, POINTS[point], "rotate", "POSTGRES_PASSWORD")
    assert child.returncode == -9, child.stderr
    assert not pg_server.logs_in("postgres", old), "the kill came before the commit"
    ran = inproc("restore", "--list")
    assert ran.code == 0, ran.err
    assert "recovered an interrupted run" in ran.err and "password in postgres" in ran.err
    assert {name: (pg_stack / name).read_bytes() for name in FILES} == before
    assert_on(pg_server, old)
    assert envfile.read(pg_stack / ".env").get("POSTGRES_PASSWORD") == old


@contextmanager
def in_container(stack: Path, server: pgserver.Server, client: DockerClient, tmp_path: Path) -> Iterator[str]:
    """Point POSTGRES_PASSWORD's apply at a db container whose psql reaches the test server's socket; its project."""
    bindir = pgserver.binaries()
    assert bindir is not None
    with enginestack.psql_container(tmp_path, client, server.socket_dir, bindir) as (root, project):
        with edited_config(stack) as raw:
            raw["compose"] = {"project": project, "files": [str(root / "docker-compose.yml")]}
            target = raw["secrets"]["POSTGRES_PASSWORD"]["apply"][0]["postgres"]
            del target["host"]  # the port stays: psql finds the server's socket by it
            target["container"] = f"{project}-db"  # by container_name, as Supabase configs do
        yield project


@pytest.mark.engine
def test_a_container_mode_dry_run_builds_one_engine(
    pg_stack: Path,
    pg_server: pgserver.Server,
    docker_client: DockerClient,
    inproc: CLI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each engine runs `compose config` and inspects every container: a task builds one and shares it."""
    from rotation.engines.compose import ComposeEngine

    built: list[object] = []
    original = ComposeEngine.__init__

    def counted(self: ComposeEngine, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ComposeEngine, "__init__", counted)
    with in_container(pg_stack, pg_server, docker_client, tmp_path):
        ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD", "--dry-run")
        assert ran.code == 0 and "can alter" in ran.out, ran.text
    assert len(built) == 1


@pytest.mark.engine
def test_container_mode_runs_psql_in_the_database_container(
    pg_stack: Path, pg_server: pgserver.Server, docker_client: DockerClient, inproc: CLI, tmp_path: Path
) -> None:
    with in_container(pg_stack, pg_server, docker_client, tmp_path) as project:
        old = stack_password(pg_stack)
        assert "can alter" in inproc("rotate", "--secrets", "POSTGRES_PASSWORD", "--dry-run").out
        ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD")
        assert ran.code == 0, ran.text
        new = stack_password(pg_stack)
        assert_on(pg_server, new)
        assert_not_on(pg_server, old)
        assert f"postgres container {project}-db/postgres" in ran.out
        ran = inproc("restore", "--latest")
        assert ran.code == 0, ran.text
        assert_on(pg_server, old)
        assert_not_on(pg_server, new)
        with edited_config(pg_stack) as raw:
            raw["secrets"]["POSTGRES_PASSWORD"]["apply"][0]["postgres"]["roles"].append("ghost")
        ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD")
        assert ran.code != 0 and "ghost not found" in ran.err
        assert_on(pg_server, old)


def test_scram_verifiers_agree_with_postgres(pg_server: pgserver.Server) -> None:
    from psycopg import sql

    from rotation.targets import scram

    with pg_server.connect() as conn:
        conn.execute("DROP ROLE IF EXISTS scram_probe")
        conn.execute(sql.SQL("CREATE ROLE scram_probe LOGIN PASSWORD {}").format(scram.verifier("ours-1234567890")))
        assert pg_server.logs_in("scram_probe", "ours-1234567890")
        assert not pg_server.logs_in("scram_probe", "ours-1234567891")
        conn.execute("ALTER ROLE scram_probe PASSWORD 'theirs-0987654321'")  # hashed by the server
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_probe'").fetchone()[0]  # type: ignore[index]
    assert stored.startswith("SCRAM-SHA-256$")
    assert scram.matches(stored, "theirs-0987654321")
    # Non-ASCII passwords go through SASLprep on both sides: U+00A0 is a space, U+FB01 is "fi".
    for password in ("caf\u00e9\u00a0\ufb01x-1234567890", "\u05d0\u05d1\u05d2-rtl-1234567890\u05d3"):
        with pg_server.connect() as conn:
            conn.execute(sql.SQL("ALTER ROLE scram_probe PASSWORD {}").format(password))
            stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_probe'").fetchone()[0]  # type: ignore[index]
            assert scram.matches(stored, password), password
            conn.execute(sql.SQL("ALTER ROLE scram_probe PASSWORD {}").format(scram.verifier(password)))
        assert pg_server.logs_in("scram_probe", password), password
    assert not scram.matches(stored, "theirs-0987654322")
    assert not scram.matches("md5abcdef", "theirs-0987654321")


@pytest.mark.engine
def test_container_mode_kill_after_the_commit_is_reverted_by_the_next_command(
    pg_stack: Path, pg_server: pgserver.Server, docker_client: DockerClient, inproc: CLI, tmp_path: Path
) -> None:
    with in_container(pg_stack, pg_server, docker_client, tmp_path):
        old = stack_password(pg_stack)
        child = crashpoints.run(pg_stack, POINTS["before-files"], "rotate", "POSTGRES_PASSWORD")
        assert child.returncode == -9, child.stderr
        assert not pg_server.logs_in("postgres", old), "the kill came before the commit"
        ran = inproc("restore", "--list")  # the socket asks for a password: only the new one works now
        assert ran.code == 0, ran.text
        assert "recovered an interrupted run" in ran.err
        assert_on(pg_server, old)
        assert stack_password(pg_stack) == old


def _consistent(stack: Path, server: pgserver.Server) -> str:
    """The one password every file holds, proven to log in as every login role; fails otherwise."""
    values = {envfile.read(stack / name).get("POSTGRES_PASSWORD") for name in FILES}
    assert len(values) == 1, "the files disagree"
    password = values.pop()
    assert password is not None
    assert_on(server, password)
    return password


@pytest.mark.parametrize("operation", ["rotate", "restore"])
def test_a_kill_at_every_step_boundary_recovers_to_one_consistent_state(
    pg_stack: Path, pg_server: pgserver.Server, inproc: CLI, tmp_path: Path, operation: str
) -> None:
    """Killed before each step of the commit and its close, with the database live: the next
    command leaves every file on one password, and that password logs in."""
    original = stack_password(pg_stack)
    argument = "POSTGRES_PASSWORD"
    if operation == "restore":
        assert inproc("rotate", "--secrets", "POSTGRES_PASSWORD").code == 0
        argument = json.loads(inproc("restore", "--list", "--json").out)[0]["id"]
    pristine = tmp_path / "pristine"
    shutil.copytree(pg_stack, pristine, symlinks=True)
    start = stack_password(pristine)

    def fresh(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(pristine, copy, symlinks=True)
        pg_server.reset(start)
        return copy

    steps = crashpoints.count(fresh("count"), operation, argument)
    assert steps >= 8
    outcomes = set()
    for limit in range(steps):
        root = fresh(f"kill-{limit}")
        child = crashpoints.run(root, limit, operation, argument)
        assert child.returncode == -9, (limit, child.stderr)
        ran = inproc("restore", "--list", cwd=root)
        assert ran.code == 0, (limit, ran.err)
        password = _consistent(root, pg_server)
        outcomes.add("before" if password == start else "after")
        assert not (root / "backups/secrets/journal.json").exists()
    assert outcomes == {"before", "after"}  # both ends were reached, each one whole
    assert original


@pytest.mark.engine
def test_a_compose_failure_during_a_container_mode_rotation_changes_nothing_and_wedges_nothing(
    pg_stack: Path, pg_server: pgserver.Server, docker_client: DockerClient, inproc: CLI, tmp_path: Path
) -> None:
    with in_container(pg_stack, pg_server, docker_client, tmp_path) as project:
        old = stack_password(pg_stack)
        before = {name: (pg_stack / name).read_bytes() for name in FILES}
        compose_file = tmp_path / project / "docker-compose.yml"
        working = compose_file.read_text()
        compose_file.write_text("services:\n  db:\n    image: [unclosed\n")  # compose itself now fails
        try:
            ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD")
        finally:
            compose_file.write_text(working)
        assert ran.code != 0 and "docker-compose" in ran.err and "Traceback" not in ran.err, ran.err
        assert {name: (pg_stack / name).read_bytes() for name in FILES} == before
        assert_on(pg_server, old)
        assert not (pg_stack / "backups/secrets/journal.json").exists()
        listed = inproc("restore", "--list")
        assert listed.code == 0 and "pending" not in listed.err, listed.err

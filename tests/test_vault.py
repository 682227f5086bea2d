"""Rotations that also land, versioned, in a real OpenBao (the Vault API): write, restore, conflict,
kill, pull onto a second host, dry run, and every bad input as one line with nothing changed."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from rotation import envfile
from rotation.config import load
from rotation.errors import RecoveryError, StoreError
from rotation.probes import run_probes
from rotation.runs import rotate
from rotation.stack import Stack, merged_env
from rotation.targets import vault

from . import baoserver, crashpoints, pgserver
from .conftest import CLI, documented_keys, edited_config, finished, one_line_error, stack_password, tree

pytestmark = pytest.mark.vault

FILES = (".env", "supabase/docker/.env")
KEYS = ["JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY", "POSTGRES_PASSWORD"]


def unique() -> str:
    return f"localai/{uuid.uuid4().hex[:10]}"


def with_store(root: Path, path: str, secrets: list[str] | None = KEYS, **settings: object) -> None:
    """Configure one store at `secret/<path>`, its address from ${VAULT_ADDR}."""
    with edited_config(root) as raw:
        body: dict[str, object] = {"address": "${VAULT_ADDR}", "mount": "secret", "path": path, **settings}
        if secrets is not None:
            body["secrets"] = secrets
        raw["stores"] = [{"vault": body}]


def values(root: Path) -> dict[str, str]:
    """Every key the stack's env files set, and its value (the first file wins)."""
    merged = merged_env({name: envfile.read(root / name) for name in FILES})
    return {k: v for k, v in merged.items() if v is not None}


def seed(bao: baoserver.Server, root: Path, path: str, keys: list[str] = KEYS, **extra: str) -> int:
    """The store in step with the files before the test: one version with their values (and `extra`)."""
    now = values(root)
    return bao.write(path, {**{k: now[k] for k in keys if k in now}, **extra})


def env_for(bao: baoserver.Server, token: str = baoserver.ROOT_TOKEN) -> dict[str, str]:
    return {"VAULT_ADDR": bao.address, "VAULT_TOKEN": token}


def test_rotate_writes_one_new_version_with_exactly_the_new_values(
    stack: Path, inproc: CLI, bao: baoserver.Server
) -> None:
    path = unique()
    with_store(stack, path)
    before = seed(bao, stack, path, OTHER_TOOL_KEY="kept as it is")
    old = values(stack)
    ran = inproc("rotate", "--secrets", "JWT_SECRET", env=env_for(bao))
    assert ran.code == 0, ran.err
    version, data = bao.read(path)
    assert version == before + 1
    now = values(stack)
    assert {k: data[k] for k in KEYS} == {k: now[k] for k in KEYS}
    changed = {k for k in KEYS if now[k] != old[k]}
    assert changed == {"JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY"}
    assert data["OTHER_TOOL_KEY"] == "kept as it is"  # what others keep beside ours is left alone
    assert f"vault secret/{path}: version {version}" in ran.out
    listed = json.loads(inproc("restore", "--list", "--json").out)[0]
    assert listed["stores"] == [{"label": f"vault secret/{path}", "before": before, "after": version}]
    assert f"v{before}->v{version}" in inproc("restore", "--list").out
    shown = ran.text + (stack / "backups/secrets/audit.log").read_text()
    shown += next((stack / "backups/secrets").glob("secrets-backup-*/metadata.json")).read_text()
    for key in changed:
        assert now[key] not in shown and old[key] not in shown


def test_restore_writes_the_old_values_as_a_newer_version(stack: Path, inproc: CLI, bao: baoserver.Server) -> None:
    path = unique()
    with_store(stack, path)
    first = seed(bao, stack, path)
    assert inproc("rotate", "--secrets", "JWT_SECRET", env=env_for(bao)).code == 0
    ran = inproc("restore", "--latest", env=env_for(bao))
    assert ran.code == 0, ran.err
    version, data = bao.read(path)
    assert version == first + 2
    assert data == bao.read(path, first)[1]  # N+2 equals N
    assert bao.read(path, first + 1)[1] != data  # and the rotated version is still there, in the history
    assert "as a new version" in ran.out
    assert f"v{first + 1}->v{first + 2}" in inproc("restore", "--list").out


def test_another_writer_between_plan_and_commit_reverts_the_database_and_files(
    pg_stack: Path, pg_server: pgserver.Server, bao: baoserver.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = unique()
    with_store(pg_stack, path)
    seed(bao, pg_stack, path)
    for name, value in env_for(bao).items():
        monkeypatch.setenv(name, value)
    old = stack_password(pg_stack)
    before = {name: (pg_stack / name).read_bytes() for name in FILES}
    real = vault.Vault.write

    def raced(self: vault.Vault, data: dict[str, str], cas: int) -> int:
        bao.write(path, {"JWT_SECRET": "written by someone else"})  # after the plan read its version
        return real(self, data, cas)

    monkeypatch.setattr(vault.Vault, "write", raced)
    stack = Stack(pg_stack, load(pg_stack / "secrets-config.yaml"))
    with pytest.raises(StoreError, match="another writer changed the secret") as failure:
        rotate(stack, ["POSTGRES_PASSWORD"])
    assert "Put back the password in postgres" in str(failure.value)
    assert pg_server.logs_in("postgres", old)
    assert {name: (pg_stack / name).read_bytes() for name in FILES} == before
    assert bao.read(path)[1] == {"JWT_SECRET": "written by someone else"}  # theirs stands; ours never landed
    assert not (pg_stack / "backups/secrets/journal.json").exists()


def test_a_kill_at_every_step_boundary_leaves_files_database_and_store_on_one_value(
    pg_stack: Path, pg_server: pgserver.Server, inproc: CLI, bao: baoserver.Server, tmp_path: Path
) -> None:
    """Killed before each step of a rotation with a store and a PostgreSQL: after the next command
    the files, the database and the store's current version all hold one password."""
    pristine = tmp_path / "pristine"
    shutil.copytree(pg_stack, pristine, symlinks=True)
    start = stack_password(pristine)
    env = env_for(bao)

    def fresh(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(pristine, copy, symlinks=True)
        path = unique()
        with_store(copy, path)
        seed(bao, copy, path)
        pg_server.reset(start)
        return copy

    def store_path(root: Path) -> str:
        return str(load(root / "secrets-config.yaml").stores[0].path)

    steps = crashpoints.count(fresh("count"), "rotate", "POSTGRES_PASSWORD", env)
    assert steps >= 9  # journal, two staged copies, database, store, two files, journal and staged removal
    outcomes = set()
    for limit in range(steps):
        root = fresh(f"kill-{limit}")
        child = crashpoints.run(root, limit, "rotate", "POSTGRES_PASSWORD", env)
        assert child.returncode == -9, (limit, child.stderr)
        ran = inproc("restore", "--list", cwd=root, env=env)
        assert ran.code == 0, (limit, ran.err)
        passwords = {envfile.read(root / name).get("POSTGRES_PASSWORD") for name in FILES}
        assert len(passwords) == 1, limit
        password = passwords.pop()
        assert password is not None and pg_server.logs_in("postgres", password), limit
        assert bao.read(store_path(root))[1]["POSTGRES_PASSWORD"] == password, limit
        assert not (root / "backups/secrets/journal.json").exists()
        outcomes.add("before" if password == start else "after")
    assert outcomes == {"before", "after"}


def test_pull_on_a_second_host_takes_the_changed_values_and_keeps_its_own_bytes(
    stack: Path, inproc: CLI, bao: baoserver.Server, tmp_path: Path
) -> None:
    path = unique()
    with_store(stack, path, secrets=None)  # every configured secret
    second = tmp_path / "second"
    shutil.copytree(stack, second, symlinks=True)
    for name in FILES:  # the second host's files differ from the first's in their own ways
        text = (second / name).read_bytes()
        (second / name).write_bytes(b"# second host, edited by hand\n" + text + b"HOST_ONLY_SETTING='kept'\n")
    own = {name: (second / name).read_bytes() for name in FILES}
    assert inproc("rotate", env=env_for(bao)).code == 0
    first = values(stack)
    ran = inproc("pull", cwd=second, env=env_for(bao))
    assert ran.code == 0, ran.err
    assert f"Pulled vault secret/{path} version 1" in ran.out
    for name in FILES:
        parsed = envfile.from_bytes(own[name])
        changed = {k: first[k] for k in parsed.names() if k in first and parsed.get(k) != first[k]}
        assert changed, name
        assert (second / name).read_bytes() == parsed.rendered(changed), name  # every other byte as it was
    listed = json.loads(inproc("restore", "--list", "--json", cwd=second).out)[0]
    assert listed["pulled"] == [{"label": f"vault secret/{path}", "version": 1}]
    assert "already hold" in inproc("pull", cwd=second, env=env_for(bao)).out
    again = json.loads(inproc("pull", "--json", cwd=second, env=env_for(bao)).out)
    assert set(again) == documented_keys("### `pull --json`") and again["backup"] is None
    assert bao.read(path)[0] == 1  # a pull only reads the store


def test_pull_of_an_earlier_version(stack: Path, inproc: CLI, bao: baoserver.Server, tmp_path: Path) -> None:
    path = unique()
    with_store(stack, path)
    first = seed(bao, stack, path)
    original = {name: (stack / name).read_bytes() for name in FILES}
    assert inproc("rotate", "--secrets", "JWT_SECRET", env=env_for(bao)).code == 0
    finished(stack)
    ran = inproc("pull", "--version", str(first), env=env_for(bao))
    assert ran.code == 0, ran.err
    assert {name: (stack / name).read_bytes() for name in FILES} == original


def test_dry_run_with_a_token_that_cannot_write_reports_it_and_writes_nothing(
    stack: Path, inproc: CLI, bao: baoserver.Server
) -> None:
    path = unique()
    with_store(stack, path)
    version = seed(bao, stack, path)
    reader = bao.token(f"read-{path.replace('/', '-')}", f'path "secret/data/{path}" {{ capabilities = ["read"] }}')
    before = tree(stack)
    ran = inproc("rotate", "--dry-run", env=env_for(bao, reader))
    line = one_line_error(ran)
    assert "may not update" in line and f"secret/data/{path}" in line
    assert reader not in ran.text
    assert tree(stack) == before and bao.read(path)[0] == version
    agrees = inproc("rotate", "--dry-run", env=env_for(bao))
    assert agrees.code == 0, agrees.err
    assert f"vault secret/{path}: can read and write (version {version}); it holds the files' values" in agrees.out


BadInput = Callable[[Path, baoserver.Server, str], tuple[dict[str, str], tuple[str, ...]]]


def _unreachable(root: Path, bao: baoserver.Server, path: str) -> tuple[dict[str, str], tuple[str, ...]]:
    return {"VAULT_ADDR": f"http://127.0.0.1:{baoserver.free_port()}"}, ("unreachable",)


def _bad_token(root: Path, bao: baoserver.Server, path: str) -> tuple[dict[str, str], tuple[str, ...]]:
    return {"VAULT_TOKEN": "s.not-a-token"}, ("token was refused",)


def _no_token(root: Path, bao: baoserver.Server, path: str) -> tuple[dict[str, str], tuple[str, ...]]:
    return {"VAULT_TOKEN": ""}, ("VAULT_TOKEN or BAO_TOKEN",)


def _denied(root: Path, bao: baoserver.Server, path: str) -> tuple[dict[str, str], tuple[str, ...]]:
    token = bao.token(f"other-{path.replace('/', '-')}", 'path "secret/data/elsewhere" { capabilities = ["read"] }')
    return {"VAULT_TOKEN": token}, ("permission denied",)


def _kv_version_1(root: Path, bao: baoserver.Server, path: str) -> tuple[dict[str, str], tuple[str, ...]]:
    mount = f"kv1-{uuid.uuid4().hex[:6]}"
    bao.client().sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    with_store(root, path, mount=mount)
    return {}, ("KV version 1", "KV version 2 mount")


def _tls(root: Path, bao: baoserver.Server, path: str) -> tuple[dict[str, str], tuple[str, ...]]:
    return {"VAULT_ADDR": bao.address.replace("http://", "https://")}, ("TLS verification", "ca_cert")


@pytest.mark.parametrize(
    "bad", [_unreachable, _bad_token, _no_token, _denied, _kv_version_1, _tls], ids=lambda f: f.__name__.strip("_")
)
def test_a_store_fault_is_one_line_and_changes_nothing(
    stack: Path, inproc: CLI, bao: baoserver.Server, bad: BadInput
) -> None:
    path = unique()
    with_store(stack, path)
    version = seed(bao, stack, path)
    overrides, words = bad(stack, bao, path)
    before = {name: (stack / name).read_bytes() for name in FILES}
    ran = inproc("rotate", "--secrets", "JWT_SECRET", env={**env_for(bao), **overrides})
    line = one_line_error(ran)
    for word in words:
        assert word in line, line
    assert f"/{path}" in line  # the store at fault is named
    assert {name: (stack / name).read_bytes() for name in FILES} == before
    assert bao.read(path)[0] == version
    assert "s.not-a-token" not in ran.text  # a token is never shown


def test_pull_refuses_a_missing_secret_and_a_missing_key(stack: Path, inproc: CLI, bao: baoserver.Server) -> None:
    path = unique()
    with_store(stack, path)
    before = tree(stack)
    line = one_line_error(inproc("pull", env=env_for(bao)))
    assert f"vault secret/{path}" in line and "holds nothing to pull" in line
    bao.write(path, {"JWT_SECRET": "x" * 40})
    line = one_line_error(inproc("pull", env=env_for(bao)))
    assert "version 1 has no ANON_KEY, SERVICE_ROLE_KEY, POSTGRES_PASSWORD" in line
    line = one_line_error(inproc("pull", "--version", "7", env=env_for(bao)))
    assert "there is no version 7" in line
    assert tree(stack) == before or set(tree(stack)) - set(before) <= {"backups/secrets/audit.log"}


def test_approle_login_with_a_secret_id_file(stack: Path, inproc: CLI, bao: baoserver.Server) -> None:
    path = unique()
    root = bao.client()
    mount = f"approle-{uuid.uuid4().hex[:6]}"
    root.sys.enable_auth_method("approle", path=mount)
    policy = f"rotation-{path.replace('/', '-')}"
    root.sys.create_or_update_policy(
        name=policy, policy=f'path "secret/data/{path}" {{ capabilities = ["create", "read", "update"] }}'
    )
    root.auth.approle.create_or_update_approle("rotation", token_policies=[policy], mount_point=mount)
    role_id = root.auth.approle.read_role_id("rotation", mount_point=mount)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("rotation", mount_point=mount)["data"]["secret_id"]
    (stack / "vault-secret-id").write_text(secret_id + "\n")
    auth = {"method": "approle", "mount": mount, "role_id": "${ROLE_ID}", "secret_id_file": "vault-secret-id"}
    with_store(stack, path, auth=auth)
    ran = inproc(
        "rotate", "--secrets", "JWT_SECRET", env={"VAULT_ADDR": bao.address, "VAULT_TOKEN": "", "ROLE_ID": role_id}
    )
    assert ran.code == 0, ran.err
    assert bao.read(path)[1]["JWT_SECRET"] == values(stack)["JWT_SECRET"]
    assert secret_id not in ran.text


def test_the_store_probe_says_whether_the_store_agrees_with_the_files(
    stack: Path, inproc: CLI, bao: baoserver.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = unique()
    with_store(stack, path)
    with edited_config(stack) as raw:
        raw["verify"] = []  # only the store's own probe, which every configured store gets
    assert inproc("rotate", "--secrets", "JWT_SECRET", env=env_for(bao)).code == 0
    for name, value in env_for(bao).items():
        monkeypatch.setenv(name, value)
    stack_ = Stack(stack, load(stack / "secrets-config.yaml"))

    def store_probe() -> tuple[bool, str]:
        found = [
            p
            for p in run_probes(stack_.config, stack_.values(), {}, stack_.databases, stack_.vaults())
            if p.name.startswith("store")
        ]
        assert len(found) == 1
        return found[0].ok, found[0].detail

    assert store_probe() == (True, "version 1 holds the files' values")
    bao.write(path, {**bao.read(path)[1], "ANON_KEY": "someone else's token"})
    ok, detail = store_probe()
    assert not ok and detail == "version 2 differs from the files in ANON_KEY"


def test_a_bad_store_configuration_names_the_key(stack: Path, inproc: CLI) -> None:
    with edited_config(stack) as raw:
        raw["stores"] = [{"vault": {"address": "${VAULT_ADDR}", "path": "x", "secrets": ["JWT_SECRT"]}}]
    line = one_line_error(inproc("rotate", "--dry-run"))
    assert "stores[0].vault.secrets" in line and "did you mean 'JWT_SECRET'" in line
    with edited_config(stack) as raw:
        raw["stores"] = [{"vault": {"address": "${VAULT_ADDR}", "path": "../x"}}]
    assert "stores[0].vault.path" in one_line_error(inproc("rotate", "--dry-run"))
    with edited_config(stack) as raw:
        raw["stores"] = [
            {
                "vault": {
                    "address": "x",
                    "path": "p",
                    "auth": {"method": "approle", "role_id": "r", "secret_id": "plain"},
                }
            }
        ]
    assert "stores[0].vault.auth.secret_id" in one_line_error(inproc("rotate", "--dry-run"))


def test_a_run_killed_after_the_store_write_waits_for_the_store_to_come_back(
    stack: Path, inproc: CLI, bao: baoserver.Server
) -> None:
    path = unique()
    with_store(stack, path)
    first = seed(bao, stack, path)
    original = {name: (stack / name).read_bytes() for name in FILES}
    # Steps: the journal, two staged copies, the store write; killed right after that one.
    child = crashpoints.run(stack, 4, "rotate", "JWT_SECRET", env_for(bao))
    assert child.returncode == -9 and bao.read(path)[0] == first + 1
    away = {**env_for(bao), "VAULT_ADDR": f"http://127.0.0.1:{baoserver.free_port()}"}
    listed = inproc("restore", "--list", env=away)
    assert listed.code == 0 and "an interrupted run is pending" in listed.err and "unreachable" in listed.err
    refused = inproc("rotate", "--secrets", "JWT_SECRET", env=away)
    assert refused.code == 5 and "rotation recover" in refused.err, refused.err
    assert {name: (stack / name).read_bytes() for name in FILES} == original
    recovered = inproc("recover", env=env_for(bao))
    assert recovered.code == 0 and f"values in vault secret/{path}" in recovered.out, recovered.text
    version, data = bao.read(path)
    assert version == first + 2 and data == bao.read(path, first)[1]
    assert {name: (stack / name).read_bytes() for name in FILES} == original


def test_a_write_whose_outcome_is_unknown_keeps_the_journal_for_the_next_command(
    stack: Path, inproc: CLI, bao: baoserver.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after the store took the new version, and the store cannot be read
    either: nothing can tell what to undo, so the journal stays and the next command finishes."""
    path = unique()
    with_store(stack, path)
    first = seed(bao, stack, path)
    original = {name: (stack / name).read_bytes() for name in FILES}
    for name, value in env_for(bao).items():
        monkeypatch.setenv(name, value)
    real_write, real_read = vault.Vault.write, vault.Vault.read
    lost = {"yes": False}

    def write(self: vault.Vault, data: dict[str, str], cas: int) -> int:
        real_write(self, data, cas)
        lost["yes"] = True
        raise StoreError(f"{self.label}: writing a new version: the store is unreachable")

    def read(self: vault.Vault, version: int | None = None) -> vault.Stored:
        if lost["yes"]:
            raise StoreError(f"{self.label}: reading the secret: the store is unreachable")
        return real_read(self, version)

    monkeypatch.setattr(vault.Vault, "write", write)
    monkeypatch.setattr(vault.Vault, "read", read)
    with pytest.raises(RecoveryError, match=r"could not be settled .* whether it holds the new values is not known"):
        rotate(Stack(stack, load(stack / "secrets-config.yaml")), ["JWT_SECRET"])
    assert (stack / "backups/secrets/journal.json").exists()
    monkeypatch.undo()
    ran = inproc("recover", env=env_for(bao))
    assert ran.code == 0 and "recovered an interrupted run" in ran.out, ran.text
    assert {name: (stack / name).read_bytes() for name in FILES} == original
    version, data = bao.read(path)
    assert version == first + 2 and data == bao.read(path, first)[1]

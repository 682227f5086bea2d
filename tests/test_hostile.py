"""A hostile user, a full disk, links and crafted state: nothing lost, nothing written outside the stack."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotation import envfile

from . import pgserver
from .conftest import CLI, edited_config, finished, stack_password, tree, unavailable

FILES = (".env", "supabase/docker/.env")


@contextmanager
def full_tmpfs(directory: Path) -> Iterator[None]:
    """Mount a small tmpfs over `directory`, with its files copied in and the rest filled up."""
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root")
    keep = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(directory)], capture_output=True)
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        for name, data in keep.items():
            (directory / name).write_bytes(data)
        fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        yield
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


@pytest.mark.postgres
def test_a_full_disk_after_the_database_changed_is_undone_by_the_same_command(
    pg_stack: Path, pg_server: pgserver.Server, inproc: CLI
) -> None:
    old = stack_password(pg_stack)
    before = (pg_stack / ".env").read_bytes()
    with full_tmpfs(pg_stack / "supabase/docker"):
        other = (pg_stack / FILES[1]).read_bytes()
        ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD")
        assert ran.code != 0
        assert "No space left on device" in ran.err and "Put back the password in postgres" in ran.err, ran.err
        assert (pg_stack / ".env").read_bytes() == before and (pg_stack / FILES[1]).read_bytes() == other
        assert pg_server.logs_in("postgres", old) and pg_server.logs_in("authenticator", old)
        assert not (pg_stack / "backups/secrets/journal.json").exists()
        assert inproc("restore", "--list").code == 0


def test_a_link_between_env_files_stays_a_link_and_both_names_agree(stack: Path, inproc: CLI) -> None:
    (stack / FILES[1]).unlink()
    (stack / FILES[1]).symlink_to("../../.env")
    with edited_config(stack) as raw:  # as the bundled config has it: one secret only in the root file
        raw["secrets"]["N8N_USER_MANAGEMENT_JWT_SECRET"]["files"] = [".env"]
    assert inproc("rotate").code == 0
    assert (stack / FILES[1]).is_symlink() and os.readlink(stack / FILES[1]) == "../../.env"
    assert (stack / FILES[1]).read_bytes() == (stack / ".env").read_bytes()
    ran = inproc("restore", "--latest")
    assert ran.code == 0, ran.err
    assert (stack / FILES[1]).is_symlink()


def test_owner_and_group_are_kept_and_a_loose_mode_is_tightened(stack: Path, inproc: CLI) -> None:
    if os.geteuid() != 0:
        unavailable("changing a file's owner needs root")
    os.chown(stack / ".env", 1000, 1000)
    os.chmod(stack / ".env", 0o640)
    ran = inproc("rotate", "--secrets", "JWT_SECRET")
    assert ran.code == 0, ran.err
    info = (stack / ".env").stat()
    assert (info.st_uid, info.st_gid) == (1000, 1000)
    assert stat.S_IMODE(info.st_mode) == 0o600 and "tightened to 600" in ran.err


def test_hard_links_are_kept(stack: Path, inproc: CLI, tmp_path: Path) -> None:
    other = stack / "env-hardlink"
    os.link(stack / ".env", other)
    assert inproc("rotate", "--secrets", "JWT_SECRET").code == 0
    assert (stack / ".env").stat().st_nlink == 2
    assert other.read_bytes() == (stack / ".env").read_bytes()


def test_a_symlinked_backup_directory_is_refused_in_one_line(stack: Path, inproc: CLI, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (stack / "backups").mkdir()
    (stack / "backups/secrets").symlink_to(outside)
    before = tree(stack)
    ran = inproc("rotate", "--secrets", "JWT_SECRET")
    assert ran.code != 0 and "symbolic link" in ran.err and ran.err.count("\n") == 1, ran.err
    assert list(outside.iterdir()) == [] and tree(stack) == before


def test_audit_log_as_a_link_is_never_written_through(stack: Path, inproc: CLI, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    victim.chmod(0o644)
    assert inproc("rotate", "--secrets", "JWT_SECRET").code == 0
    finished(stack)
    log = stack / "backups/secrets/audit.log"
    log.unlink()
    log.symlink_to(victim)
    ran = inproc("rotate", "--secrets", "JWT_SECRET")
    assert ran.code == 0, ran.err
    assert victim.read_text() == "keep me\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert "cannot write the audit log" in ran.err


def test_prune_never_deletes_through_a_link(stack: Path, inproc: CLI, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("x")
    directory = stack / "backups/secrets"
    assert inproc("rotate", "--secrets", "JWT_SECRET").code == 0
    (directory / "secrets-backup-20000101-000000").symlink_to(outside)
    for _ in range(2):  # every later rotation too
        finished(stack)
        ran = inproc("rotate", "--secrets", "JWT_SECRET")
        assert ran.code == 0, ran.err
    assert (outside / "precious").exists()
    assert "20000101-000000 is damaged" in inproc("restore", "--list").err


@pytest.mark.parametrize(
    "metadata",
    [
        {"files": 5},
        [],
        {"rotated_secrets": 7},
        {"database": [{"secret": "POSTGRES_PASSWORD", "endpoint": {}}]},
        {"database": "x"},
        {"files": ["../victim.txt"]},
    ],
)
def test_a_damaged_backup_is_listed_as_damaged_and_the_others_stay_usable(
    stack: Path, inproc: CLI, metadata: object, tmp_path: Path
) -> None:
    assert inproc("rotate", "--secrets", "JWT_SECRET").code == 0
    damaged = stack / "backups/secrets/secrets-backup-20000101-000000"
    damaged.mkdir()
    (damaged / "metadata.json").write_text(json.dumps(metadata))
    for argv in (["restore", "--list"], ["due"], ["restore", "--latest", "--dry-run"], ["restore", "--latest"]):
        ran = inproc(*argv)
        assert ran.code in (0, 1) and "Traceback" not in ran.err, (argv, ran.err)
    assert "20000101-000000 is damaged" in inproc("restore", "--list").err
    ran = inproc("restore", "--backup", "20000101-000000")
    assert ran.code != 0 and "damaged" in ran.err and ran.err.count("\n") == 1


def outside_state(path: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        str(p): (p.read_bytes() if p.is_file() else b"", stat.S_IMODE(p.lstat().st_mode), p.lstat().st_mtime_ns)
        for p in [path, *sorted(path.rglob("*"))]
    }


NAMES = st.sampled_from(
    [".env", "supabase/docker/.env", "../victim.txt", "../outside/victim.txt", "/etc/passwd", "..", "a/../../x", ""]
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(NAMES, max_size=3),
    database_file=NAMES,
    journal_run=st.sampled_from(["20000101-000000", "../../outside", "nope"]),
    link_run=st.booleans(),
    link_staged=st.booleans(),
    raw_journal=st.sampled_from(["ok", "garbage", "list"]),
)
def test_crafted_backup_trees_never_touch_anything_outside_the_stack(
    tmp_path_factory: pytest.TempPathFactory,
    files: list[str],
    database_file: str,
    journal_run: str,
    link_run: bool,
    link_staged: bool,
    raw_journal: str,
) -> None:
    from rotation.config import load
    from rotation.errors import RotationError
    from rotation.runs import restore
    from rotation.stack import Stack

    from .conftest import EXAMPLE, REPO, example_files

    base = tmp_path_factory.mktemp("crafted")
    root, outside = base / "stack", base / "outside"
    for name in example_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EXAMPLE / name, root / name)
    shutil.copy(REPO / "secrets-config.yaml", root / "secrets-config.yaml")
    outside.mkdir()
    (outside / "victim.txt").write_text("victim\n")
    (base / "victim.txt").write_text("victim\n")
    directory = root / "backups/secrets"
    run = directory / "secrets-backup-20000101-000000"
    run.mkdir(parents=True)
    if link_run:
        run.rmdir()
        run.symlink_to(outside)
    else:
        (run / "metadata.json").write_text(json.dumps({"kind": "rotation", "files": files}))
        for name in files:
            if name and not name.startswith("/") and ".." not in name:
                (run / name).parent.mkdir(parents=True, exist_ok=True)
                (run / name).write_text("X=1\n")
        if link_staged:
            (run / "staged").symlink_to(outside)
    journal = {"run": journal_run, "files": files, "database": [{"secret": "S", "file": database_file, "endpoint": {}}]}
    text = {"ok": json.dumps(journal), "garbage": "{not json", "list": json.dumps([journal])}[raw_journal]
    (directory / "journal.json").write_text(text)
    before = {**outside_state(outside), **outside_state(base / "victim.txt")}
    stack = Stack(root, load(root / "secrets-config.yaml"), lock_timeout=5)
    for action in (stack.recover, lambda: stack.store.all(), lambda: restore(stack, "20000101-000000")):
        with suppress(RotationError):
            action()
    assert {**outside_state(outside), **outside_state(base / "victim.txt")} == before
    assert sorted(p.name for p in base.iterdir()) == ["outside", "stack", "victim.txt"]


def config_error(stack: Path, inproc: CLI, text: str) -> str:
    (stack / "secrets-config.yaml").write_text(text)
    before = tree(stack)
    started = time.monotonic()
    ran = inproc("rotate", "--dry-run")
    assert time.monotonic() - started < 10
    assert ran.code == 2 and ran.err.count("\n") == 1 and "Traceback" not in ran.err, ran.err
    assert tree(stack) == before
    return ran.err


BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (BOMB + "secrets: {}\n", "aliases are not supported"),
        ("secrets:\n  JWT_SECRET: {type: random, length: 1000000000, files: [.env]}\n", "too long"),
        (
            "secrets:\n  JWT_SECRET: {type: random, files: [.env]}\n  JWT_SECRET: {type: static, files: [.env]}\n",
            "duplicate key 'JWT_SECRET'",
        ),
        ("secrets:\n  JWT_SECRET: {type: random, files: [.env]}\nbackups: {directory: x}\n", "did you mean 'backup'"),
        ("secrets:\n  JWT_SECRET: {type: random, files: [.env]}\nbackup: {directory: .}\n", "the stack root itself"),
        ("secrets:\n  JWT_SECRET: {type: random, files: [.env]}\nbackup: {directory: .env}\n", "would hold .env"),
        (
            "secrets:\n  JWT_SECRET: {type: random, files: [.env]}\n"
            "verify:\n  - http: {url: 'http://x', timeout: soon}\n",
            "verify[0].http.timeout",
        ),
        (
            "secrets:\n  POSTGRES_PASSWORD:\n    type: random\n    files: [.env]\n"
            "    apply: [{postgres: {dbname: '${POSTGRES_PASSWORD}', roles: [postgres]}}]\n",
            "may not use ${POSTGRES_PASSWORD}",
        ),
    ],
)
def test_config_abuse_is_one_clear_line_fast_with_nothing_changed(
    stack: Path, inproc: CLI, text: str, words: str
) -> None:
    assert words in config_error(stack, inproc, text)


def test_invalid_utf8_in_the_config_is_one_line(stack: Path, inproc: CLI) -> None:
    (stack / "secrets-config.yaml").write_bytes(b"secrets:\n  \xff\xfe: {}\n")
    ran = inproc("rotate", "--dry-run")
    assert ran.code == 2 and "not UTF-8" in ran.err and ran.err.count("\n") == 1


def test_a_webhook_password_is_never_printed(stack: Path, inproc: CLI) -> None:
    with edited_config(stack) as raw:
        raw["notify"] = ["http://user:hunter2secret@127.0.0.1:9/hook"]
    ran = inproc("rotate", "--secrets", "JWT_SECRET")
    assert ran.code == 0 and "notification to 127.0.0.1:9 failed" in ran.err
    assert "hunter2secret" not in ran.text and "user:" not in ran.err


def test_invalid_utf8_in_a_current_value_is_a_clear_line(stack: Path, inproc: CLI) -> None:
    env = stack / ".env"
    env.write_bytes(env.read_bytes().replace(b"JWT_SECRET=", b"JWT_SECRET=\xff", 1))
    before = tree(stack)
    ran = inproc("rotate", "--secrets", "JWT_SECRET")
    said = [line for line in ran.err.splitlines() if not line.startswith("rotation: warning:")]
    assert "Traceback" not in ran.err and len(said) <= 2, ran.err
    if ran.code != 0:
        assert tree(stack) == before
    assert envfile.read(stack / ".env") is not None


@contextmanager
def cleartext_hba(server: pgserver.Server) -> Iterator[None]:
    """The server asks every host login for its password in clear (pg_hba.conf `password`)."""
    hba = server.socket_dir.parent / "data" / "pg_hba.conf"
    rules = hba.read_text()
    hba.write_text(f"host all all 127.0.0.1/32 password\n{rules}")
    with server.connect() as conn:
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        hba.write_text(rules)
        with server.connect() as conn:
            conn.execute("SELECT pg_reload_conf()")


@pytest.mark.postgres
def test_a_server_that_would_take_the_password_in_clear_is_refused_before_anything_changes(
    pg_stack: Path, pg_server: pgserver.Server, inproc: CLI
) -> None:
    old = stack_password(pg_stack)
    before = tree(pg_stack)
    with cleartext_hba(pg_server):
        ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD")
        assert ran.code != 0 and ran.err.count("\n") == 1, ran.err
        assert "does not use SCRAM for supabase_admin" in ran.err and "127.0.0.1" in ran.err
        assert tree(pg_stack) == before or not (pg_stack / "backups/secrets/journal.json").exists()
        assert envfile.read(pg_stack / ".env").get("POSTGRES_PASSWORD") == old
        with edited_config(pg_stack) as raw:
            raw["secrets"]["POSTGRES_PASSWORD"]["apply"][0]["postgres"]["allow_cleartext_password"] = True
        ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD")
        assert ran.code == 0, ran.err
    assert pg_server.logs_in("postgres", stack_password(pg_stack))


@pytest.mark.postgres
def test_invalid_utf8_in_the_current_database_password_is_one_line(
    pg_stack: Path, pg_server: pgserver.Server, inproc: CLI
) -> None:
    for name in FILES:
        path = pg_stack / name
        path.write_bytes(path.read_bytes().replace(b"POSTGRES_PASSWORD=", b"POSTGRES_PASSWORD=\xff", 1))
    ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD")
    assert ran.code != 0 and "not valid UTF-8" in ran.err and ran.err.count("\n") == 1, ran.err
    assert not (pg_stack / "backups/secrets/journal.json").exists()


@pytest.mark.postgres
def test_recovery_with_the_database_down_says_it_cannot_connect(
    pg_stack: Path, pg_server: pgserver.Server, inproc: CLI
) -> None:
    from . import crashpoints

    child = crashpoints.run(pg_stack, 4, "rotate", "POSTGRES_PASSWORD")  # the database is new, no file yet
    assert child.returncode == -9
    journal = pg_stack / "backups/secrets/journal.json"
    entries = json.loads(journal.read_text())
    entries["database"][0]["endpoint"]["port"] = "1"  # as if the server were down: nothing listens there
    journal.write_text(json.dumps(entries))
    ran = inproc("rotate", "--secrets", "JWT_SECRET")
    assert ran.code != 0 and "cannot connect" in ran.err and "neither the old nor the new" not in ran.err, ran.err


def test_a_full_disk_under_the_backups_reports_the_real_error_not_the_audit_log(stack: Path, inproc: CLI) -> None:
    assert inproc("rotate", "--secrets", "JWT_SECRET").code == 0
    before = {name: (stack / name).read_bytes() for name in FILES}
    with full_tmpfs(stack / "backups/secrets"):
        ran = inproc("rotate", "--secrets", "JWT_SECRET")
    assert ran.code != 0 and "Traceback" not in ran.err, ran.err
    assert "No space left on device" in ran.err.splitlines()[-1] and "audit" not in ran.err.splitlines()[-1]
    assert {name: (stack / name).read_bytes() for name in FILES} == before


@pytest.mark.postgres
def test_a_recovery_that_cannot_run_yet_blocks_only_what_would_write(
    pg_stack: Path, pg_server: pgserver.Server, inproc: CLI
) -> None:
    from . import crashpoints

    old = stack_password(pg_stack)
    assert crashpoints.run(pg_stack, 4, "rotate", "POSTGRES_PASSWORD").returncode == -9  # database new, files old
    journal = pg_stack / "backups/secrets/journal.json"
    entries = json.loads(journal.read_text())
    real_port = entries["database"][0]["endpoint"]["port"]
    entries["database"][0]["endpoint"]["port"] = "1"  # the database is down
    journal.write_text(json.dumps(entries))
    for argv in (
        ["restore", "--list"],
        ["due"],
        ["log"],
        ["rotate", "--dry-run"],
        ["restore", "--latest", "--dry-run"],
    ):
        ran = inproc(*argv)
        assert ran.code in (0, 1) and "an interrupted run is pending" in ran.err, (argv, ran.err)
        assert "rotation recover" in ran.err
    ran = inproc("rotate", "--secrets", "JWT_SECRET")
    assert ran.code == 5 and "must be finished before anything else" in ran.err and "rotation recover" in ran.err
    assert inproc("recover").code != 0  # still down
    entries["database"][0]["endpoint"]["port"] = real_port  # the database is back
    journal.write_text(json.dumps(entries))
    ran = inproc("recover")
    assert ran.code == 0 and "recovered an interrupted run" in ran.out, ran.err
    assert pg_server.logs_in("postgres", old) and stack_password(pg_stack) == old
    assert "nothing to finish" in inproc("recover").out

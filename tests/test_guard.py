"""`rotation guard` and the pre-commit hooks of this repository, in a real git repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotation import envfile

from .conftest import CLI, REPO, unavailable

BIN = Path(sys.executable).parent


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)


@pytest.fixture
def repo(stack: Path) -> Path:
    """The example stack as a git repository with one clean commit; .env and backups ignored as usual."""
    (stack / ".gitignore").write_text(".env\nsupabase/docker/.env\nbackups/\n")
    git(stack, "init", "-q")
    git(stack, "config", "user.email", "test@example.com")
    git(stack, "config", "user.name", "test")
    git(stack, "add", ".")
    git(stack, "commit", "-q", "-m", "stack")
    return stack


def value(stack: Path, name: str) -> str:
    found = envfile.read(stack / ".env").get(name)
    assert found
    return found


def test_guard_names_the_file_line_and_secret_never_the_value(repo: Path, cli: CLI) -> None:
    secret = value(repo, "JWT_SECRET")
    (repo / "notebook.py").write_text(f"# tried it out\nkey = '{secret}'\n")
    git(repo, "add", "notebook.py")
    ran = cli("guard", cwd=repo)
    assert ran.code == 1
    assert "notebook.py:2: JWT_SECRET" in ran.out
    assert secret not in ran.text and secret[:8] not in ran.text and secret[-8:] not in ran.text


def test_guard_finds_values_only_a_backup_still_holds(repo: Path, cli: CLI) -> None:
    old = value(repo, "DASHBOARD_PASSWORD")
    assert cli("rotate", "--secrets", "DASHBOARD_PASSWORD", cwd=repo).code == 0
    assert value(repo, "DASHBOARD_PASSWORD") != old
    (repo / "docker-compose.override.yml").write_text(f"services:\n  kong:\n    environment:\n      PW: {old}\n")
    ran = cli("guard", "docker-compose.override.yml", cwd=repo)
    assert ran.code == 1 and "docker-compose.override.yml:4: DASHBOARD_PASSWORD" in ran.out
    assert old not in ran.text


def test_guard_refuses_env_files_and_backups_whatever_they_hold(repo: Path, cli: CLI) -> None:
    assert cli("rotate", "--secrets", "JWT_SECRET", cwd=repo).code == 0
    backup = next((repo / "backups/secrets").glob("secrets-backup-*/metadata.json"))
    git(repo, "add", "-f", str(backup.relative_to(repo)), ".env")
    ran = cli("guard", cwd=repo)
    assert ran.code == 1
    assert f"{backup.relative_to(repo)}: a backup of the stack's secrets" in ran.out
    assert ".env: holds the stack's secrets" in ran.out


def test_guard_takes_its_files_after_the_program_options_too(repo: Path, cli: CLI, tmp_path: Path) -> None:
    settings = tmp_path / "prod.yaml"
    settings.write_text(f"rotation:\n  root: {repo}\n")
    (repo / "leak.txt").write_text(value(repo, "JWT_SECRET"))
    ran = cli("-f", str(settings), "guard", "leak.txt", cwd=repo)
    assert ran.code == 1 and "leak.txt:1: JWT_SECRET" in ran.out


def test_a_clean_commit_passes_and_short_values_get_a_note(repo: Path, cli: CLI) -> None:
    (repo / "README.md").write_text("nothing to see\n")
    git(repo, "add", "README.md")
    ran = cli("guard", cwd=repo)
    assert ran.code == 0 and "no secret in 1 file\n" in ran.out


def test_guard_bad_input_is_one_line_or_a_note(repo: Path, cli: CLI, tmp_path: Path) -> None:
    not_git = tmp_path / "plain"
    shutil.copytree(repo, not_git, ignore=shutil.ignore_patterns(".git"))
    ran = cli("guard", cwd=not_git)
    assert ran.code == 2 and "not inside a git repository" in ran.err and ran.err.count("\n") <= 2
    (repo / "latin1.txt").write_bytes(b"caf\xe9 " + value(repo, "JWT_SECRET").encode() + b"\n")
    (repo / "blob.bin").write_bytes(b"\0\1\2" + value(repo, "JWT_SECRET").encode())
    unreadable = repo / "secret-dir"
    unreadable.mkdir()
    ran = cli("guard", "latin1.txt", "blob.bin", "secret-dir", "missing.txt", cwd=repo)
    assert ran.code == 1 and "latin1.txt:1: JWT_SECRET" in ran.out  # not UTF-8, still scanned
    assert "blob.bin:1: JWT_SECRET" in ran.out  # binary, scanned all the same
    assert "Traceback" not in ran.text


# Root, less the two capabilities that let it read files whatever their mode: a user who cannot read them.
DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]


def test_guard_fails_closed_when_it_cannot_read_the_values_it_looks_for(repo: Path, inproc: CLI) -> None:
    """Run by someone who cannot read the .env files (the tool makes them 600), it must not pass."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and util-linux's setpriv to drop the right to read others' files")
    (repo / ".env").chmod(0)  # root reads it anyway, unless it gives up DAC override as below
    (repo / "notes.txt").write_text(value_as_root(repo, "JWT_SECRET"))
    done = subprocess.run(
        [*DROP_DAC, sys.executable, "-m", "rotation", "guard", "notes.txt"],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot read .env" in done.stderr and "no secret" not in done.stdout


def value_as_root(stack: Path, name: str) -> str:
    mode = (stack / ".env").stat().st_mode
    (stack / ".env").chmod(0o600)
    try:
        return value(stack, name)
    finally:
        (stack / ".env").chmod(mode)


def test_every_word_after_the_options_is_a_file_even_one_named_like_an_option(repo: Path, inproc: CLI) -> None:
    secret = value(repo, "JWT_SECRET")
    for name in ("--help", "--config=x.yaml", "-c"):
        (repo / name).write_text(secret)
    ran = inproc("guard", "--", "--help", "--config=x.yaml", "-c")
    assert ran.code == 1, ran.text
    assert "--help:1: JWT_SECRET" in ran.out and "--config=x.yaml:1: JWT_SECRET" in ran.out
    assert "-c:1: JWT_SECRET" in ran.out
    ran = inproc("guard", "notes.md", "--help")  # after the first file, no word is an option
    assert ran.code == 1 and "--help:1: JWT_SECRET" in ran.out, ran.text


def test_without_files_the_guard_reads_what_is_staged_not_the_working_tree(repo: Path, inproc: CLI) -> None:
    secret = value(repo, "SERVICE_ROLE_KEY")
    (repo / "config.js").write_text(f"const key = '{secret}'\n")
    git(repo, "add", "config.js")
    (repo / "config.js").write_text("const key = process.env.KEY\n")  # fixed on disk, not in the commit
    ran = inproc("guard", cwd=repo)
    assert ran.code == 1 and "config.js:1: SERVICE_ROLE_KEY" in ran.out, ran.text
    git(repo, "add", "config.js")
    (repo / "config.js").write_text(f"const key = '{secret}'\n")  # leaked on disk, not staged
    ran = inproc("guard", cwd=repo)
    assert ran.code == 0 and "no secret in 1 file\n" in ran.out, ran.text


def test_binary_files_are_scanned_utf16_included(repo: Path, inproc: CLI) -> None:
    import tarfile

    secret = value(repo, "JWT_SECRET")
    with tarfile.open(repo / "stack.tar", "w") as archive:  # an uncompressed tar holds .env as it is
        archive.add(repo / ".env", arcname="env-copy")
    (repo / "notes-utf16.txt").write_bytes(f"key: {secret}\n".encode("utf-16"))
    git(repo, "add", "stack.tar", "notes-utf16.txt")
    ran = inproc("guard", cwd=repo)
    assert ran.code == 1, ran.text
    assert "stack.tar:" in ran.out and "notes-utf16.txt:" in ran.out and secret not in ran.text


def test_names_that_are_no_secret_are_not_looked_for(repo: Path, inproc: CLI) -> None:
    assert value(repo, "DASHBOARD_USERNAME") == "supabase"
    (repo / "README.md").write_text("This stack runs supabase, with supabase's studio.\n")
    git(repo, "add", "README.md")
    ran = inproc("guard", cwd=repo)
    assert ran.code == 0, ran.text


def test_a_backup_path_with_dot_dot_is_still_a_backup(repo: Path, inproc: CLI) -> None:
    assert inproc("rotate", "--secrets", "JWT_SECRET", cwd=repo).code == 0
    backup = next((repo / "backups/secrets").glob("secrets-backup-*/.env")).relative_to(repo)
    (repo / "x").mkdir()
    ran = inproc("guard", f"x/../{backup}", cwd=repo)
    assert ran.code == 1 and "a backup of the stack's secrets" in ran.out, ran.text


@pytest.fixture(scope="session")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache for pre-commit's hook environments, so this repository is installed once."""
    if shutil.which("pre-commit", path=str(BIN)) is None and shutil.which("pre-commit") is None:
        unavailable("the pre-commit package is not installed (pip install .[test])")
    yield tmp_path_factory.mktemp("pre-commit-home")


def try_repo(repo: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pre-commit try-repo <this checkout> ...`, as a user tries the hooks before adopting them."""
    exe = shutil.which("pre-commit", path=str(BIN)) or "pre-commit"
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "NO_COLOR": "1"}
    env.pop("ROTATION_ROOT", None)
    return subprocess.run(
        [exe, "try-repo", str(REPO), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )


def test_pre_commit_try_repo_blocks_secrets_and_lets_a_clean_commit_through(
    repo: Path, cli: CLI, pre_commit_home: Path
) -> None:
    secret = value(repo, "SERVICE_ROLE_KEY")
    old = value(repo, "DASHBOARD_PASSWORD")
    assert cli("rotate", "--secrets", "DASHBOARD_PASSWORD", cwd=repo).code == 0
    (repo / "leak.py").write_text(f"KEY = '{secret}'\n")
    (repo / "old.yml").write_text(f"password: {old}\n")
    (repo / "clean.py").write_text("print('hello')\n")
    backup = next((repo / "backups/secrets").glob("secrets-backup-*/.env"))
    git(repo, "add", "-f", "leak.py", "old.yml", "clean.py", str(backup.relative_to(repo)))
    ran = try_repo(
        repo, pre_commit_home, "rotation-guard", "--files", "leak.py", "old.yml", str(backup.relative_to(repo))
    )
    output = ran.stdout + ran.stderr
    assert ran.returncode == 1, output
    assert "leak.py:1: SERVICE_ROLE_KEY" in output and "old.yml:1: DASHBOARD_PASSWORD" in output
    assert "a backup of the stack's secrets" in output
    assert secret not in output and old not in output
    ran = try_repo(repo, pre_commit_home, "rotation-guard", "--files", "clean.py")
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_pre_commit_passes_files_named_like_options_as_files(repo: Path, pre_commit_home: Path) -> None:
    secret = value(repo, "JWT_SECRET")
    for name in ("--help", "--config=x.yaml"):
        (repo / name).write_text(secret)
    git(repo, "add", "--", "--help", "--config=x.yaml")
    ran = try_repo(repo, pre_commit_home, "rotation-guard", "--all-files")  # hands the hook both names
    output = ran.stdout + ran.stderr
    assert ran.returncode == 1, output
    assert "--help:1: JWT_SECRET" in output and "--config=x.yaml:1: JWT_SECRET" in output

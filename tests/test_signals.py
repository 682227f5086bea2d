"""Ctrl-C and SIGTERM, as a person or a service manager sends them: what was under way is undone in
place, or left for `recover` with a line that says so; never a traceback, never a silent exit 1.
Each test runs the real program in a process of its own: the signal is the point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from docker import DockerClient

from rotation import envfile

from . import enginestack, pgserver
from .conftest import CLI, stack_password
from .test_engine import env_of

pytestmark = pytest.mark.e2e

# The program, with a signal sent to itself right after the database proved the new password: the
# moment the database holds the new value and no file does yet.
SIGNAL_AFTER_PROVE = """
import os, signal, sys
from rotation.targets import postgres

real = postgres.DirectDatabase.prove
sent = getattr(signal, sys.argv[1])

def prove(self, *args, **kwargs):
    real(self, *args, **kwargs)
    os.kill(os.getpid(), sent)

postgres.DirectDatabase.prove = prove
sys.argv = ["rotation", *sys.argv[2:]]
from rotation.__main__ import main
main()
"""


def run_child(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("ROTATION_ROOT", None)
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_during_the_database_step_is_undone_in_place(
    pg_stack: Path, pg_server: pgserver.Server, name: str
) -> None:
    old = stack_password(pg_stack)
    before = {n: (pg_stack / n).read_bytes() for n in (".env", "supabase/docker/.env")}
    done = run_child(SIGNAL_AFTER_PROVE, name, "rotate", "--secrets", "POSTGRES_PASSWORD", cwd=pg_stack)
    assert done.returncode == 130, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "interrupted" in done.stderr and "Put back the password in postgres" in done.stderr, done.stderr
    assert pg_server.logs_in("postgres", old)
    assert {n: (pg_stack / n).read_bytes() for n in before} == before
    assert not (pg_stack / "backups/secrets/journal.json").exists()


def test_ctrl_c_while_the_program_starts_is_one_line(stack: Path) -> None:
    """Ctrl-C while the program's modules load (the interpreter's import log says when they do)."""
    env = {**os.environ, "NO_COLOR": "1"}
    for loading in ("yaml", "invoke.program", "rotation.backup", "rotation.tasks"):
        child = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "rotation", "--list"],
            cwd=stack,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stderr is not None
        for line in child.stderr:
            if line.split("|")[-1].strip() == loading:  # `import time: self | total | name`, once loaded
                break
        child.send_signal(signal.SIGINT)
        rest = "".join(line for line in child.stderr if not line.startswith("import time:"))
        child.wait(timeout=60)
        assert "Traceback" not in rest, (loading, rest)
        assert child.returncode in (0, 130), (loading, child.returncode, rest)
        assert child.returncode == 0 or "rotation: interrupted" in rest, rest


def start(root: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("ROTATION_ROOT", None)
    return subprocess.Popen(
        [sys.executable, "-m", "rotation", *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(child: subprocess.Popen[str], marker: str, timeout: float = 120) -> str:
    """The child's output up to the first line holding `marker` (it must come within `timeout`)."""
    assert child.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        seen += line
        if marker in line:
            return seen
    raise AssertionError(f"no '{marker}' in: {seen}")


def db_password(root: Path) -> str | None:
    return envfile.read(root / ".env").get("DB_PASSWORD")


def interrupted_restart(root: Path, cli: CLI) -> subprocess.Popen[str]:
    """A rotation of DB_PASSWORD whose restart gets Ctrl-C once db has been recreated."""
    assert cli("precheck", "rotate", "--secrets", "DB_PASSWORD", cwd=root).code == 0
    child = start(root, "restart", "--timeout", "120")
    read_until(child, "recreated")
    child.send_signal(signal.SIGINT)
    return child


@pytest.mark.engine
def test_ctrl_c_while_restart_waits_rolls_the_run_back_in_place(
    compose_stack: tuple[Path, str], docker_client: DockerClient, cli: CLI
) -> None:
    root, project = compose_stack
    old = db_password(root)
    child = interrupted_restart(root, cli)
    rest, _ = child.communicate(timeout=180)
    assert child.returncode == 130, rest
    assert "Traceback" not in rest
    assert "interrupted during restart: rolled back run" in rest, rest
    assert db_password(root) == old
    enginestack.wait_healthy(docker_client, project)
    assert env_of(docker_client, project, "db")["DB_PASSWORD"] == old
    assert "nothing to finish" in cli("recover", cwd=root).out


@pytest.mark.engine
def test_a_second_ctrl_c_leaves_the_rollback_to_recover(
    compose_stack: tuple[Path, str], docker_client: DockerClient, cli: CLI
) -> None:
    root, project = compose_stack
    old = db_password(root)
    child = interrupted_restart(root, cli)
    read_until(child, "interrupted: rolling back")
    child.send_signal(signal.SIGTERM)
    rest, _ = child.communicate(timeout=180)
    assert child.returncode == 130, rest
    assert "Traceback" not in rest
    said, step = rest.rstrip().splitlines()[-2:]
    assert said == "rotation: interrupted; to finish or roll back what was under way, run:", rest
    assert step.startswith("    ") and step.endswith("rotation recover"), rest  # as printed, it runs
    blocked = cli("rotate", "--secrets", "API_KEY", cwd=root)  # the interrupted run holds the next one back
    assert blocked.code == 4 and "recover" in blocked.err, blocked.err
    ran = cli("recover", cwd=root)
    assert ran.code == 0 and "rolled back the interrupted run" in ran.out, ran.text
    assert db_password(root) == old
    enginestack.wait_healthy(docker_client, project)
    assert env_of(docker_client, project, "api")["DB_PASSWORD"] == old

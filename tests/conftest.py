"""Fixtures for real things: a stack copied to disk, the `rotation` command, PostgreSQL, an engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "localai"


def unavailable(reason: str) -> None:
    """Skip on a developer's laptop; in CI (CI=true) a missing real dependency is a failure."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    """A copy of the bundled example stack, with its secrets-config.yaml, in a temporary folder."""
    root = tmp_path / "stack"
    shutil.copytree(EXAMPLE, root)
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


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root` with its bytes and mode, to prove that nothing changed."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }

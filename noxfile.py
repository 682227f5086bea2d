"""Test, lint and type-check sessions; plain `nox` runs them all."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.error_on_missing_interpreters = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite; extra arguments go to pytest (`nox -s tests -- -k envfile`)."""
    session.install(".[test]")
    session.run("pytest", "-rs", "--durations=15", *session.posargs)  # the slowest tests: where CI's time goes


@nox.session
def podman(session: nox.Session) -> None:
    """The engine tests again, on Podman's Docker-compatible API at PODMAN_HOST (`.ci/podman.sh`):
    the tool works on both engines. Not part of plain `nox`; `.ci/run` runs it."""
    if not os.environ.get("PODMAN_HOST"):
        session.error("PODMAN_HOST is not set: start Podman's API first (source .ci/podman.sh && podman_start)")
    session.install(".[test]")
    engine = {"DOCKER_HOST": os.environ["PODMAN_HOST"]}
    session.run("pytest", "-rs", "--durations=15", "-m", "engine", *session.posargs, env=engine)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install(".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the library, the tasks and this file with mypy (strict)."""
    session.install(".[typecheck]", "nox")
    session.run("mypy")

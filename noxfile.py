"""Test, lint and type-check sessions; plain `nox` runs them all."""

from __future__ import annotations

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

"""The `rotation` command: an Invoke program over the same tasks that `inv` finds in tasks.py."""

from __future__ import annotations

from invoke.program import Program

from . import __version__
from .tasks import namespace

__all__ = ["main", "program"]

program = Program(name="rotation", binary="rotation", namespace=namespace, version=__version__)


def main() -> None:
    """Entry point of the console script."""
    program.run()

"""`python -m rotation`, and the `rotation` console script: the command, interruptible from its first line.

The program's modules are imported inside `main`, so that Ctrl-C while they load ends it with one
line and exit code 130, as it does later, never with a traceback.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Load the program and run it. Inside a task, an interrupt is the task's to report (it knows
    what was under way); here it can only come while loading, parsing or ending, around the work."""
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        # Not sys.exit: CPython marks a KeyboardInterrupt raised in some C paths of an import as
        # unhandled even once caught, and then ends the process by SIGINT instead of with 130.
        # Nothing is open or under way yet, so there is nothing for a clean shutdown to finish.
        sys.stderr.write("rotation: interrupted while starting; nothing was done\n")
        sys.stderr.flush()
        os._exit(130)
    try:
        run()
    except KeyboardInterrupt:
        sys.stderr.write("rotation: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()

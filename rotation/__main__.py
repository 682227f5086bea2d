"""`python -m rotation`, and the `rotation` console script: the command, interruptible from its first line.

The program's modules are imported inside `main`, so that Ctrl-C while they load ends it with one
line and exit code 130, as it does later, never with a traceback.
"""

from __future__ import annotations

import signal
import sys


def main() -> None:
    """Load the program and run it. Inside a task, an interrupt is the task's to report (it knows
    what was under way); here it can only come while loading, parsing or ending, around the work."""
    # Ctrl-C is held back while the modules load: raised inside the import machinery it can land
    # in a callback that CPython reports as "Exception ignored" and swallows, or in a C path that
    # marks it unhandled once caught. Held, it is raised on release, before anything is done.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    from .cli import main as run

    started = False
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        started = True
        run()
    except KeyboardInterrupt:
        sys.stderr.write(
            "rotation: interrupted\n" if started else "rotation: interrupted while starting; nothing was done\n"
        )
        sys.exit(130)
    finally:
        # The work is over, its exit code decided. A Ctrl-C from here on has nothing to interrupt:
        # left to the handler it would raise where nothing catches it, and once the interpreter
        # has reset its handlers on the way out it would kill the process instead of letting it
        # exit with that code. CPython leaves an ignored signal ignored through that reset.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    main()

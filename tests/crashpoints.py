"""Kill a rotation or restore at a chosen step boundary of its commit, as `kill -9` would.

The child process wraps every step of `journal.commit` and its close: the journal write, each
staged copy, each database's committed password change, each new Swarm secret version, each
secret store's new version, each stack file, the journal's removal and the staged copies'
removal. It SIGKILLs itself before step N (after it, for a database change, a Swarm secret or a
store write, which is the moment that system is new and no file is). With N past the last step
it finishes and prints how many steps there were.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import os, signal, sys
from pathlib import Path
from rotation import journal
from rotation.engines import swarm
from rotation.targets import postgres, vault
from rotation.config import load
from rotation.runs import restore, rotate
from rotation.stack import Stack

root, limit, operation, argument = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
steps = 0

def step():
    global steps
    if steps >= limit:
        os.kill(os.getpid(), signal.SIGKILL)
    steps += 1

def before(real):
    def wrapped(*args, **kwargs):
        step()
        return real(*args, **kwargs)
    return wrapped

def after(real):
    def wrapped(*args, **kwargs):
        result = real(*args, **kwargs)
        step()
        return result
    return wrapped

for name in ("write_atomic", "write_stack_file", "remove_file", "remove_tree"):
    setattr(journal, name, before(getattr(journal, name)))
for kind in (postgres.DirectDatabase, postgres.ContainerDatabase):
    kind.set_password = after(kind.set_password)
vault.Vault.write = after(vault.Vault.write)
swarm.SwarmEngine.create_secret = after(swarm.SwarmEngine.create_secret)

stack = Stack(root, load(root / "secrets-config.yaml"))
if operation == "rotate":
    rotate(stack, argument.split(","))
else:
    restore(stack, argument)
print(f"steps={steps}")
"""


def run(
    root: Path, limit: int, operation: str, argument: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the child: `operation` is rotate (argument: secrets) or restore (argument: backup id)."""
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(limit), operation, argument],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def count(root: Path, operation: str, argument: str, env: dict[str, str] | None = None) -> int:
    """How many steps the operation has, by running it to the end (on a copy the caller throws away)."""
    done = run(root, 10**6, operation, argument, env)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().rsplit("steps=", 1)[1])

"""A stack: its directory, its configuration, and what it holds (files, backups, lock, databases).

The edge where the tool meets one stack on disk; the use cases (`runs`, `pipeline`) work through it.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import envfile
from .backup import BackupStore, Run, RunStatus
from .config import Config, check_stack
from .engines import engine_for
from .fsio import locked, write_atomic
from .health import Snapshot
from .journal import pending, recover, stale
from .targets import LiveTarget, target_from_json
from .targets.postgres import Opener, opener

__all__ = ["LOCK", "STATE_BEFORE", "Stack", "merged_env"]

LOCK = ".lock"
STATE_BEFORE = "health-before.json"


@dataclass(frozen=True, slots=True)
class Stack:
    """A stack directory and the configuration that describes it."""

    root: Path
    config: Config
    lock_timeout: float = 60.0
    task: str = "rotation"
    waiting: Callable[[str], None] | None = None

    @property
    def databases(self) -> Opener:
        """How this stack's databases are reached: directly, or in their compose containers."""
        return opener(functools.cache(lambda: engine_for(self.root, self.config)))

    def target(self, entry: Mapping[str, Any]) -> LiveTarget:
        """The live target a journal or metadata entry of this stack describes."""
        return target_from_json(entry, self.databases)

    @property
    def store(self) -> BackupStore:
        """Where this stack's backups live."""
        return BackupStore.for_stack(self.root, self.config.backup.directory)

    @contextmanager
    def session(self) -> Iterator[str | None]:
        """Hold the stack's lock and first undo any interrupted run; yields what recovery did."""
        store = self.store
        store.prepare()
        holder = f"pid {os.getpid()} ({self.task}) since {time.strftime('%H:%M:%S')}"
        with locked(store.directory / LOCK, self.lock_timeout, holder, self.waiting):
            yield recover(store, self.target)

    def recover(self) -> str | None:
        """Undo an interrupted run before anything else; a no-op that writes nothing when there is none."""
        if pending(self.store) is None and not stale(self.store):
            return None
        with self.session() as recovered:
            return recovered

    def has_service(self, name: str) -> bool:
        """Whether the compose project has a service (or container_name) `name`."""
        services = engine_for(self.root, self.config).services()
        return name in services or any(s.container_name == name for s in services.values())

    def open_run(self, snapshot: Snapshot) -> Run:
        """Start a run for a pipeline: a backup directory holding the pre-rotation health state."""
        run = self.store.create("rotation", [], status=RunStatus.PLANNED)
        write_atomic(run.path / STATE_BEFORE, json.dumps(snapshot.to_json(), indent=2).encode())
        return run

    def run(self, ident: str | None) -> Run | None:
        """The run named by `ident` (this pipeline's), else the latest rotation that got as far as its files."""
        return self.store.get(ident) if ident else self.store.latest_rotation()

    def values(self) -> dict[str, str | None]:
        """Every key of the stack's env files and its value now (the first listed file wins)."""
        return merged_env(check_stack(self.config, self.root))

    def values_in(self, run: Run) -> dict[str, str | None]:
        """The same, as the run's backup holds them: the values before the run."""
        return merged_env({name: envfile.from_bytes(run.read(name)) for name in run.files})

    def state_before(self, run: Run | None) -> Snapshot | None:
        """The health state saved by the precheck of `run`, if it had one."""
        if run is None or not (run.path / STATE_BEFORE).is_file():
            return None
        return Snapshot.load(run.path / STATE_BEFORE)


def merged_env(files: Mapping[str, envfile.EnvFile]) -> dict[str, str | None]:
    """Every key of the env files and its value (the first listed file wins)."""
    merged: dict[str, str | None] = {}
    for parsed in reversed(list(files.values())):
        merged.update({key: parsed.get(key) for key in parsed.names()})
    return merged

"""A stack: its directory, its configuration, and what it holds (files, backups, lock, databases).

The edge where the tool meets one stack on disk; the use cases (`runs`, `pipeline`) work through it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import composefiles, envfile
from .backup import BackupStore, Run, RunStatus
from .config import Config, check_stack, find_config, load
from .engines import Engine, engine_for
from .errors import DatabaseError, EngineError, RecoveryError, RotationError, SelectionError, StoreError
from .fsio import locked, write_atomic
from .health import Snapshot
from .journal import pending, recover, stale
from .replacement import SWARM, Footprint, Strategy, strategy
from .targets import LiveTarget, opener, target_from_json
from .targets import store as configured_store
from .targets import stores as configured_stores

if TYPE_CHECKING:
    from .targets import Opener, Vault

__all__ = ["LOCK", "STATE_BEFORE", "Stack", "locate", "merged_env"]

LOCK = ".lock"
_HELD: set[Path] = set()  # the stack locks this process holds: a session within a session goes on holding it
STATE_BEFORE = "health-before.json"


@dataclass(frozen=True, slots=True)
class Stack:
    """A stack directory and the configuration that describes it."""

    root: Path
    config: Config
    lock_timeout: float = 60.0
    task: str = "rotation"
    waiting: Callable[[str], None] | None = None
    _made: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def engine(self) -> Callable[[], Engine]:
        """This stack's engine, made on first use (most commands never need one) and then kept: one
        engine per stack, so that what it learnt of the project (`compose config`, the containers'
        labels) is learnt once."""
        return self._engine

    def _engine(self) -> Engine:
        if "engine" not in self._made:
            self._made["engine"] = engine_for(self.root, self.config)
        engine: Engine = self._made["engine"]
        return engine

    def readers(self) -> composefiles.Readers:
        """Which service of the stack's compose files reads which variable, read from the files
        (no compose command, no engine), once."""
        if "readers" not in self._made:
            self._made["readers"] = composefiles.read(self.root, self.compose_files())
        readers: composefiles.Readers = self._made["readers"]
        return readers

    def strategies(self, services: Iterable[str]) -> dict[str, Strategy]:
        """How a restart would replace each of `services`, read from the compose files as the plan is:
        start-first where one declares it and can run twice; on Swarm, Swarm's own update."""
        if self.config.engine == "swarm":
            return dict.fromkeys(services, SWARM)
        prints = self.readers().footprints
        single = self.config.compose.single_writer
        return {name: strategy(prints.get(name, Footprint()), single, self.root) for name in services}

    def compose_files(self) -> tuple[str, ...]:
        """The compose files named for this stack (Swarm's stack files first); empty: compose's defaults."""
        if self.config.swarm is not None and self.config.swarm.files:
            return self.config.swarm.files
        return composefiles.named_files(self.root, self.config.compose.files, composefiles.dotenv(self.root))

    def env(self) -> dict[str, str | None]:
        """`values`, for `${VAR}` in what is not a secret (notification URLs): empty where the env
        files cannot be read, which a notification must survive."""
        try:
            return self.values()
        except RotationError:
            return {}

    @property
    def databases(self) -> Opener:
        """How this stack's databases are reached: directly, or in their compose containers."""
        return opener(self.engine)

    def target(self, entry: Mapping[str, Any]) -> LiveTarget:
        """The live target a journal or metadata entry of this stack describes."""
        return target_from_json(entry, self.databases, self.engine)

    def vault(self, raw: Mapping[str, Any]) -> Vault:
        """The configured secret store a journal or metadata entry names (any other is refused)."""
        return configured_store(self, raw, self.values())

    def vaults(self, env: Mapping[str, str | None] | None = None) -> list[Vault]:
        """Every configured secret store, its `${VAR}` settings resolved from `env` (default: the files now)."""
        return configured_stores(self, self.values() if env is None else env)

    @property
    def store(self) -> BackupStore:
        """Where this stack's backups live."""
        return BackupStore.for_stack(self.root, self.config.backup.directory)

    @contextmanager
    def session(self, run: str | None = None) -> Iterator[str | None]:
        """Hold the stack's lock and first undo any interrupted run; yields what recovery did. `run`
        names the run the holder works on, for whoever has to wait."""
        store = self.store
        store.prepare()
        lock = (store.directory / LOCK).absolute()
        if lock in _HELD:  # a restart whose rollback restores: this process holds it already
            yield None
            return
        of = f" of run {run}" if run else ""
        holder = f"pid {os.getpid()} ({self.task}{of}) since {time.strftime('%H:%M:%S')}"
        with locked(lock, self.lock_timeout, holder, self.waiting):
            _HELD.add(lock)
            try:
                yield recover(store, self.target, self.vault)
            finally:
                _HELD.discard(lock)

    def recover_first(self, *, read_only: bool) -> tuple[str | None, str | None]:
        """Deal with an interrupted run before a task: (what recovery did, why it is still pending).

        When the recovery needs a database, engine or secret store that is down, a read-only task may go on
        (the second item says why; `recover` completes it later); a task that would write is
        refused with a `RecoveryError` whose step is `recover`.
        """
        try:
            return self.recover(), None
        except (DatabaseError, EngineError, RecoveryError, StoreError) as exc:
            if not read_only:
                why = f"an interrupted run must be finished before anything else, and that failed: {exc}"
                if exc.steps:  # a rollback that failed: its steps by hand finish it
                    raise RecoveryError(why, steps=exc.steps) from None
                raise RecoveryError(f"{why}. Once that is fixed, run:", steps=["recover"]) from None
            return None, f"an interrupted run is pending ({exc})"

    def recover(self) -> str | None:
        """Undo an interrupted run before anything else; a no-op that writes nothing when there is none."""
        if pending(self.store) is None and not stale(self.store):
            return None
        with self.session() as recovered:
            return recovered

    def has_service(self, name: str) -> bool:
        """Whether the compose project has a service (or container_name) `name`."""
        services = self.engine().services()
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


def locate(root: Path, explicit: str | None, bundled: Path) -> tuple[Config, bool]:
    """The configuration for the stack at `root` and whether it is the bundled one: the stack is
    found, not assumed, so a directory with neither a configuration nor the bundled one's files is
    a `SelectionError` saying how to point at a stack."""
    if not root.is_dir():
        raise SelectionError(f"stack root {root} is not a directory (rotation.root / ROTATION_ROOT)")
    path = find_config(root, explicit)
    if path is not None:
        return load(path), False
    config = load(bundled)
    listed = sorted({name for spec in config.secrets.values() for name in spec.files})
    if not any((root / name).is_file() for name in listed):
        raise SelectionError(
            f"no stack found in {root}: no secrets-config.yaml (or scripts/secrets-config.yaml) and none of "
            f"the files of the local AI stack ({', '.join(listed)}). Run it inside your stack, or point at one "
            "with ROTATION_ROOT=DIR, rotation.root in an Invoke config file (-f FILE), or --config FILE"
        )
    return config, True


def merged_env(files: Mapping[str, envfile.EnvFile]) -> dict[str, str | None]:
    """Every key of the env files and its value (the first listed file wins)."""
    merged: dict[str, str | None] = {}
    for parsed in reversed(list(files.values())):
        merged.update({key: parsed.get(key) for key in parsed.names()})
    return merged

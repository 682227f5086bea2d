"""The rotate and restore use cases: lock, recover, plan, back up, commit, record."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import envfile
from .backup import BackupStore, Run, RunStatus
from .config import check_stack
from .errors import BackupError, RotationError, SelectionError
from .fsio import remove_tree
from .generate import Secret
from .journal import LiveChange, commit
from .plan import Plan, make_plan, render_files
from .stack import Stack, merged_env
from .targets.postgres import PostgresLive, resolved

__all__ = ["RestoreResult", "RotationResult", "restore", "rotate"]

log = logging.getLogger(__name__)
PRECHECK_FRESH = 3600  # seconds for which a precheck run on its own is adopted by the next rotate
# A run in these states has its new values live: a failed restart or verify rolls it back.


@dataclass(frozen=True, slots=True)
class RotationResult:
    """What a rotation did, or would do for a dry run."""

    plan: Plan
    backup: Run | None
    database: tuple[str, ...]
    pruned: tuple[str, ...]
    recovered: str | None
    dry_run: bool

    @property
    def accepted_data_loss(self) -> tuple[str, ...]:
        """The rotated keys that encrypt stored data: rotating them was accepted with --accept-data-loss."""
        return tuple(c.name for c in self.plan.changes if c.spec.encrypts_data)


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a restore did, or would do for a dry run."""

    restored: Run
    undo: Run | None
    changed: tuple[str, ...]
    database: tuple[str, ...]
    recovered: str | None
    dry_run: bool


def same_files(root: Path, names: Sequence[str]) -> dict[str, str]:
    """Each name to the first of `names` that reaches the same real file (links such as
    `supabase/docker/.env -> ../../.env` are common in real stacks)."""
    first: dict[Path, str] = {}
    return {name: first.setdefault((root / name).resolve(), name) for name in names}


def _database_changes(stack: Stack, plan: Plan, files: dict[str, envfile.EnvFile]) -> list[LiveChange]:
    env = merged_env(files)
    changes = []
    for change in plan.changes:
        for target in change.spec.apply:
            if change.old is None:
                raise SelectionError(f"{change.name}: no current value in {change.spec.files[0]} to log in with")
            if target.optional and target.container and not stack.has_service(target.container):
                log.warning("%s: no service %s in this stack; that database is skipped", change.name, target.container)
                continue
            live = PostgresLive(resolved(target, env), stack.databases)
            changes.append(LiveChange(change.name, change.spec.files[0], live, change.old, change.new))
    return changes


def rotate(
    stack: Stack,
    selection: Sequence[str] | None = None,
    *,
    accept_data_loss: bool = False,
    skip_backup: bool = False,
    dry_run: bool = False,
    run: str | None = None,
) -> RotationResult:
    """Rotate `selection` (None: every auto_rotate secret) across files and databases, all or nothing."""
    files = check_stack(stack.config, stack.root)
    plan = _plan(stack, files, selection, accept_data_loss)
    if dry_run:
        probes = tuple(c.target.check(c.current, c.secret) for c in _database_changes(stack, plan, files))
        return RotationResult(plan, None, probes, (), None, True)
    with stack.session() as recovered:
        # Read again under the lock: another run may have changed the files while we waited.
        files = check_stack(stack.config, stack.root)
        plan = _plan(stack, files, selection, accept_data_loss)
        databases = _database_changes(stack, plan, files)
        store = stack.store
        backup = _open_run(store, run, plan)
        try:
            commit(store, backup, render_files(plan, files, same_files(stack.root, plan.files)), databases)
        except RotationError as exc:
            store.update(backup, status=RunStatus.FAILED, error=str(exc))
            raise
        backup = store.update(
            backup,
            status=RunStatus.APPLIED,
            rotated_secrets=list(plan.names),
            affected_services=list(plan.services),
            database=[c.to_json() for c in databases],
        )
        if skip_backup:
            remove_tree(backup.path)
        pruned = store.prune(stack.config.backup.retention_days, keep=[] if skip_backup else [backup.id])
        return RotationResult(
            plan,
            None if skip_backup else backup,
            tuple(c.target.label for c in databases),
            tuple(pruned),
            recovered,
            False,
        )


def _plan(stack: Stack, files: dict[str, envfile.EnvFile], selection: Sequence[str] | None, accept: bool) -> Plan:
    plan = make_plan(stack.config, files, selection, accept)
    if not plan.changes:
        raise SelectionError("nothing to rotate: no secret has auto_rotate set; name some with --secrets")
    return plan


def _open_run(store: BackupStore, run: str | None, plan: Plan) -> Run:
    """The run a precheck opened for this rotation, given its files, or a new backup.

    In one pipeline the precheck's run comes by id. A precheck run on its own just before (the
    newest backup, still planned, under PRECHECK_FRESH seconds old) is adopted as well, so a
    later verify compares with it; an older one says too little about the stack now.
    """
    if run is not None:
        opened: Run | None = store.get(run)
    else:
        newest = store.all()[-1:]
        opened = newest[0] if newest and time.time() - newest[0].created < PRECHECK_FRESH else None
    if opened is not None and opened.kind == "rotation" and opened.status is RunStatus.PLANNED and not opened.files:
        return store.attach(opened, plan.files)
    return store.create("rotation", plan.files)


def restore(stack: Stack, ident: str | None = None, *, dry_run: bool = False) -> RestoreResult:
    """Put back the files (and database passwords) of backup `ident`, or of the latest rotation."""
    store = stack.store
    backup = _chosen(store, ident)
    wanted = {name: backup.read(name) for name in backup.files}
    for name in wanted:
        if not (stack.root / name).resolve().is_relative_to(stack.root.resolve()):
            raise BackupError(f"backup {backup.id}: '{name}' lies outside the stack root; refusing to write it")
    if dry_run:
        return RestoreResult(backup, None, tuple(_differs(stack.root, wanted)), (), None, True)
    with stack.session() as recovered:
        changed = _differs(stack.root, wanted)
        current = {n: envfile.read(stack.root / n) for n in wanted if (stack.root / n).is_file()}
        databases = _restored_databases(stack, backup, current)
        undo = store.create(
            "pre-restore",
            list(current),
            restored_from=backup.id,
            rotated_secrets=list(backup.rotated_secrets),
            affected_services=list(backup.affected_services),
            database=list(backup.database),
        )
        try:
            commit(store, undo, wanted, databases)
        except RotationError as exc:
            store.update(undo, status=RunStatus.FAILED, error=str(exc))
            raise
        undo = store.update(undo, status=RunStatus.APPLIED)
        return RestoreResult(backup, undo, tuple(changed), tuple(c.target.label for c in databases), recovered, False)


def _chosen(store: BackupStore, ident: str | None) -> Run:
    if ident:
        return store.get(ident)
    latest = store.latest_rotation()
    if latest is None:
        raise SelectionError(f"--latest: no rotation backup in {store.directory}")
    return latest


def _differs(root: Path, wanted: dict[str, bytes]) -> list[str]:
    changed = []
    for name, data in wanted.items():
        path = root / name
        if not path.is_file() or path.read_bytes() != data:
            changed.append(name)
    return changed


def _restored_databases(stack: Stack, backup: Run, current: dict[str, envfile.EnvFile]) -> list[LiveChange]:
    changes = []
    for entry in backup.database:
        name, secret = entry["file"], entry["secret"]
        old = envfile.from_bytes(backup.read(name)).get(secret)
        now = current[name].get(secret) if name in current else None
        if old is None or now is None or old == now:
            continue
        changes.append(LiveChange(secret, name, stack.target(entry), Secret(now), Secret(old)))
    return changes

"""The rotate and restore use cases: lock, recover, plan, back up, commit, record."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import envfile, schedule, targets
from .backup import BackupStore, Run, RunStatus
from .certificates import CertificateSpec, described, expiries, inspect, issue
from .config import Config, check_stack, unavailable
from .errors import BackupError, LockedError, RotationError, SelectionError, Step, StoreError, UnsafeValue
from .fsio import remove_tree
from .generate import Secret
from .journal import LiveChange, commit
from .plan import (
    CertificateChange,
    KeyPhase,
    Plan,
    key_phases,
    make_plan,
    plan_from_values,
    render_files,
    with_certificates,
)
from .schedule import Due, key_moved
from .stack import Stack, merged_env

if TYPE_CHECKING:
    from .targets import StoreChange
from .validate import check_restored

__all__ = [
    "PullResult",
    "RestoreResult",
    "RotationResult",
    "key_sets",
    "overdue",
    "pull",
    "restore",
    "rotate",
    "selection",
]

log = logging.getLogger(__name__)
PRECHECK_FRESH = 3600  # seconds for which a precheck run on its own is adopted by the next rotate
# A run in these states has its new values live: a failed restart or verify rolls it back.


class _Written:
    """What follows a run that wrote a plan's values: its undo (from the backup) and the restart."""

    __slots__ = ()
    plan: Plan
    backup: Run | None
    dry_run: bool

    @property
    def undo_step(self) -> Step | None:
        """The restore that puts the files back as they were, when a backup was kept."""
        return _undo(self.backup)

    @property
    def next_step(self) -> Step | None:
        """The restart that makes the services read the new values; none for a dry run."""
        return None if self.dry_run else _restart(self.plan.services)


@dataclass(frozen=True, slots=True)
class RotationResult(_Written):
    """What a rotation did, or would do for a dry run."""

    plan: Plan
    backup: Run | None
    database: tuple[str, ...]
    pruned: tuple[str, ...]
    recovered: str | None
    dry_run: bool
    stores: tuple[str, ...] = ()  # each store's new version (a dry run: what its check found)
    reloaded: tuple[str, ...] = ()  # each server reloaded onto a new certificate, and what it presents

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
    stores: tuple[str, ...] = ()
    reloaded: tuple[str, ...] = ()  # each server reloaded onto the restored certificate

    @property
    def undo_step(self) -> Step | None:
        """The restore that undoes this one, from the backup it took first."""
        return _undo(self.undo)

    @property
    def next_step(self) -> Step | None:
        """The restart that makes the affected services read the restored values."""
        return None if self.dry_run else _restart(self.restored.affected_services)


@dataclass(frozen=True, slots=True)
class PullResult(_Written):
    """What a pull did, or would do: the store version it read and the changes that bring the files to it."""

    source: tuple[Mapping[str, Any], ...]  # {store, label, version} of each store read
    plan: Plan
    backup: Run | None
    database: tuple[str, ...]
    recovered: str | None
    dry_run: bool


def _undo(backup: Run | None) -> Step | None:
    return Step(f"restore --backup {backup.id}", why="undo") if backup else None


def _restart(services: Sequence[str]) -> Step | None:
    return Step("restart", why="recreates the services above so they read the new values") if services else None


def same_files(root: Path, names: Sequence[str]) -> dict[str, str]:
    """Each name to the first of `names` that reaches the same real file (links such as
    `supabase/docker/.env -> ../../.env` are common in real stacks)."""
    first: dict[Path, str] = {}
    return {name: first.setdefault((root / name).resolve(), name) for name in names}


def _store_changes(stack: Stack, files: dict[str, envfile.EnvFile], rendered: dict[str, bytes]) -> list[StoreChange]:
    """A new version for each configured store whose secret would not agree with the files afterwards."""
    after = merged_env({**files, **{name: envfile.from_bytes(data) for name, data in rendered.items()}})
    return targets.store_changes(stack, merged_env(files), after, rendered)


def _versions(changes: Sequence[StoreChange], written: dict[str, int]) -> list[dict[str, object]]:
    """What metadata.json keeps of each store write: where, and the versions before and after."""
    return [
        {"store": c.store.spec.to_json(), "label": c.label, "before": c.version, "after": written[c.label]}
        for c in changes
        if c.label in written
    ]


def overdue(stack: Stack) -> list[Due]:
    """What is due: secrets past their rotation_period, certificates near their expiry."""
    return schedule.due(stack.config, stack.store.all(), expiries=expiries(stack.root, stack.config.certificates))


def selection(stack: Stack, names: Sequence[str] | None, *, due: bool = False) -> list[str] | None:
    """The secrets a rotation takes: those named, or with `due` those overdue (empty: none is), or
    None for every auto_rotate secret."""
    if due and names:
        raise SelectionError("--due: rotate takes --due or --secrets, not both")
    return [d.name for d in overdue(stack)] if due else (list(names) if names else None)


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
        probes = tuple(c.target.check(c.current, c.secret) for c in targets.planned(stack, plan, files))
        env = merged_env(files)
        checks = tuple(vault.check(env) for vault in stack.vaults(env))
        return RotationResult(plan, None, probes, (), None, True, checks)
    with stack.session() as recovered:
        _refuse_unfinished(stack, run)
        # Read again under the lock: another run may have changed the files while we waited.
        files = check_stack(stack.config, stack.root)
        plan = _plan(stack, files, selection, accept_data_loss)
        backup, databases, written = _commit_plan(stack, plan, files, run, to_stores=True)
        reloaded = _reload_or_restore(stack, plan, backup)
        if skip_backup:
            remove_tree(backup.path)
        pruned = stack.store.prune(stack.config.backup.retention_days, keep=[] if skip_backup else [backup.id])
        return RotationResult(
            plan,
            None if skip_backup else backup,
            tuple(c.target.label for c in databases),
            tuple(pruned),
            recovered,
            False,
            tuple(f"{label}: version {version}" for label, version in written.items()),
            reloaded,
        )


def _reload_or_restore(stack: Stack, plan: Plan, backup: Run) -> tuple[str, ...]:
    """Reload every server that presents a rotated certificate and prove it presents the new one;
    if one does not, the run's backup goes back (files, databases, servers reloaded again) and the
    rotation fails saying what the server presented."""
    if not plan.certificates:
        return ()
    try:
        return tuple(
            line
            for change in plan.certificates
            for line in _reloaded(stack, change.spec, change.new.described.fingerprint)
        )
    except RotationError as exc:
        try:
            restore(stack, backup.id)
        except RotationError as undo:
            exc.add_context(f"putting backup {backup.id} back failed too: {undo}")
        else:
            exc.add_context(f"the old certificate and key are back (backup {backup.id}), and the servers reloaded them")
        raise


def _reloaded(stack: Stack, spec: CertificateSpec, fingerprint: str) -> list[str]:
    return targets.reload_and_prove(
        spec.reload, fingerprint, stack.env(), lambda service, sig: stack.engine().signal(service, sig)
    )


def _issued(stack: Stack, spec: CertificateSpec, reason: str) -> CertificateChange:
    """A new certificate for `spec`, its CA checked first; the stack must hold a certificate and key to replace."""
    old = described(stack.root, spec)
    missing = [name for name in spec.files if not (stack.root / name).is_file()]
    if old is None or missing:
        raise SelectionError(
            f"--secrets: {spec.name}: {', '.join(missing) or spec.cert} does not exist yet; a rotation replaces a "
            "certificate and key the stack already has (their mode and owner are kept)",
            key=f"secrets.{spec.name}",
        )
    return CertificateChange(spec, old, issue(stack.root, spec), reason)


def _commit_plan(
    stack: Stack, plan: Plan, files: dict[str, envfile.EnvFile], run: str | None, *, to_stores: bool, **recorded: Any
) -> tuple[Run, list[LiveChange], dict[str, int]]:
    """Back up, then change databases, stores (`to_stores`) and files all or nothing, and record the
    run as applied: the run, the database changes, and each store's new version."""
    databases = targets.planned(stack, plan, files)
    rendered = render_files(plan, files, same_files(stack.root, plan.files))
    env = {name: data for name, data in rendered.items() if name in files}
    stores = _store_changes(stack, files, env) if to_stores else []  # versions read now: the check-and-set
    store = stack.store
    backup = _open_run(store, run, plan)
    try:
        written = commit(store, backup, rendered, databases, stores)
    except RotationError as exc:
        store.update(backup, status=RunStatus.FAILED, error=str(exc))
        raise
    backup = store.update(
        backup,
        status=RunStatus.APPLIED,
        rotated_secrets=list(plan.names),
        affected_services=list(plan.services),
        phases=dict(plan.phases),
        database=[c.to_json() for c in databases],
        stores=_versions(stores, written),
        **recorded,
    )
    return backup, databases, written


def _plan(stack: Stack, files: dict[str, envfile.EnvFile], selection: Sequence[str] | None, accept: bool) -> Plan:
    certificates = stack.config.certificates
    rest = None if selection is None else [name for name in selection if name not in certificates]
    plan = make_plan(stack.config, files, rest, accept, readers=stack.readers(), key_moved=key_moved(stack.store.all()))
    if selection is None:  # a certificate the stack does not hold yet is left alone, as a missing secret is
        chosen = [(spec, "auto") for spec in certificates.values() if spec.auto_rotate]
        absent = [spec for spec, _ in chosen if not all((stack.root / name).is_file() for name in spec.files)]
        chosen = [(spec, why) for spec, why in chosen if spec not in absent]
        left = tuple(f"{spec.name} is left alone: the stack has no {' or '.join(spec.files)}" for spec in absent)
        plan = replace(plan, warnings=plan.warnings + left)
    else:
        chosen = [(certificates[name], "selected") for name in dict.fromkeys(selection) if name in certificates]
    plan = with_certificates(plan, [_issued(stack, spec, reason) for spec, reason in chosen])
    if not plan.changes and not plan.certificates:
        raise SelectionError(_nothing_to_rotate(stack.config, files))
    if stack.config.engine == "swarm":  # the stack files say which services there are: check before any change
        stack.engine().resolve(plan.services, "restart_services")
    return _with_strategies(stack, targets.prepared(stack, plan, files))


def _with_strategies(stack: Stack, plan: Plan) -> Plan:
    """`plan` with how a restart would replace each service it makes follow."""
    return replace(plan, strategies=stack.strategies(plan.services))


def key_sets(stack: Stack) -> list[KeyPhase]:
    """The stack's signing key sets that stand between phases, for `due`; none where its files cannot
    be read (`due` reads the run history, and a stack's files are `rotate`'s to judge)."""
    try:
        files = check_stack(stack.config, stack.root)
    except RotationError:
        return []
    return key_phases(stack.config, files, key_moved(stack.store.all()))


def _refuse_unfinished(stack: Stack, own: str | None) -> None:
    """One rotation at a time, whole: while the newest run's values are live but not yet verified (or
    rolled back), another rotation would mix its values into that run's restart and verify."""
    latest = stack.store.latest_rotation()
    if latest is None or not latest.status.live or latest.id == own:
        return
    names = ", ".join(latest.rotated_secrets[:6]) + (", ..." if len(latest.rotated_secrets) > 6 else "")
    finish = "recover" if latest.status is RunStatus.INTERRUPTED else "restart verify"
    raise LockedError(
        f"run {latest.id} ({names or 'no secret'}) is {latest.status.value} but not verified: another rotation "
        "now would mix its values into that run. Finish it first, or put it back:",
        steps=[
            Step(
                finish,
                why="finishes it" + ("" if finish == "recover" else " (`verify` alone once they were recreated)"),
            ),
            Step("restore --latest", why="or puts it back"),
        ],
    )


def _nothing_to_rotate(config: Config, files: Mapping[str, envfile.EnvFile]) -> str:
    """Why a rotation of every auto_rotate secret found none: none is set, or the stack cannot serve
    those that are, each named with the file at fault."""
    missing = unavailable(config, files)
    waiting = [s.name for s in config.secrets.values() if s.auto_rotate and s.type != "static"]
    if not waiting:
        return "nothing to rotate: no secret has auto_rotate set; name some with --secrets"
    why = "; ".join(f"{name}: {missing[name]}" for name in waiting if name in missing)
    if not why:
        return "nothing to rotate: every auto_rotate secret waits for one this stack cannot serve"
    return f"nothing to rotate: this stack cannot serve its auto_rotate secrets ({why}); fix the files or the config"


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


def restore(stack: Stack, ident: str | None = None, *, dry_run: bool = False, closes_run: bool = True) -> RestoreResult:
    """Put back the files (and database passwords) of backup `ident`, or of the latest rotation.

    A restore by hand closes the live run it puts back (`closes_run`), so that the next rotation may
    start; a rollback closes it itself, once the services are back on the old values.
    """
    store = stack.store
    backup = _chosen(store, ident)
    wanted = {name: backup.read(name) for name in backup.files}
    for name in wanted:
        if not (stack.root / name).resolve().is_relative_to(stack.root.resolve()):
            raise BackupError(f"backup {backup.id}: '{name}' lies outside the stack root; refusing to write it")
    pairs = _restored_certificates(stack, backup, wanted)
    env = {name: data for name, data in wanted.items() if not any(name in spec.files for spec, _ in pairs)}
    if dry_run:
        check_restored(stack.config, env, _current(stack.root, env), f"backup {backup.id}")
        return RestoreResult(backup, None, tuple(_differs(stack.root, wanted)), (), None, True)
    with stack.session() as recovered:
        changed = _differs(stack.root, wanted)
        current = _current(stack.root, env)
        check_restored(stack.config, env, current, f"backup {backup.id}")
        databases = _restored_databases(stack, backup, current)
        # A pull changed no store, so putting it back changes none: the store is the other host's.
        stores = [] if backup.pulled else _store_changes(stack, current, env)
        undo = store.create(
            "pre-restore",
            [*current, *(name for spec, _ in pairs for name in spec.files if (stack.root / name).is_file())],
            restored_from=backup.id,
            rotated_secrets=list(backup.rotated_secrets),
            affected_services=list(backup.affected_services),
            database=list(backup.database),
        )
        try:
            written = commit(store, undo, wanted, databases, stores)
        except RotationError as exc:
            store.update(undo, status=RunStatus.FAILED, error=str(exc))
            raise
        undo = store.update(undo, status=RunStatus.APPLIED, stores=_versions(stores, written))
        if closes_run and backup.status.live:  # its values are gone: it no longer holds the next rotation back
            store.update(backup, status=RunStatus.ROLLED_BACK, rollback_reason="restored")
        reloaded = tuple(line for spec, fingerprint in pairs for line in _reloaded(stack, spec, fingerprint))
        return RestoreResult(
            backup,
            undo,
            tuple(changed),
            tuple(c.target.label for c in databases),
            recovered,
            False,
            tuple(f"{label}: version {version}" for label, version in written.items()),
            reloaded,
        )


def _restored_certificates(stack: Stack, backup: Run, wanted: Mapping[str, bytes]) -> list[tuple[CertificateSpec, str]]:
    """The configured certificates the backup holds, each with the fingerprint it puts back. A
    backup is input like any other: its certificate must be one, and its key a private key."""
    found = []
    for spec in stack.config.certificates.values():
        if spec.cert not in wanted:
            continue
        from cryptography.hazmat.primitives.serialization import load_pem_private_key  # only for certificates

        source = f"backup {backup.id}: {spec.cert}"
        fingerprint = inspect(wanted[spec.cert], source).fingerprint
        try:
            load_pem_private_key(wanted.get(spec.key, b""), password=None)
        except (ValueError, TypeError):
            raise UnsafeValue(f"backup {backup.id}: {spec.key} is not an unencrypted PEM private key") from None
        found.append((spec, fingerprint))
    return found


def _chosen(store: BackupStore, ident: str | None) -> Run:
    if ident:
        return store.get(ident)
    latest = store.latest_rotation()
    if latest is None:
        raise SelectionError(f"--latest: no rotation backup in {store.directory}")
    return latest


def _current(root: Path, wanted: Mapping[str, bytes]) -> dict[str, envfile.EnvFile]:
    """The stack's files that a restore of `wanted` would overwrite, as they are now."""
    return {n: envfile.read(root / n) for n in wanted if (root / n).is_file()}


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
        target = targets.restored(stack, backup, entry)
        if target is not None:
            changes.append(LiveChange(secret, name, target, Secret(now), Secret(old)))
    return changes


def pull(
    stack: Stack,
    version: int | None = None,
    *,
    accept_data_loss: bool = False,
    dry_run: bool = False,
    run: str | None = None,
) -> PullResult:
    """Bring the stack's files (and databases) to the values of its secret store's current version,
    or `version`: a second host following the one that rotates. The same journal, backup and
    byte-preserving edits as a rotation; the store itself is only read."""
    if not stack.config.stores:
        raise SelectionError(f"pull: {stack.config.path} configures no secret store ('stores:')")
    if version is not None and len(stack.config.stores) > 1:
        raise SelectionError("--version: several stores are configured, and a version number belongs to one")
    files = check_stack(stack.config, stack.root)
    source, plan = _pulled(stack, files, version, accept_data_loss)
    if dry_run:
        probes = tuple(c.target.check(c.current, c.secret) for c in targets.planned(stack, plan, files))
        return PullResult(source, plan, None, probes, None, True)
    with stack.session() as recovered:
        files = check_stack(stack.config, stack.root)
        source, plan = _pulled(stack, files, version, accept_data_loss)
        if not plan.changes:
            return PullResult(source, plan, None, (), recovered, False)
        _refuse_unfinished(stack, run)
        backup, databases, _ = _commit_plan(stack, plan, files, run, to_stores=False, pulled=list(source))
        return PullResult(source, plan, backup, tuple(c.target.label for c in databases), recovered, False)


def _pulled(
    stack: Stack, files: dict[str, envfile.EnvFile], version: int | None, accept_data_loss: bool
) -> tuple[tuple[Mapping[str, Any], ...], Plan]:
    """Where the values come from (each store and the version read) and the plan to them."""
    values: dict[str, Secret] = {}
    sources: list[Mapping[str, Any]] = []
    for vault in stack.vaults(merged_env(files)):
        stored = vault.read(version)
        if not stored.version or not stored.data:
            at = f"version {version}" if version else "its current version"
            raise StoreError(f"{vault.label}: {at} holds nothing to pull; rotate on the first host first")
        unused = unavailable(stack.config, files)  # a key this stack does not hold need not be stored
        absent = [k for k in vault.spec.secrets if k not in stored.data and k not in unused]
        if absent:
            raise StoreError(
                f"{vault.label}: version {stored.version} has no {', '.join(absent)}; "
                "pull only a version that the first host's rotation wrote, or narrow 'secrets' for this store"
            )
        for name in (k for k in vault.spec.secrets if k in stored.data):
            value = stored.data[name]
            if name in values and values[name].reveal() != value:
                raise StoreError(f"{vault.label}: {name} differs from the value another configured store holds")
            values[name] = Secret(value)
        sources.append({"store": vault.spec.to_json(), "label": vault.label, "version": stored.version})
    reason = "from " + ", ".join(f"{s['label']} v{s['version']}" for s in sources)
    plan = plan_from_values(stack.config, files, values, reason, accept_data_loss, stack.readers())
    return tuple(sources), _with_strategies(stack, targets.prepared(stack, plan, files))

"""All-or-nothing changes to several files and live databases, and recovery when a run is killed.

Before anything changes, a journal names the run and the new file contents are staged in the
run's backup directory. The databases change first, then the secret stores, then the files;
only when all of them have is the journal removed. A journal found by a later command means the
run was interrupted: the stores get the old values back as a new version, the databases their
old passwords, and the files their backup, byte for byte.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import envfile
from .backup import BackupStore, Run, RunStatus
from .errors import Interrupted, RecoveryError, RotationError, StorageError, count
from .fsio import (
    ensure_private_dir,
    inside,
    read_bounded,
    refuse_shared,
    remove_file,
    remove_tree,
    write_atomic,
    write_stack_file,
)
from .generate import Secret
from .targets import LiveTarget, store_change

if TYPE_CHECKING:
    from .targets import StoreChange, Vault

__all__ = ["JOURNAL", "LiveChange", "Stores", "Targets", "commit", "pending", "recover", "stale"]

log = logging.getLogger(__name__)
JOURNAL = "journal.json"
STAGED = "staged"


@dataclass(frozen=True, slots=True)
class LiveChange:
    """One live target that moves from `current` to `new`; `file` is where the secret is read from."""

    secret: str
    file: str
    target: LiveTarget
    current: Secret
    new: Secret

    def to_json(self) -> dict[str, Any]:
        """What metadata and the journal keep of the change, by kind: never a value."""
        return {"kind": self.target.kind, "secret": self.secret, "file": self.file, "endpoint": self.target.to_json()}


Targets = Callable[[Mapping[str, Any]], LiveTarget]  # a journal or metadata entry -> its live target
Stores = Callable[[Mapping[str, Any]], "Vault"]  # a journal entry's store -> the configured store it names


def pending(store: BackupStore) -> dict[str, Any] | None:
    """The journal of an interrupted run, if there is one."""
    try:
        raw = read_bounded(store.directory / JOURNAL, 1 << 20)
    except FileNotFoundError:
        return None
    except StorageError as exc:
        raise RecoveryError(f"{exc}; the journal cannot be used: inspect it and the backups by hand") from None
    try:
        journal = json.loads(raw.decode("utf-8"))
    except ValueError:
        journal = None
    shaped = (
        isinstance(journal, dict)
        and isinstance(journal.get("run"), str)
        and isinstance(journal.get("files"), list)
        and isinstance(journal.get("database"), list)
        and all(isinstance(e, dict) and {"secret", "file", "endpoint"} <= set(e) for e in journal["database"])
        and isinstance(journal.get("stores", []), list)
        and all(_store_entry(e) for e in journal.get("stores", []))
    )
    if not shaped:
        raise RecoveryError(f"{store.directory / JOURNAL}: damaged journal; inspect it and the backups by hand")
    stored = [name for e in journal.get("stores", []) for name in e["keys"].values()]
    for name in [*journal["files"], *(e["file"] for e in journal["database"]), *stored]:
        inside(store.root, name, f"{store.directory / JOURNAL}")
    result: dict[str, Any] = journal
    return result


def _store_entry(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("store"), dict)
        and isinstance(entry.get("version"), int)
        and isinstance(entry.get("keys"), dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in entry["keys"].items())
    )


def commit(
    store: BackupStore,
    run: Run,
    files: Mapping[str, bytes],
    databases: Sequence[LiveChange],
    stores: Sequence[StoreChange] = (),
) -> dict[str, int]:
    """Change `databases`, then `stores`, then write `files`, so that a crash at any point can be
    undone from `run`; returns the version each store was written at, by label.

    A failure on the way (a database that refuses, a store that moved on, a file that cannot be
    written) is undone here, by the command that failed: stores and databases back on their old
    values, files back to the backup.
    """
    for name in files:  # before anything changes: a file that may not be written stops the run here
        refuse_shared(store.root, name)
    journal = {
        "run": run.id,
        "files": sorted(files),
        "database": [c.to_json() for c in databases],
        "stores": [c.to_json() for c in stores],
    }
    write_atomic(store.directory / JOURNAL, json.dumps(journal, indent=2).encode())
    staged = run.path / STAGED
    if staged.is_symlink():
        raise StorageError(f"{staged} is a symbolic link; refusing to stage new values through it")
    for name, data in files.items():
        target = inside(staged, name, str(staged))
        ensure_private_dir(target.parent)
        write_atomic(target, data)
    applied: list[LiveChange] = []
    versions: dict[str, int] = {}
    moved: list[StoreChange] = []
    unsettled: StoreChange | None = None
    written: list[str] = []
    in_flight: str | None = None  # the file being written: an interrupt may land before or after its rename
    try:
        for change in databases:
            try:
                change.target.apply(change.current, change.new, change.secret)
            except (RotationError, KeyboardInterrupt) as failure:
                if not getattr(failure, "unchanged", False):
                    applied += _if_changed(change)  # an engine that died mid-way leaves it unknown
                raise
            applied.append(change)
        for write in stores:
            try:
                versions[write.label] = write.apply()
            except (RotationError, KeyboardInterrupt) as failure:
                if not getattr(failure, "unchanged", False):
                    unsettled = write  # a connection lost mid-write: settled on the way back
                raise
            moved.append(write)
        done: set[Path] = set()
        for name, data in files.items():
            real = inside(store.root, name, "stack file").resolve()
            in_flight = name
            if real not in done:  # two names of one file (a link) are written once
                write_stack_file(store.root, name, data)
                done.add(real)
            written.append(name)
            in_flight = None
    except RecoveryError:
        raise  # a live target cannot say which value it holds: the journal stays for the next command
    except (RotationError, KeyboardInterrupt) as exc:
        if isinstance(exc, KeyboardInterrupt) and in_flight is not None:
            written.append(in_flight)  # a write that failed left the file as it was; an interrupted one may not have
        cause = exc if isinstance(exc, RotationError) else Interrupted("interrupted")
        undone = _undo(store, run, applied, moved, written, cause, unsettled)
        _close(store, run)
        if undone:
            cause.add_context(undone)
        raise cause from None
    _close(store, run)
    return versions


def _if_changed(change: LiveChange) -> list[LiveChange]:
    """`[change]` when its database is on the new password after a failed apply, to be put back;
    a database that cannot even say which password it has is a `RecoveryError`: the journal stays."""
    try:
        state = change.target.which({"old": change.current, "new": change.new})
    except RotationError as exc:
        raise RecoveryError(
            f"{change.target.label}: cannot tell whether {change.secret} changed ({exc}); the journal is kept "
            "and the next command of this tool finishes the job"
        ) from None
    if state is None:
        raise RecoveryError(
            f"{change.target.label}: {change.secret} is on neither the old nor the new value after a failed "
            "change; the journal is kept, and the backup holds the old value. Set the password by hand, "
            "then run the tool again"
        )
    return [change] if state == "new" else []


def _undo(
    store: BackupStore,
    run: Run,
    applied: Sequence[LiveChange],
    moved: Sequence[StoreChange],
    written: Sequence[str],
    cause: RotationError,
    unsettled: StoreChange | None = None,
) -> str:
    """Put back what a failed commit changed; what it did, in words. A store write whose outcome is
    unknown is settled first (read back; the old values written back if the new ones landed). If any
    of it fails, the rest is still put back, the journal stays for the next command, and the error says so."""
    parts: list[str] = []
    unsettled_why = None
    if unsettled is not None:
        try:
            if unsettled.settle():
                parts.append(f"the values in {unsettled.label} (as a new version)")
        except RotationError as exc:
            unsettled_why = f"{unsettled.label} could not be settled ({exc})"
    try:
        for write in reversed(moved):
            write.revert()
        for change in reversed(applied):
            change.target.revert(change.new, change.current, change.secret)
        for name in written:
            _put_back(store, run, name)
    except RotationError as failure:
        raise RecoveryError(
            f"{cause}; undoing it failed too: {failure}. The journal is kept: the next command of this "
            f"tool tries again, and the backup {run.path} holds the files as they were"
        ) from None
    parts += [f"the values in {', '.join(w.label for w in moved)} (as a new version)"] if moved else []
    parts += [f"the password in {', '.join(c.target.label for c in applied)}"] if applied else []
    parts += [f"{count(len(written), 'file')} already written"] if written else []
    if unsettled_why is not None:
        done = f"Put back {' and '.join(parts)}, but " if parts else ""
        raise RecoveryError(
            f"{cause}. {done}{unsettled_why}: whether it holds the new values is not known. The journal is kept; "
            "once the store answers, `recover` (or any command of this tool) settles it"
        )
    return f"Put back {' and '.join(parts)}: the stack is as it was before this command" if parts else ""


def _put_back(store: BackupStore, run: Run, name: str) -> None:
    path = inside(store.root, name, f"run {run.id}")
    if name in run.files:
        write_stack_file(store.root, name, run.read(name))
    else:  # the run was creating it (a restore of a file that had been deleted)
        remove_file(path)


def _close(store: BackupStore, run: Run) -> None:
    """End the run: the journal goes first, so a crash from here on leaves nothing to recover;
    only then the staged copies, which recovery needs for as long as the journal exists."""
    remove_file(store.directory / JOURNAL)
    remove_tree(run.path / STAGED)


def _value(data: bytes, secret: str, where: str) -> Secret:
    value = envfile.from_bytes(data).get(secret)
    if value is None:
        raise RecoveryError(f"{where}: {secret} is missing; cannot tell which value the live target has")
    return Secret(value)


def stale(store: BackupStore) -> list[Path]:
    """Staged new values left by a run killed after its journal was removed: committed, but copies."""
    found = sorted(store.directory.glob(f"*/{STAGED}")) if store.directory.is_dir() else []
    return found if found and pending(store) is None else []  # listed first: a live run writes its journal first


def recover(store: BackupStore, targets: Targets, stores: Stores) -> str | None:
    """Undo an interrupted run, if the journal shows one; returns what was done, for the user."""
    journal = pending(store)
    if journal is None:
        for leftover in stale(store):
            remove_tree(leftover)
        return None
    run = store.get(journal["run"])
    staged = run.path / STAGED
    reverted = _recover_stores(run, journal.get("stores", []), stores)
    for entry in journal["database"]:
        if not (staged / entry["file"]).is_file():
            continue  # killed while staging: no database was touched yet
        target = targets(entry)
        old = _value(run.read(entry["file"]), entry["secret"], f"backup {run.id}/{entry['file']}")
        new = _value(
            read_bounded(inside(staged, entry["file"], str(staged))), entry["secret"], f"{staged}/{entry['file']}"
        )
        state = target.which({"old": old, "new": new})
        if state is None:
            raise RecoveryError(
                f"{target.label}: it holds neither the old nor the new {entry['secret']}; "
                f"the interrupted run {run.id} cannot be reverted automatically. Its backup is kept in {run.path}"
            )
        if state == "new":
            target.revert(new, old, entry["secret"])
            reverted.append(f"password in {target.label}")
    for name in journal["files"]:
        _put_back(store, run, name)
    store.update(run, status=RunStatus.ROLLED_BACK, rollback_reason="interrupted; reverted by the next command")
    _close(store, run)
    where = f" and the {', '.join(reverted)}" if reverted else ""
    restored = count(len(journal["files"]), "file")
    return f"recovered an interrupted run ({run.id}): restored {restored}{where} from its backup"


def _recover_stores(run: Run, entries: Sequence[Mapping[str, Any]], stores: Stores) -> list[str]:
    """Put each store the interrupted run wrote back on the old values, as a newer version."""
    staged = run.path / STAGED
    reverted = []
    for entry in entries:
        keys: Mapping[str, str] = entry["keys"]
        if not all((staged / name).is_file() for name in keys.values()):
            continue  # killed while staging: no store was touched yet
        vault = stores(entry["store"])
        old = {k: _value(run.read(f), k, f"backup {run.id}/{f}") for k, f in keys.items()}
        new = {k: _value(read_bounded(inside(staged, f, str(staged))), k, f"{staged}/{f}") for k, f in keys.items()}
        change = store_change(vault, entry["version"], keys, old, new)
        state = change.state()
        if state is None:
            raise RecoveryError(
                f"{vault.label}: its current version holds neither the old nor the new values of "
                f"{', '.join(keys)} (another writer?); the interrupted run {run.id} cannot be reverted "
                f"automatically. Its backup is kept in {run.path}"
            )
        if state == "new":
            change.revert()
            reverted.append(f"values in {vault.label} (as a new version)")
    return reverted

"""All-or-nothing changes to several files and live databases, and recovery when a run is killed.

Before anything changes, a journal names the run and the new file contents are staged in the
run's backup directory. Only when every database and every file has changed is the journal
removed. A journal found by a later command means the run was interrupted: the databases are
put back on their old passwords and the files back to the backup, byte for byte.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import envfile
from .backup import BackupStore, Run, RunStatus
from .errors import DatabaseError, RecoveryError, RotationError, StorageError
from .fsio import ensure_private_dir, inside, remove_file, remove_tree, write_atomic, write_stack_file
from .generate import Secret
from .targets import LiveTarget

__all__ = ["JOURNAL", "LiveChange", "Targets", "commit", "pending", "recover", "stale"]

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


def pending(store: BackupStore) -> dict[str, Any] | None:
    """The journal of an interrupted run, if there is one."""
    try:
        raw = (store.directory / JOURNAL).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        journal = json.loads(raw)
    except ValueError:
        journal = None
    shaped = (
        isinstance(journal, dict)
        and isinstance(journal.get("run"), str)
        and isinstance(journal.get("files"), list)
        and isinstance(journal.get("database"), list)
        and all(isinstance(e, dict) and {"secret", "file", "endpoint"} <= set(e) for e in journal["database"])
    )
    if not shaped:
        raise RecoveryError(f"{store.directory / JOURNAL}: damaged journal; inspect it and the backups by hand")
    for name in [*journal["files"], *(e["file"] for e in journal["database"])]:
        inside(store.root, name, f"{store.directory / JOURNAL}")
    result: dict[str, Any] = journal
    return result


def commit(
    store: BackupStore,
    run: Run,
    files: Mapping[str, bytes],
    databases: Sequence[LiveChange],
) -> None:
    """Change `databases`, then write `files`, so that a crash at any point can be undone from `run`.

    A failure on the way (a database that refuses, a file that cannot be written) is undone here,
    by the command that failed: databases back on their old passwords, files back to the backup.
    """
    journal = {"run": run.id, "files": sorted(files), "database": [c.to_json() for c in databases]}
    write_atomic(store.directory / JOURNAL, json.dumps(journal, indent=2).encode())
    staged = run.path / STAGED
    if staged.is_symlink():
        raise StorageError(f"{staged} is a symbolic link; refusing to stage new values through it")
    for name, data in files.items():
        target = inside(staged, name, str(staged))
        ensure_private_dir(target.parent)
        write_atomic(target, data)
    applied: list[LiveChange] = []
    written: list[str] = []
    try:
        for change in databases:
            try:
                change.target.apply(change.current, change.new, change.secret)
            except RotationError as failure:
                if not (isinstance(failure, DatabaseError) and failure.unchanged):
                    applied += _if_changed(change)  # an engine that died mid-way leaves it unknown
                raise
            applied.append(change)
        done: set[Path] = set()
        for name, data in files.items():
            real = inside(store.root, name, "stack file").resolve()
            if real not in done:  # two names of one file (a link) are written once
                write_stack_file(store.root, name, data)
                done.add(real)
            written.append(name)
    except RotationError as exc:
        undone = _undo(store, run, applied, written, exc)
        _close(store, run)
        if undone:
            raise type(exc)(f"{exc}. {undone}") from None
        raise
    _close(store, run)


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
    return [change] if state == "new" else []


def _undo(
    store: BackupStore,
    run: Run,
    applied: Sequence[LiveChange],
    written: Sequence[str],
    cause: RotationError,
) -> str:
    """Put back what a failed commit changed; what it did, in words. If that fails too, the journal
    stays for the next command to finish the job, and the error says so."""
    try:
        for change in reversed(applied):
            change.target.revert(change.new, change.current, change.secret)
        for name in written:
            _put_back(store, run, name)
    except RotationError as failure:
        raise RecoveryError(
            f"{cause}; undoing it failed too: {failure}. The journal is kept: the next command of this "
            f"tool tries again, and the backup {run.path} holds the files as they were"
        ) from None
    parts = [f"the password in {', '.join(c.target.label for c in applied)}"] if applied else []
    parts += [f"{len(written)} files already written"] if written else []
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
        raise RecoveryError(f"{where}: {secret} is missing; cannot tell which password the database has")
    return Secret(value)


def stale(store: BackupStore) -> list[Path]:
    """Staged new values left by a run killed after its journal was removed: committed, but copies."""
    found = sorted(store.directory.glob(f"*/{STAGED}")) if store.directory.is_dir() else []
    return found if found and pending(store) is None else []  # listed first: a live run writes its journal first


def recover(store: BackupStore, targets: Targets) -> str | None:
    """Undo an interrupted run, if the journal shows one; returns what was done, for the user."""
    journal = pending(store)
    if journal is None:
        for leftover in stale(store):
            remove_tree(leftover)
        return None
    run = store.get(journal["run"])
    staged = run.path / STAGED
    reverted = []
    for entry in journal["database"]:
        if not (staged / entry["file"]).is_file():
            continue  # killed while staging: no database was touched yet
        target = targets(entry)
        old = _value(run.read(entry["file"]), entry["secret"], f"backup {run.id}/{entry['file']}")
        new = _value(
            inside(staged, entry["file"], str(staged)).read_bytes(), entry["secret"], f"{staged}/{entry['file']}"
        )
        state = target.which({"old": old, "new": new})
        if state is None:
            raise RecoveryError(
                f"{target.label}: it holds neither the old nor the new {entry['secret']}; "
                f"the interrupted run {run.id} cannot be reverted automatically. Its backup is kept in {run.path}"
            )
        if state == "new":
            target.revert(new, old, entry["secret"])
            reverted.append(target.label)
    for name in journal["files"]:
        _put_back(store, run, name)
    store.update(run, status=RunStatus.ROLLED_BACK, rollback_reason="interrupted; reverted by the next command")
    _close(store, run)
    where = f" and the password in {', '.join(reverted)}" if reverted else ""
    return f"recovered an interrupted run ({run.id}): restored {len(journal['files'])} files{where} from its backup"

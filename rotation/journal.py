"""All-or-nothing changes to several files and live databases, and recovery when a run is killed.

Before anything changes, a journal names the run and the new file contents are staged in the
run's backup directory. Only when every database and every file has changed is the journal
removed. A journal found by a later command means the run was interrupted: the databases are
put back on their old passwords and the files back to the backup, byte for byte.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import envfile, postgres
from .backup import Backup, BackupStore
from .errors import DatabaseError, RecoveryError
from .fsio import ensure_private_dir, write_atomic
from .generate import Secret

__all__ = ["JOURNAL", "DbChange", "commit", "pending", "recover"]

log = logging.getLogger(__name__)
JOURNAL = "journal.json"
STAGED = "staged"


@dataclass(frozen=True, slots=True)
class DbChange:
    """One database whose roles move from `current` to `new`; `file` is where the secret is read from."""

    secret: str
    file: str
    point: postgres.Endpoint
    current: Secret
    new: Secret

    def to_json(self) -> dict[str, Any]:
        """What metadata and the journal keep of the change: never a value."""
        return {"secret": self.secret, "file": self.file, "endpoint": self.point.to_json()}


def pending(store: BackupStore) -> dict[str, Any] | None:
    """The journal of an interrupted run, if there is one."""
    try:
        raw = (store.directory / JOURNAL).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        journal: dict[str, Any] = json.loads(raw)
    except ValueError:
        raise RecoveryError(
            f"{store.directory / JOURNAL}: unreadable journal; inspect it and the backups by hand"
        ) from None
    return journal


def commit(
    store: BackupStore,
    run: Backup,
    files: Mapping[str, bytes],
    databases: Sequence[DbChange],
    connect: postgres.Opener,
) -> None:
    """Change `databases`, then write `files`, so that a crash at any point can be undone from `run`."""
    journal = {"run": run.id, "files": sorted(files), "database": [c.to_json() for c in databases]}
    write_atomic(store.directory / JOURNAL, json.dumps(journal, indent=2).encode())
    staged = run.path / STAGED
    for name, data in files.items():
        ensure_private_dir((staged / name).parent)
        write_atomic(staged / name, data)
    applied: list[DbChange] = []
    try:
        for change in databases:
            postgres.apply_password(connect(change.point), change.current, change.new, change.secret)
            applied.append(change)
    except DatabaseError:
        for change in reversed(applied):
            postgres.revert_password(connect(change.point), change.new, change.current, change.secret)
        _close(store, run)
        raise
    for name, data in files.items():
        write_atomic(store.root / name, data)
    _close(store, run)


def _close(store: BackupStore, run: Backup) -> None:
    shutil.rmtree(run.path / STAGED, ignore_errors=True)
    (store.directory / JOURNAL).unlink(missing_ok=True)


def _value(data: bytes, secret: str, where: str) -> Secret:
    value = envfile.from_bytes(data).get(secret)
    if value is None:
        raise RecoveryError(f"{where}: {secret} is missing; cannot tell which password the database has")
    return Secret(value)


def recover(store: BackupStore, connect: postgres.Opener) -> str | None:
    """Undo an interrupted run, if the journal shows one; returns what was done, for the user."""
    journal = pending(store)
    if journal is None:
        return None
    run = store.get(journal["run"])
    staged = run.path / STAGED
    reverted = []
    for entry in journal["database"]:
        if not (staged / entry["file"]).is_file():
            continue  # killed while staging: no database was touched yet
        point = postgres.Endpoint.from_json(entry["endpoint"])
        old = _value(run.read(entry["file"]), entry["secret"], f"backup {run.id}/{entry['file']}")
        new = _value((staged / entry["file"]).read_bytes(), entry["secret"], f"{staged}/{entry['file']}")
        db = connect(point)
        state = db.which({"old": old, "new": new})
        if state is None:
            raise RecoveryError(
                f"{point.label}: neither the old nor the new {entry['secret']} logs in as {point.user}; "
                f"the interrupted run {run.id} cannot be reverted automatically. Its backup is kept in {run.path}"
            )
        if state == "new":
            postgres.revert_password(db, new, old, entry["secret"])
            reverted.append(point.label)
    for name in journal["files"]:
        if name in run.files:
            write_atomic(store.root / name, run.read(name))
        else:  # the interrupted run was creating it (a restore of a file that had been deleted)
            (store.root / name).unlink(missing_ok=True)
    store.update(run, status="rolled-back", rollback_reason="interrupted; reverted by the next command")
    _close(store, run)
    where = f" and the password in {', '.join(reverted)}" if reverted else ""
    return f"recovered an interrupted run ({run.id}): restored {len(journal['files'])} files{where} from its backup"

"""Backups: one private directory per run, holding the files as they were and `metadata.json`.

Layout: `<directory>/secrets-backup-YYYYMMDD-HHMMSS[-N]/<relative path of each file>`,
directories 700, files 600, and a `.gitignore` that keeps the whole tree out of git.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from . import __version__
from .errors import BackupError, SelectionError, StorageError
from .fsio import ensure_private_dir, inside, read_bounded, remove_tree, write_atomic

__all__ = ["PREFIX", "BackupStore", "Kind", "Run", "RunStatus", "age", "local_time", "restarts"]

PREFIX = "secrets-backup-"
_ID = re.compile(r"^(?P<stamp>\d{8}-\d{6})(?:-(?P<n>\d+))?$")
METADATA = "metadata.json"
MAX_METADATA = 1 << 20  # bytes of one metadata.json; ours are a few KiB
MAX_NAMES = 10_000  # entries in one of its lists; a stack has dozens of secrets and services


class RunStatus(str, Enum):
    """Where a run got to. The values are what metadata.json has always held."""

    PLANNED = "planned"  # a precheck opened it
    APPLIED = "applied"  # databases and files hold the new values
    RESTARTED = "restarted"
    VERIFIED = "verified"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # a signal stopped its restart or verify, and undoing it in place did not finish
    UNKNOWN = "unknown"  # a status this version does not know

    @property
    def live(self) -> bool:
        """Whether the run's new values are in use: a failed restart or verify rolls it back, and no
        other rotation may start until it is verified or rolled back."""
        return self in (RunStatus.APPLIED, RunStatus.RESTARTED, RunStatus.INTERRUPTED)

    @property
    def succeeded(self) -> bool:
        """Whether the rotation took effect (for `due`: when each secret was last rotated)."""
        return self in (RunStatus.APPLIED, RunStatus.RESTARTED, RunStatus.VERIFIED)


Kind = Literal["rotation", "pre-restore"]


@dataclass(frozen=True, slots=True)
class Run:
    """One run of the tool on the stack: its backup directory, and its metadata.json read as typed
    fields (the file format is unchanged, so old backups still load)."""

    id: str
    path: Path
    metadata: Mapping[str, Any]

    @property
    def kind(self) -> Kind:
        """`rotation`, or `pre-restore` for the backup a restore takes first."""
        return "pre-restore" if self.metadata.get("kind") == "pre-restore" else "rotation"

    @property
    def status(self) -> RunStatus:
        """Where the run got to."""
        try:
            return RunStatus(self.metadata.get("status", "unknown"))
        except ValueError:
            return RunStatus.UNKNOWN

    @property
    def files(self) -> tuple[str, ...]:
        """The backed-up files, relative to the stack root."""
        return tuple(self.metadata.get("files", ()))

    @property
    def rotated_secrets(self) -> tuple[str, ...]:
        """The secrets the run rotated (a pre-restore backup: those of the run it restored)."""
        return tuple(self.metadata.get("rotated_secrets", ()))

    @property
    def affected_services(self) -> tuple[str, ...]:
        """The services that read them, as the configuration names them."""
        return tuple(self.metadata.get("affected_services", ()))

    @property
    def database(self) -> tuple[Mapping[str, Any], ...]:
        """The live databases the run changed: {secret, file, endpoint} each, never a value."""
        return tuple(self.metadata.get("database", ()))

    @property
    def stores(self) -> tuple[Mapping[str, Any], ...]:
        """The secret store versions the run wrote: {label, before, after} each, never a value."""
        return tuple(self.metadata.get("stores", ()))

    @property
    def pulled(self) -> tuple[Mapping[str, Any], ...]:
        """For a pull, the store versions it brought the files to: {store, label, version} each."""
        return tuple(self.metadata.get("pulled", ()))

    @property
    def phases(self) -> dict[str, str]:
        """Each signing key set the run moved, and to which phase (standby, rotate, revoke); what is
        malformed in the metadata is left out."""
        found = self.metadata.get("phases")
        if not isinstance(found, dict):
            return {}
        return {str(k): v for k, v in found.items() if v in ("standby", "rotate", "revoke") and isinstance(k, str)}

    @property
    def restored_from(self) -> str | None:
        """For a pre-restore backup, the run it restored."""
        found = self.metadata.get("restored_from")
        return str(found) if found else None

    @property
    def created(self) -> float:
        """When the backup was taken, as a Unix time, read from its id (local time)."""
        stamp = _ID.match(self.id)
        assert stamp is not None
        return time.mktime(time.strptime(stamp["stamp"], "%Y%m%d-%H%M%S"))

    def sort_key(self) -> tuple[str, int]:
        """Chronological order: the timestamp, then the same-second counter."""
        match = _ID.match(self.id)
        assert match is not None
        return match["stamp"], int(match["n"] or 1)

    def read(self, name: str) -> bytes:
        """The backed-up bytes of file `name`; a name or link that leads out of the backup is refused."""
        path = inside(self.path, name, f"backup {self.id}")
        try:
            return read_bounded(path)
        except FileNotFoundError:
            raise BackupError(f"backup {self.id}: {name} is missing") from None
        except StorageError as exc:
            raise BackupError(f"backup {self.id}: {exc}") from None


@dataclass(frozen=True, slots=True)
class BackupStore:
    """The backups of one stack, under `directory`."""

    root: Path
    directory: Path

    @classmethod
    def for_stack(cls, root: Path, directory: str) -> BackupStore:
        """The store of the stack at `root`, with `directory` relative to it."""
        return cls(root, root / directory)

    def _refuse_links(self) -> None:
        """No link anywhere between the stack root and the backup directory: it would lead writes out."""
        path = self.directory
        while path != self.root and path != path.parent:
            if path.is_symlink():
                raise StorageError(
                    f"{path} is a symbolic link; backups are never written through one. "
                    "Make it a real directory (or set backup.directory)"
                )
            path = path.parent

    def prepare(self) -> None:
        """Create the backup directory, private, with a `.gitignore` that ignores everything."""
        self._refuse_links()
        ensure_private_dir(self.directory)
        ignore = self.directory / ".gitignore"
        if not ignore.exists():
            write_atomic(ignore, b"# Secret backups: never commit them.\n*\n")

    def create(self, kind: str, files: Iterable[str], now: float | None = None, **fields: Any) -> Run:
        """Copy `files` from the stack into a new backup directory with a unique id."""
        self.prepare()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
        for n in range(1, 10_000):
            ident = stamp if n == 1 else f"{stamp}-{n}"
            path = self.directory / f"{PREFIX}{ident}"
            try:
                path.mkdir(mode=0o700)
                break
            except FileExistsError:
                continue
        else:
            raise BackupError(f"{self.directory}: no free backup id for {stamp}")
        names = sorted(set(files))
        self._copy(path, names)
        metadata = {
            "timestamp": ident,
            "kind": kind,
            "status": fields.pop("status", RunStatus.PLANNED),
            "rotated_secrets": [],
            "affected_services": [],
            "files": names,
            "version": __version__,
            **fields,
        }
        write_atomic(path / METADATA, _dump(metadata))
        return Run(ident, path, metadata)

    def _copy(self, path: Path, names: Iterable[str]) -> None:
        for name in names:
            target = inside(path, name, f"backup {path.name}")
            ensure_private_dir(target.parent)
            try:
                data = (self.root / name).read_bytes()
            except OSError as exc:
                raise BackupError(f"{self.root / name}: cannot back up ({exc.strerror})") from None
            write_atomic(target, data)

    def attach(self, backup: Run, files: Iterable[str]) -> Run:
        """Copy `files` from the stack into an existing backup, such as the run a precheck opened."""
        names = sorted(set(files) | set(backup.files))
        self._copy(backup.path, names)
        return self.update(backup, files=names)

    def update(self, backup: Run, **fields: Any) -> Run:
        """Rewrite the backup's metadata with `fields` changed, merged into what is on disk now (an
        earlier copy of `backup` may be stale: a rollback records its restart inside a task's run)."""
        metadata = {**self._current(backup), **fields}
        write_atomic(backup.path / METADATA, _dump(metadata))
        return Run(backup.id, backup.path, metadata)

    def _current(self, backup: Run) -> Mapping[str, Any]:
        """The backup's metadata as it is on disk now, else as `backup` last saw it."""
        try:
            current = json.loads(read_bounded(backup.path / METADATA, MAX_METADATA).decode("utf-8"))
        except (OSError, ValueError, StorageError):
            return backup.metadata
        return current if isinstance(current, dict) and not _malformed(current) else backup.metadata

    def record_restart(self, backup: Run, services: Iterable[str], at: float | None = None) -> Run:
        """Note in the run that `services` were recreated on purpose now, for `check --compare`."""
        entry = {"at": time.time() if at is None else at, "services": sorted(services)}
        return self.update(backup, restarts=[*restarts(self._current(backup)), entry])

    def recreated_since(self, moment: float) -> set[str]:
        """Every service a run recorded recreating at or after `moment`."""
        return {
            service
            for backup in self.all()
            for entry in restarts(backup.metadata)
            if entry["at"] >= moment
            for service in entry["services"]
        }

    def all(self) -> list[Run]:
        """Every sound backup, oldest first; damaged ones (see `damaged`) are left out."""
        return self._scan()[0]

    def damaged(self) -> dict[str, str]:
        """Run directories that cannot be used, by id, with what is wrong with each."""
        return self._scan()[1]

    def _scan(self) -> tuple[list[Run], dict[str, str]]:
        self._refuse_links()
        if not self.directory.is_dir():
            return [], {}
        found, damaged = [], {}
        for path in self.directory.iterdir():
            ident = path.name.removeprefix(PREFIX)
            if not path.name.startswith(PREFIX) or not _ID.match(ident):
                continue
            if path.is_symlink() or not path.is_dir():
                damaged[ident] = "not a directory of its own (a link?)"
                continue
            try:
                metadata = json.loads(read_bounded(path / METADATA, MAX_METADATA).decode("utf-8"))
            except StorageError as exc:
                damaged[ident] = str(exc).removeprefix(f"{path / METADATA}: ")
                continue
            except (OSError, ValueError) as exc:
                damaged[ident] = f"unreadable {METADATA} ({getattr(exc, 'strerror', None) or 'not JSON'})"
                continue
            problem = _malformed(metadata)
            if problem:
                damaged[ident] = f"{METADATA}: {problem}"
                continue
            found.append(Run(ident, path, metadata))
        return sorted(found, key=Run.sort_key), damaged

    def get(self, ident: str) -> Run:
        """The backup with id `ident`, or directory name `secrets-backup-<id>`."""
        wanted = Path(ident).name.removeprefix(PREFIX)
        found, damaged = self._scan()
        for backup in found:
            if backup.id == wanted:
                return backup
        if wanted in damaged:
            raise BackupError(f"backup {wanted} is damaged and cannot be used: {damaged[wanted]}")
        raise SelectionError(f"--backup: no backup '{ident}' in {self.directory} (see restore --list)")

    def latest_rotation(self) -> Run | None:
        """The newest rotation that got as far as backing up its files (not a precheck-only run)."""
        rotations = [b for b in self.all() if b.kind == "rotation" and b.files]
        return rotations[-1] if rotations else None

    def prune(self, retention_days: int, keep: Iterable[str] = (), now: float | None = None) -> list[str]:
        """Delete backups older than `retention_days`, never the newest one nor those in `keep`."""
        backups = self.all()
        limit = (time.time() if now is None else now) - retention_days * 86400
        protected = set(keep) | ({backups[-1].id} if backups else set())
        removed = []
        for backup in backups:
            if backup.id not in protected and backup.created < limit:
                remove_tree(backup.path)
                removed.append(backup.id)
        return removed


def restarts(metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's recorded restarts, each {at: Unix time, services: [...]}; malformed ones are ignored."""
    found = metadata.get("restarts")
    if not isinstance(found, list):
        return []
    return [
        e for e in found
        if isinstance(e, dict) and isinstance(e.get("at"), (int, float)) and _strings(e.get("services"))
    ]  # fmt: skip


def _strings(value: object) -> bool:
    return isinstance(value, list) and len(value) <= MAX_NAMES and all(isinstance(v, str) for v in value)


def _malformed(metadata: object) -> str | None:
    """What makes a backup's metadata unusable, or None: it is read from disk, so it is checked."""
    if not isinstance(metadata, dict):
        return "not a JSON object"
    for key in ("files", "rotated_secrets", "affected_services"):
        if key in metadata and not _strings(metadata[key]):
            return f"'{key}' is not a list of at most {MAX_NAMES} names"
    for name in metadata.get("files", []):
        posix = PurePosixPath(name)
        if not name or posix.is_absolute() or ".." in posix.parts:
            return f"'files' names '{name}', which leaves the stack root"
    database = metadata.get("database", [])
    if not isinstance(database, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("file"), str)
        and isinstance(e.get("secret"), str)
        and isinstance(e.get("endpoint"), dict)
        for e in database
    ):
        return "'database' is not a list of {file, secret, endpoint}"
    stores = metadata.get("stores", [])
    if not isinstance(stores, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("label"), str)
        and isinstance(e.get("before"), int)
        and isinstance(e.get("after"), int)
        for e in stores
    ):
        return "'stores' is not a list of {label, before, after}"
    pulled = metadata.get("pulled", [])
    if not isinstance(pulled, list) or not all(
        isinstance(e, dict) and isinstance(e.get("label"), str) and isinstance(e.get("version"), int) for e in pulled
    ):
        return "'pulled' is not a list of {label, version}"
    for key in ("kind", "status"):
        if key in metadata and not isinstance(metadata[key], str):
            return f"'{key}' is not text"
    return None


def _dump(metadata: Mapping[str, Any]) -> bytes:
    return (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode()


def age(seconds: float) -> str:
    """A short human age such as `3m`, `5h` or `12d`."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(max(seconds, 0))}s"


def local_time(stamp: float) -> str:
    """A Unix time as ISO 8601 local time with offset, for metadata and the audit log."""
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")

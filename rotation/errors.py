"""One exception hierarchy: every failure a user can act on, with a message for a person."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "EXIT_CODES",
    "BackupError",
    "ConfigError",
    "DataLossRefused",
    "DatabaseError",
    "EngineError",
    "EngineUnreachable",
    "EnvFileError",
    "GuardError",
    "HealthUnknown",
    "Interrupted",
    "LockedError",
    "RecoveryError",
    "RotationError",
    "SelectionError",
    "StorageError",
    "Step",
    "StoreError",
    "UnsafeValue",
    "count",
    "did_you_mean",
]

_LEADING_KEY = re.compile(r"^(--[a-z][a-z-]*|restart_services): ")  # the flag or setting a SelectionError names first

# Every exit code the program uses, for `rotation --help`, the README and scripts that branch on them.
EXIT_CODES = {
    0: "success (`due`: nothing is due)",
    1: "failure: unhealthy, a failed restart or verify (rolled back), a failed write or database change; "
    "`due`: something is due; `guard`: a secret was found, or a file it must check could not be read",
    2: "usage, configuration or input error: a bad flag, name or config, no stack found, a value from a store or "
    "backup that is not safe to write; nothing was changed",
    3: "refused: a key that encrypts stored data, without --accept-data-loss",
    4: "locked: another rotation or restore of this stack holds the lock",
    5: "recovery failed: an interrupted run or a rollback needs a person; every backup is kept",
    6: "the stack could not be looked at (the engine unreachable, the compose files unreadable): its health is unknown",
    130: "interrupted (Ctrl-C, SIGTERM): what was under way was undone, or `recover` finishes it",
}


@dataclass(frozen=True, slots=True)
class Step:
    """A command to run next, as data: one of this tool's tasks with its options (`restore --backup
    ID`), or, with `ours` false, another program's line (`cd STACK`, `docker compose up -d api`).
    Only the presenter spells ours, as the user invoked the tool; `why` says what it does."""

    words: str
    why: str = ""
    ours: bool = True


class RotationError(Exception):
    """Base of every error the tool reports to a user; the message says what, where and what to do.

    Besides the message, an error is data for scripts (`--json`): its `kind`, the `key` at fault (a
    configuration key such as `secrets.JWT_SECRET.length`, a flag such as `--secrets`, or a secret's
    name), the `file` at fault, a `hint` (what would be accepted), and the `steps` to run next (each a
    `Step`; a bare string is one of our tasks, such as `recover`). `unchanged`
    is true when the live system it came from is known to be as it was (the failure came before
    anything was asked to change), so nothing there needs undoing or checking.
    """

    exit_code = 1
    kind = "failure"
    unchanged = False
    _context: tuple[str, ...] = ()

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        file: object = None,
        steps: Iterable[Step | str] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.file = file
        self.steps = tuple(Step(step) if isinstance(step, str) else step for step in steps)
        self.hint = hint

    def add_context(self, text: str) -> None:
        """Say more about this error (what was done about it) without rebuilding it from its text."""
        self._context = (*self._context, text)

    def __str__(self) -> str:
        return ". ".join([super().__str__(), *self._context])

    def to_json(self) -> dict[str, object]:
        """The error for scripts: the one-line message and its parts (the presenter adds the steps,
        spelled); never a value."""
        return {
            "error": str(self),
            "kind": self.kind,
            "exit_code": self.exit_code,
            "key": self.key,
            "file": None if self.file is None else str(self.file),
            "hint": self.hint,
        }


class ConfigError(RotationError):
    """The configuration file is unreadable, malformed or does not fit the stack; `file` is the
    configuration (or the stack file) and `key` the setting at fault."""

    exit_code = 2
    kind = "config"

    def __init__(self, message: str, path: object = None, key: str | None = None) -> None:
        super().__init__(message, key=key, file=path)

    @property
    def path(self) -> object:
        """The file at fault (the name older callers use)."""
        return self.file


class SelectionError(RotationError):
    """A flag names a secret, service or backup that cannot be used as asked. Its message begins
    with what is at fault (`--secrets: ...`, `restart_services: ...`), which is its `key` unless
    one is given."""

    exit_code = 2
    kind = "selection"

    def __init__(
        self, message: str, *, key: str | None = None, steps: Iterable[Step | str] = (), hint: str | None = None
    ) -> None:
        named = _LEADING_KEY.match(message)
        super().__init__(message, key=key or (named[1] if named else None), steps=steps, hint=hint)


class UnsafeValue(RotationError):
    """A value that would enter the stack (generated, pulled or restored) is not safe to write: compose
    would misread it, it does not fit its spec, or it would lock a database. `key` names the secret."""

    exit_code = 2
    kind = "unsafe-value"

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message, key=key)
        self.unchanged = True


class DataLossRefused(RotationError):
    """Rotating a key that encrypts stored data was asked for without --accept-data-loss."""

    exit_code = 3
    kind = "data-loss-refused"


class EnvFileError(RotationError):
    """A `.env` file cannot be read or parsed."""

    kind = "env-file"


class StorageError(RotationError):
    """A file of the stack or of the tool's own state cannot be written, or may not be (a link out of the stack)."""

    kind = "storage"


class StoreError(RotationError):
    """A secret store (Vault, OpenBao) could not be reached, authenticated against, read or written.

    `unchanged` is true when the store is known to hold what it held (a refused or conflicting
    write), so nothing there needs undoing.
    """

    kind = "store"

    def __init__(self, message: str, *, unchanged: bool = False) -> None:
        super().__init__(message)
        self.unchanged = unchanged


class GuardError(RotationError):
    """The guard could not read what it must check (a file to scan, or the values to look for): it fails
    closed, as if it had found a secret."""

    kind = "guard"


class BackupError(RotationError):
    """A backup cannot be created, found or restored."""

    kind = "backup"


class LockedError(RotationError):
    """Another rotation holds the lock on this stack, or a run not yet finished holds the next one back."""

    exit_code = 4
    kind = "locked"


class DatabaseError(RotationError):
    """The live database could not be changed, checked or put back.

    `unchanged` is true when the database is known to be as it was (the transaction rolled back,
    or the change was put back), so nothing there needs undoing.
    """

    kind = "database"

    def __init__(self, message: str, *, unchanged: bool = False) -> None:
        super().__init__(message)
        self.unchanged = unchanged


class EngineError(RotationError):
    """The container engine or the compose command failed."""

    kind = "engine"


class EngineUnreachable(EngineError):
    """The container engine did not answer at all: health is unknown, which is not the same as unhealthy."""

    exit_code = 6
    kind = "engine-unreachable"


class HealthUnknown(EngineError):
    """The stack could not be looked at (its compose files could not be read): its health is not
    known, which a health gate must tell from unhealthy."""

    exit_code = 6
    kind = "health-unknown"


class Interrupted(RotationError):
    """SIGINT or SIGTERM arrived while the tool worked; what was under way has been undone, as the
    message says, or is left for `recover`."""

    exit_code = 130
    kind = "interrupted"


class RecoveryError(RotationError):
    """An interrupted run could not be completed or reverted automatically."""

    exit_code = 5
    kind = "recovery"


def count(number: int, noun: str) -> str:
    """`1 service`, `2 services`: a number with its noun in the right form (nouns here take an s)."""
    return f"{number} {noun}" + ("" if number == 1 else "s")


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """` (did you mean 'X'?)` for the closest known name, or nothing when none is close."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    if not close:
        close = [k for k in known if k.lower() == word.lower()]
    return f" (did you mean '{close[0]}'?)" if close else ""

"""One exception hierarchy: every failure a user can act on, with a message for a person."""

from __future__ import annotations

__all__ = [
    "BackupError",
    "ConfigError",
    "DataLossRefused",
    "DatabaseError",
    "EngineError",
    "EnvFileError",
    "LockedError",
    "RecoveryError",
    "RotationError",
    "SelectionError",
]


class RotationError(Exception):
    """Base of every error the tool reports to a user; the message says what, where and what to do."""

    exit_code = 1


class ConfigError(RotationError):
    """The configuration file is unreadable, malformed or does not fit the stack."""

    exit_code = 2


class SelectionError(RotationError):
    """A flag names a secret, service or backup that cannot be used as asked."""

    exit_code = 2


class DataLossRefused(RotationError):
    """Rotating a key that encrypts stored data was asked for without --accept-data-loss."""

    exit_code = 3


class EnvFileError(RotationError):
    """A `.env` file cannot be read, parsed or written."""


class BackupError(RotationError):
    """A backup cannot be created, found or restored."""


class LockedError(RotationError):
    """Another rotation holds the lock on this stack."""

    exit_code = 4


class DatabaseError(RotationError):
    """The live database could not be changed, checked or put back."""


class EngineError(RotationError):
    """The container engine or the compose command is unreachable or failed."""


class RecoveryError(RotationError):
    """An interrupted run could not be completed or reverted automatically."""

    exit_code = 5

"""Load and validate `secrets-config.yaml`, the contract with existing users.

`model` holds what a configuration is, `schema` the rules it must follow, `loading` how it is
found and read (YAML hardened), `stackfiles` how it meets a stack's env files, and `templates`
its `${VAR}` expansion. `load` checks the file on its own; `check_stack` checks it against a
stack's files. Both raise `ConfigError` with one line naming the file and the key at fault.
"""

from __future__ import annotations

from .loading import find_config, load
from .model import (
    ALPHABETS,
    DEFAULT_JWT_LIFETIME,
    MAX_RANDOM_LENGTH,
    MIN_RANDOM_LENGTH,
    PASSWORD_PLACEHOLDER,
    TYPES,
    AfterStatement,
    BackupSpec,
    ComposeSpec,
    Config,
    HttpProbe,
    JwtProbe,
    PostgresProbe,
    PostgresTarget,
    Probe,
    SecretSpec,
    SwarmSpec,
    VaultAuth,
    VaultSpec,
)
from .schema import parse_duration
from .stackfiles import check_stack, unavailable
from .templates import interpolate

__all__ = [
    "ALPHABETS",
    "DEFAULT_JWT_LIFETIME",
    "MAX_RANDOM_LENGTH",
    "MIN_RANDOM_LENGTH",
    "PASSWORD_PLACEHOLDER",
    "TYPES",
    "AfterStatement",
    "BackupSpec",
    "ComposeSpec",
    "Config",
    "HttpProbe",
    "JwtProbe",
    "PostgresProbe",
    "PostgresTarget",
    "Probe",
    "SecretSpec",
    "SwarmSpec",
    "VaultAuth",
    "VaultSpec",
    "check_stack",
    "find_config",
    "interpolate",
    "load",
    "parse_duration",
    "unavailable",
]

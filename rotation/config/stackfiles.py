"""The configuration against one stack's files: which listed env files exist, and which secrets
they cannot serve."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .. import envfile
from ..errors import ConfigError
from .model import Config


def check_stack(config: Config, root: Path) -> dict[str, envfile.EnvFile]:
    """Parse every listed file that the stack at `root` has, by relative path.

    A path that leads out of the root is a `ConfigError`, and so is a stack that has none of the
    listed files. A listed file that is missing, or that lacks a secret, is not an error here:
    `unavailable` says which secrets that leaves out, and only a rotation that names one fails.
    """
    parsed: dict[str, envfile.EnvFile] = {}
    real_root = root.resolve()
    listed = {name: spec.name for spec in config.secrets.values() for name in spec.files}
    for name, owner in listed.items():
        path = root / name
        try:
            inside = path.resolve().is_relative_to(real_root)
        except OSError:
            inside = False
        if not inside:
            raise ConfigError(f"{config.path}: secrets.{owner}.files: '{name}' leaves the stack root {root}")
        if path.is_file():
            parsed[name] = envfile.read(path)
    if not parsed:
        raise ConfigError(f"{config.path}: none of the listed files ({', '.join(listed)}) exists in {root}")
    return parsed


def unavailable(config: Config, files: Mapping[str, envfile.EnvFile]) -> dict[str, str]:
    """Each configured secret that this stack's files cannot serve, with the file at fault."""
    found: dict[str, str] = {}
    for spec in config.secrets.values():
        for name in spec.files:
            if name not in files:
                found[spec.name] = f"{name} does not exist"
                break
            if files[name].count(spec.name) == 0:
                found[spec.name] = f"{name} does not contain it"
                break
            if spec.type == "jwks" and not files[name].get(spec.name):
                # Supabase's .env.example ships `JWT_KEYS=` empty until utils/add-new-auth-keys.sh fills it
                found[spec.name] = f"it is empty in {name} (the stack has not opted in to the key set)"
                break
    return found

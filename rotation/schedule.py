"""Which secrets are due for rotation, from each one's `rotation_period` and the backup history."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .backup import Run, restarts
from .config import Config

__all__ = ["Due", "due", "key_moved", "last_rotated"]


@dataclass(frozen=True, slots=True)
class Due:
    """A secret past its rotation period; `last` is None when the history has no rotation of it."""

    name: str
    period: int
    last: float | None
    expires: float | None = None  # a certificate: its notAfter (it is due `period` before)


def last_rotated(backups: Sequence[Run]) -> dict[str, float]:
    """When each secret was last rotated by a run that succeeded, as a Unix time."""
    found: dict[str, float] = {}
    for backup in backups:
        if backup.kind == "rotation" and backup.status.succeeded:
            for name in backup.rotated_secrets:
                found[name] = max(found.get(name, 0.0), backup.created)
    return found


def key_moved(backups: Sequence[Run]) -> dict[str, float]:
    """When each signing key set's rotate phase last recreated its readers (for the revoke's wait), as
    a Unix time: from the restarts of runs that moved it to `rotate` and were not undone."""
    found: dict[str, float] = {}
    for backup in backups:
        if backup.kind != "rotation" or not backup.status.succeeded:
            continue
        moments = [entry["at"] for entry in restarts(backup.metadata)]
        for name, phase in backup.phases.items():
            if phase == "rotate" and moments:
                found[name] = max(found.get(name, 0.0), *moments)
    return found


def due(
    config: Config, backups: Sequence[Run], now: float | None = None, expiries: Mapping[str, float | None] = {}
) -> list[Due]:
    """Every secret with a `rotation_period` whose last rotation is older than that period, and every
    certificate within `renew_before` of its expiry (`expiries`: notAfter by name, None: no file yet)."""
    moment = time.time() if now is None else now
    history = last_rotated(backups)
    found = []
    for spec in config.secrets.values():
        if spec.rotation_period is None or spec.type == "static":
            continue
        last = history.get(spec.name)
        if last is None or moment - last >= spec.rotation_period:
            found.append(Due(spec.name, spec.rotation_period, last))
    for cert in config.certificates.values():
        expires = expiries.get(cert.name)
        if expires is not None and moment >= expires - cert.renew_before:
            found.append(Due(cert.name, cert.renew_before, history.get(cert.name), expires))
    return found

"""A Swarm secret as a live target: each rotation creates a new, versioned one.

Swarm secrets are immutable, so a new value is a new secret (`db_pw_v3` after `db_pw_v2`),
created before any file changes and named by the `${VAR}` the stack file's `name:` reads; the
next `restart` points the services at it under the same `/run/secrets/` path. The previous
version stays until `verify` passes (a rollback needs it) and is removed then; after a rollback
the new one is removed instead. Values travel only in the engine API's request body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..engines import Engine
from ..errors import RecoveryError
from ..generate import Secret
from ..interpolation import NAME

__all__ = ["SwarmSecretLive", "SwarmSecretPoint", "retire"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VARIABLE = re.compile(rf"^{NAME}$")


@dataclass(frozen=True, slots=True)
class SwarmSecretPoint:
    """One version of a stack secret: `name` (created by the change) replaces `previous`, and the
    env variable `variable` is what the stack file's `name: ${VAR}` reads."""

    stack: str
    key: str
    name: str
    previous: str
    variable: str

    @property
    def label(self) -> str:
        return f"swarm secret {self.name}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SwarmSecretPoint:
        """The inverse of `to_json`; read from the tool's own journal and metadata, so checked like input."""
        try:
            point = cls(*(str(raw[k]) for k in ("stack", "key", "name", "previous", "variable")))
        except (KeyError, TypeError):
            raise RecoveryError(
                f"a run names a Swarm secret without stack, key, name, previous and variable: {raw!r:.100}"
            ) from None
        names = (point.stack, point.key, point.name, point.previous)
        if not all(_NAME.match(n) for n in names) or not _VARIABLE.match(point.variable):
            raise RecoveryError(f"a run names a Swarm secret that is not a valid name: {point.name[:64]!r}")
        return point


def _swarm(engine: Engine) -> Any:
    from ..engines.swarm import SwarmEngine

    if not isinstance(engine, SwarmEngine):
        raise RecoveryError("a run names a Swarm secret, and this stack's configuration is not engine: swarm")
    return engine


class SwarmSecretLive:
    """A `LiveTarget` that creates Swarm secret `point.name` with the new value."""

    kind = "swarm-secret"

    def __init__(self, point: SwarmSecretPoint, engine: Callable[[], Engine]) -> None:
        self.point = point
        self._engine = engine

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], opener: object, engine: Callable[[], Engine]) -> SwarmSecretLive:
        """The target a journal entry describes; it reaches Swarm through `engine`."""
        return cls(SwarmSecretPoint.from_json(raw.get("endpoint") or {}), engine)

    @property
    def label(self) -> str:
        return self.point.label

    def to_json(self) -> dict[str, Any]:
        return self.point.to_json()

    def check(self, current: Secret, secret: str) -> str:
        swarm = _swarm(self._engine())
        users = swarm.secret_users(self.point.key)
        kept = "" if self.point.previous in swarm.secret_names() else f" ({self.point.previous} does not exist now)"
        return (
            f"{self.label}: would be created for {', '.join(users)} at /run/secrets/{self.point.key}; "
            f"{self.point.previous} stays until verify passes{kept}"
        )

    def apply(self, current: Secret, new: Secret, secret: str) -> None:
        _swarm(self._engine()).create_secret(self.point.name, new, self.point.key)

    def revert(self, login: Secret, back_to: Secret, secret: str) -> None:
        from ..errors import EngineError

        reason = _swarm(self._engine()).remove_secret(self.point.name)
        if reason:
            raise EngineError(f"{self.label}: could not remove it: {reason}")

    def which(self, candidates: Mapping[str, Secret]) -> str | None:
        return "new" if self.point.name in _swarm(self._engine()).secret_names() else "old"


def retire(engine: Engine, entries: Sequence[Mapping[str, Any]], version: str) -> list[str]:
    """Remove the Swarm secret versions a run no longer needs: `previous` once verify passed, the new
    `name` after a rollback. Returns a note for each one kept (still in use, say)."""
    notes = []
    for entry in entries:
        if entry.get("kind") != SwarmSecretLive.kind:
            continue
        point = SwarmSecretPoint.from_json(entry.get("endpoint") or {})
        name = point.previous if version == "previous" else point.name
        reason = _swarm(engine).remove_secret(name)
        if reason:
            notes.append(f"Swarm secret {name} kept: {reason}")
    return notes

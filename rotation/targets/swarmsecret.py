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
from typing import TYPE_CHECKING, Any

from ..engines import Engine
from ..errors import ConfigError, RecoveryError
from ..generate import Secret
from ..interpolation import NAME

if TYPE_CHECKING:
    from ..backup import Run
    from ..engines.swarm import SwarmEngine
    from ..envfile import EnvFile
    from ..journal import LiveChange
    from ..plan import Plan
    from ..stack import Stack

__all__ = ["SwarmSecretLive", "SwarmSecretPoint", "planned", "prepared", "restored", "settled"]

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


def _swarm(engine: Engine) -> SwarmEngine:
    """The stack's engine as the Swarm engine a Swarm secret needs (the configuration allows
    swarm_secret only with engine: swarm; a journal or backup may still name one)."""
    from ..engines.swarm import SwarmEngine  # deferred: only Swarm stacks need it

    if not isinstance(engine, SwarmEngine):
        raise RecoveryError("a Swarm secret needs engine: swarm, and this stack's configuration has another")
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


def settled(engine: Engine, entries: Sequence[Mapping[str, Any]], outcome: str) -> list[str]:
    """Remove the Swarm secret versions a run no longer needs: the previous ones once it is
    `verified`, its new ones once it is `rolled-back`. Returns a note for each one kept (still in
    use, say)."""
    notes = []
    for entry in entries:
        if entry.get("kind") != SwarmSecretLive.kind:
            continue
        point = SwarmSecretPoint.from_json(entry.get("endpoint") or {})
        name = point.previous if outcome == "verified" else point.name
        reason = _swarm(engine).remove_secret(name)
        if reason:
            notes.append(f"Swarm secret {name} kept: {reason}")
    return notes


# The planning hooks every target kind provides (see `targets.planned`). Swarm secrets are immutable:
# a new value is a new secret, named by a `${VAR}` in the env files that the plan changes too.


def prepared(stack: Stack, plan: Plan, files: Mapping[str, EnvFile]) -> Plan:
    """The plan with, for each changed secret a Swarm secret carries, the change of the `${VAR}` that
    names the stack secret's version."""
    from ..config import SecretSpec
    from ..plan import Change, extended
    from ..stack import merged_env

    carried = [c for c in plan.changes if c.spec.swarm_secret]
    if not carried:
        return plan
    engine = _swarm(stack.engine())
    env = merged_env(files)
    extra = []
    for change in carried:
        key = change.spec.swarm_secret or ""
        variable = engine.secret_variable(key, change.name)
        holders = tuple(name for name, parsed in files.items() if parsed.count(variable))
        current = env.get(variable)
        if not holders or not current:
            raise ConfigError(
                f"{stack.config.path}: secrets.{change.name}.swarm_secret: ${{{variable}}}, which names the "
                f"version of the stack's secret '{key}', is not set in {', '.join(files)}"
            )
        users = tuple(engine.secret_users(key))
        spec = SecretSpec(name=variable, type="static", files=holders, restart_services=users)
        reason = f"names {change.name}'s new Swarm secret"
        extra.append(Change(spec, Secret(current), Secret(engine.next_version(current)), reason))
    return extended(
        plan,
        (name for added in extra for name in added.spec.files),
        ((service, added.name) for added in extra for service in added.spec.restart_services or ()),
        changes=plan.changes + tuple(extra),
    )


def planned(stack: Stack, plan: Plan, files: Mapping[str, EnvFile]) -> list[LiveChange]:
    """The new Swarm secret version that carries each changed secret's new value, as the plan names it."""
    from ..journal import LiveChange

    changes = []
    for change in plan.changes:
        if not change.spec.swarm_secret:
            continue
        engine = _swarm(stack.engine())
        key = change.spec.swarm_secret
        version = plan.change(engine.secret_variable(key, change.name))
        assert version is not None and version.old is not None, "the plan names every Swarm secret version"
        point = SwarmSecretPoint(engine.project, key, version.new.reveal(), version.old.reveal(), version.name)
        live = SwarmSecretLive(point, stack.engine)
        changes.append(LiveChange(change.name, change.spec.files[0], live, change.old or Secret(""), change.new))
    return changes


def restored(stack: Stack, backup: Run, entry: Mapping[str, Any]) -> SwarmSecretLive | None:
    """The Swarm secret version the backup's files name, to be created again if verify had retired it;
    None when it still exists (the usual case before verify)."""
    point = SwarmSecretPoint.from_json(entry.get("endpoint") or {})
    wanted = stack.values_in(backup).get(point.variable)
    if not wanted:
        return None
    restored = SwarmSecretPoint.from_json({**point.to_json(), "name": wanted, "previous": point.name})
    if restored.name in _swarm(stack.engine()).secret_names():
        return None
    return SwarmSecretLive(restored, stack.engine)

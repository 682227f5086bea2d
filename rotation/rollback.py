"""Automatic rollback: when a rotated stack fails its restart or verification, put it back as it was."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from . import rollout
from .backup import Backup
from .engine import Engine
from .errors import RecoveryError, RotationError
from .rollout import RestartResult
from .runs import RestoreResult, Stack, restore

__all__ = ["RollbackResult", "manual_recovery", "roll_back"]


@dataclass(frozen=True, slots=True)
class RollbackResult:
    """What the rollback restored and how the services came back."""

    run: Backup
    restored: RestoreResult
    restart: RestartResult


def manual_recovery(stack: Stack, engine: Engine, run: Backup, services: list[str]) -> list[str]:
    """The exact commands a person runs to finish a rollback by hand."""
    return [
        f"cd {shlex.quote(str(stack.root))}",
        f"rotation restore --backup {run.id}    # files (and database passwords) as before the rotation",
        engine.recreate_command(services),
        "rotation check --verbose",
    ]


def roll_back(
    stack: Stack, engine: Engine, run: Backup, reason: str, *, timeout: float, parallel: int
) -> RollbackResult:
    """Restore the run's backup (files and databases), recreate its services, and wait for health."""
    services = engine.resolve(list(run.metadata.get("affected_services", [])))
    try:
        restored = restore(stack, run.id)
        before = stack.state_before(run)
        healthy = before.healthy_services if before else None
        result = rollout.restart(engine, services, timeout=timeout, parallel=parallel, healthy_before=healthy)
    except RotationError as exc:
        stack.store.update(run, status="failed", rollback_reason=reason, error=f"rollback failed: {exc}")
        raise RecoveryError(_loud(stack, engine, run, services, str(exc))) from None
    if not result.ok:
        stack.store.update(run, status="failed", rollback_reason=reason, error="rollback left services unhealthy")
        raise RecoveryError(_loud(stack, engine, run, services, "; ".join(result.failures())))
    run = stack.store.update(run, status="rolled-back", rollback_reason=reason)
    return RollbackResult(run, restored, result)


def _loud(stack: Stack, engine: Engine, run: Backup, services: list[str], why: str) -> str:
    steps = "\n".join(f"    {line}" for line in manual_recovery(stack, engine, run, services))
    return f"ROLLBACK FAILED: {why}\n  Every backup is kept ({stack.store.directory}). To recover by hand:\n{steps}"

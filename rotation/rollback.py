"""Automatic rollback: when a rotated stack fails its restart or verification, put it back as it was."""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass

from . import rollout, targets
from .backup import Run, RunStatus
from .engines import Engine
from .errors import RecoveryError, RotationError, Step
from .rollout import Progress, RestartResult, present
from .runs import RestoreResult, restore
from .stack import Stack

__all__ = ["RollbackResult", "manual_recovery", "roll_back"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RollbackResult:
    """What the rollback restored and how the services came back."""

    run: Run
    restored: RestoreResult
    restart: RestartResult


def manual_recovery(stack: Stack, engine: Engine, run: Run, services: list[str]) -> tuple[Step, ...]:
    """The steps a person runs to finish a rollback by hand, in order, from the stack's folder."""
    return (
        Step(f"cd {shlex.quote(str(stack.root))}", ours=False),
        Step(f"restore --backup {run.id}", why="files (and database passwords) as before the rotation"),
        Step(engine.recreate_command(services), why="the services on those files again", ours=False),
        Step("check --verbose"),
    )


def roll_back(
    stack: Stack,
    engine: Engine,
    run: Run,
    reason: str,
    *,
    timeout: float,
    parallel: int,
    progress: Progress | None = None,
) -> RollbackResult:
    """Restore the run's backup (files and databases), recreate its services, and wait for health."""
    services = present(engine, run.affected_services, stack.config.optional_services)[0]
    try:
        restored = restore(stack, run.id, closes_run=False)
        before = stack.state_before(run)
        healthy = before.healthy_services if before else None
        result = rollout.restart(
            engine, services, timeout=timeout, parallel=parallel, healthy_before=healthy, progress=progress
        )
        if result.order:
            stack.store.record_restart(run, result.order)
    except RotationError as exc:
        stack.store.update(run, status=RunStatus.FAILED, rollback_reason=reason, error=f"rollback failed: {exc}")
        raise _loud(stack, engine, run, services, str(exc)) from None
    if not result.ok:
        stack.store.update(
            run, status=RunStatus.FAILED, rollback_reason=reason, error="rollback left services unhealthy"
        )
        raise _loud(stack, engine, run, services, "; ".join(result.failures()))
    run = stack.store.update(run, status=RunStatus.ROLLED_BACK, rollback_reason=reason)
    for note in targets.settled(engine, run.database, "rolled-back"):  # what the run made, unused again
        log.warning("%s", note)
    return RollbackResult(run, restored, result)


def _loud(stack: Stack, engine: Engine, run: Run, services: list[str], why: str) -> RecoveryError:
    """A failed rollback: why, where the backups are, and the steps that finish it by hand."""
    return RecoveryError(
        f"ROLLBACK FAILED: {why}\n  Every backup is kept ({stack.store.directory}). To recover by hand:",
        steps=manual_recovery(stack, engine, run, services),
    )

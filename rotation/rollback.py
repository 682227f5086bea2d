"""Automatic rollback: when a rotated stack fails its restart or verification, put it back as it was."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from . import rollout, targets
from .backup import Run, RunStatus
from .engines import Engine
from .errors import RecoveryError, RotationError
from .rollout import Progress, RestartResult, present
from .runs import RestoreResult, restore
from .stack import Stack

__all__ = ["Command", "RollbackResult", "manual_recovery", "plain_command", "roll_back"]

Command = Callable[[str], str]  # a task's words -> the whole command line, as the user invoked us


def plain_command(task: str) -> str:
    """`rotation TASK`: how a command reads when nothing says how the program was invoked."""
    return f"rotation {task}"


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RollbackResult:
    """What the rollback restored and how the services came back."""

    run: Run
    restored: RestoreResult
    restart: RestartResult


def manual_recovery(
    stack: Stack, engine: Engine, run: Run, services: list[str], command: Command = plain_command
) -> list[str]:
    """The exact commands a person runs to finish a rollback by hand, `command` spelling our own."""
    return [
        f"cd {shlex.quote(str(stack.root))}",
        f"{command(f'restore --backup {run.id}')}    # files (and database passwords) as before the rotation",
        engine.recreate_command(services),
        command("check --verbose"),
    ]


def roll_back(
    stack: Stack,
    engine: Engine,
    run: Run,
    reason: str,
    *,
    timeout: float,
    parallel: int,
    progress: Progress | None = None,
    command: Command = plain_command,
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
        raise _loud(stack, engine, run, services, str(exc), command) from None
    if not result.ok:
        stack.store.update(
            run, status=RunStatus.FAILED, rollback_reason=reason, error="rollback left services unhealthy"
        )
        raise _loud(stack, engine, run, services, "; ".join(result.failures()), command)
    run = stack.store.update(run, status=RunStatus.ROLLED_BACK, rollback_reason=reason)
    for note in targets.settled(engine, run.database, "rolled-back"):  # what the run made, unused again
        log.warning("%s", note)
    return RollbackResult(run, restored, result)


def _loud(stack: Stack, engine: Engine, run: Run, services: list[str], why: str, command: Command) -> RecoveryError:
    """A failed rollback: why, where the backups are, and the commands that finish it by hand (also as `steps`)."""
    steps = manual_recovery(stack, engine, run, services, command)
    shown = "\n".join(f"    {line}" for line in steps)
    return RecoveryError(
        f"ROLLBACK FAILED: {why}\n  Every backup is kept ({stack.store.directory}). To recover by hand:\n{shown}",
        steps=steps,
    )

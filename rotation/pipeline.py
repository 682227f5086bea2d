"""The use cases a task runs: precheck, restart, verify, and what a failure of the last two does.

Each takes a stack, an engine and the run, decides everything, and returns a frozen result that
says what happened (problems, rolled back or not, the run's status). The Invoke tasks only parse
flags, print these results and map them to exit codes; a test calls these functions directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from . import health, rollout, targets
from .backup import Run, RunStatus, local_time
from .certificates import expiries
from .engines import Engine
from .errors import EngineError, EngineUnreachable, HealthUnknown, Interrupted, RecoveryError, SelectionError
from .health import Snapshot, regressions
from .probes import ProbeResult, run_probes
from .replacement import Strategy
from .rollback import RollbackResult, roll_back
from .rollout import DEFAULT_PARALLEL, DEFAULT_TIMEOUT, Progress, RestartResult
from .stack import Stack

__all__ = [
    "Failure",
    "PrecheckResult",
    "RecoverOutcome",
    "RestartOutcome",
    "VerifyOutcome",
    "interrupted",
    "precheck",
    "recover",
    "restart",
    "snapshot",
    "verify",
]

Say = Callable[[str], None]  # one line for a person, as it happens (a rollback beginning)


def _quiet(_line: str) -> None:
    """Say nothing: for callers that only want the result."""


def snapshot(engine: Engine) -> Snapshot:
    """Every service's state now; a stack that cannot be looked at is `HealthUnknown`, never unhealthy."""
    try:
        states = engine.states()
    except EngineUnreachable:
        raise
    except EngineError as exc:
        raise HealthUnknown(f"cannot tell the stack's health: {exc}") from None
    return Snapshot(engine.project, local_time(time.time()), states)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The stack's health now, what regressed since a saved state, each certificate's expiry, and
    where a dry run did not save the state it was asked to."""

    snapshot: Snapshot
    regressions: tuple[health.Regression, ...]
    certificates: Mapping[str, float | None]
    unsaved: Path | None = None

    @property
    def healthy(self) -> bool:
        return self.snapshot.healthy and not self.regressions


def check(
    stack: Stack, engine: Engine, *, compare: Path | None = None, save: Path | None = None, dry_run: bool = False
) -> CheckResult:
    """`check`: every service's state, the regressions since the state saved in `compare` (what a
    rotation recreated on purpose after it was saved is none), and the certificates' expiries; the
    state is saved to `save`, except in a dry run."""
    before = Snapshot.load(compare) if compare else None
    now = snapshot(engine)
    found = regressions(before, now, stack.store.recreated_since(before.taken_at)) if before else []
    if save and not dry_run:
        now.save(save)
    unsaved = save if dry_run else None
    return CheckResult(now, tuple(found), expiries(stack.root, stack.config.certificates), unsaved)


@dataclass(frozen=True, slots=True)
class PrecheckResult:
    """The health gate's verdict and, when it passed and wrote, the run it opened."""

    snapshot: Snapshot
    run: Run | None

    @property
    def ok(self) -> bool:
        """Whether every service is healthy."""
        return self.snapshot.healthy


def precheck(stack: Stack, engine: Engine, *, dry_run: bool = False) -> PrecheckResult:
    """Judge the stack; when healthy (and not a dry run), open a run holding this state."""
    state = snapshot(engine)
    run = stack.open_run(state) if state.healthy and not dry_run else None
    return PrecheckResult(state, run)


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed restart or verify: why, and what the rollback did about it."""

    reason: str
    rolled_back: RollbackResult | None  # None: not rolled back (not live, --no-rollback, or it failed)
    rollback_error: RecoveryError | None


def _summary(task: str, problems: Sequence[str]) -> str:
    """`restart failed: <first problem> (and N more)`: the reason a rollback and a notification give."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{task} failed: {problems[0]}{more}"


@dataclass(frozen=True, slots=True)
class _Ending:
    """How a failed restart or verify ends: whether it rolls back, and how it reports on the way."""

    rollback: bool
    timeout: float
    parallel: int
    progress: Progress | None
    say: Say
    dry_run: bool = False  # nothing is written: no status, no rollback


def _conclude(
    stack: Stack,
    engine: Engine,
    run: Run | None,
    task: str,
    problems: Sequence[str],
    success: RunStatus,
    ending: _Ending,
) -> Failure | None:
    """The end of a restart or verify: on problems, roll a live run back (or mark it failed when it
    may not be); without them, move a live run on to `success`."""
    if not problems:
        if run is not None and run.status.live and not ending.dry_run:
            stack.store.update(run, status=success)
        return None
    reason = _summary(task, problems)
    if ending.dry_run:
        return Failure(reason, None, None)
    if not ending.rollback or run is None or not run.status.live:
        if run is not None and run.status.live:
            stack.store.update(run, status=RunStatus.FAILED, error=reason)
        return Failure(reason, None, None)
    ending.say(f"rolling back run {run.id}: {reason}")
    try:
        result = roll_back(
            stack,
            engine,
            run,
            reason,
            timeout=ending.timeout,
            parallel=ending.parallel,
            progress=ending.progress,
        )
    except RecoveryError as exc:
        return Failure(reason, None, exc)
    return Failure(reason, result, None)


@dataclass(frozen=True, slots=True)
class RestartOutcome:
    """What a restart chose, how it went, and the failure (with its rollback) if it failed."""

    services: tuple[str, ...]
    absent: tuple[str, ...]  # optional services the run names but this stack does not have
    result: RestartResult | None  # None: nothing to recreate, or a dry run
    problems: tuple[str, ...]
    failure: Failure | None
    strategies: Mapping[str, Strategy] = field(default_factory=dict)  # how each service is (or would be) replaced

    @property
    def ok(self) -> bool:
        """Whether every chosen service (and every healthy one that depends on them) is healthy."""
        return self.failure is None


def restart(
    stack: Stack,
    engine: Engine,
    run: Run | None,
    *,
    services: Sequence[str] | None = None,
    every: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    parallel: int = DEFAULT_PARALLEL,
    healthcheck: bool = True,
    rollback: bool = True,
    dry_run: bool = False,
    progress: Progress | None = None,
    say: Say = _quiet,
) -> RestartOutcome:
    """Recreate `services` (or every service, or the run's affected ones), judge the stack against
    the run's precheck state, and roll the run back on any failure."""
    absent: list[str] = []
    if every:
        chosen = sorted(engine.services())
    elif services:
        chosen = engine.resolve(list(services), "--services")
    elif run is not None:
        chosen, absent = rollout.present(engine, run.affected_services, stack.config.optional_services)
    else:
        raise SelectionError("no rotation to restart after; pass --services or --all")
    if not chosen or dry_run:
        strategies = {name: engine.strategy(name) for name in chosen}
        return RestartOutcome(tuple(chosen), tuple(absent), None, (), None, strategies)
    if not any(state.state == "running" for state in engine.states().values()):
        raise SelectionError(
            f"restart: nothing of project {engine.project} is running, so there is nothing to recreate (compose "
            "would create the whole stack, pulling images). Start the stack first; the rotated values are in the "
            "files and apply when it starts"
        )
    ending = _Ending(rollback, timeout, parallel, progress, say)
    with stack.session(run.id if run else None), _undone_if_interrupted(stack, engine, run, "restart", ending):
        before = stack.state_before(run)
        result = rollout.restart(
            engine,
            chosen,
            timeout=timeout,
            parallel=parallel,
            healthcheck=healthcheck,
            healthy_before=before.healthy_services if before else None,
            progress=progress,
        )
        if run is not None and result.order:
            run = stack.store.record_restart(run, result.order)
        found = regressions(before, snapshot(engine), recreated=chosen) if before else []
        problems = result.failures() + [r.describe() for r in found if result.outcome.get(r.service, "ok") == "ok"]
        failure = _conclude(stack, engine, run, "restart", problems, RunStatus.RESTARTED, ending)
    return RestartOutcome(tuple(chosen), tuple(absent), result, tuple(problems), failure, result.strategies)


@contextmanager
def _undone_if_interrupted(stack: Stack, engine: Engine, run: Run | None, task: str, ending: _Ending) -> Iterator[None]:
    """Turn SIGINT or SIGTERM during a restart or verify into a rollback of the live run, in place.

    The run is marked `interrupted` first: if a second signal stops the rollback too, `recover`
    finds the run and finishes it. Without a live run (or with --no-rollback) it only says so.
    """
    try:
        yield
    except KeyboardInterrupt:
        if run is None or not run.status.live or not ending.rollback:
            kept = "left as it is (--no-rollback)" if run is not None and run.status.live else "not changed by it"
            raise Interrupted(f"interrupted during {task}; the stack is {kept}") from None
        stack.store.update(run, status=RunStatus.INTERRUPTED, error=f"interrupted during {task}")
        ending.say(f"interrupted: rolling back run {run.id} (interrupt again to leave that to `recover`)")
        result = roll_back(
            stack,
            engine,
            run,
            f"interrupted during {task}",
            timeout=ending.timeout,
            parallel=ending.parallel,
            progress=ending.progress,
        )
        raise Interrupted(
            f"interrupted during {task}: rolled back run {result.run.id}; files and databases are back on the "
            "values before the rotation, and the recreated services are healthy"
        ) from None


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    """The stack now, against its precheck state, with every probe's result."""

    snapshot: Snapshot
    before: Snapshot | None
    regressions: tuple[str, ...]
    probes: tuple[ProbeResult, ...]
    failure: Failure | None

    @property
    def ok(self) -> bool:
        """Whether nothing regressed and every probe passed."""
        return self.failure is None


def verify(
    stack: Stack,
    engine: Engine,
    run: Run | None,
    *,
    rollback: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    dry_run: bool = False,
    progress: Progress | None = None,
    say: Say = _quiet,
) -> VerifyOutcome:
    """Compare the stack with the run's precheck state, run the probes, and roll back on failure."""
    ending = _Ending(rollback, timeout, DEFAULT_PARALLEL, progress, say, dry_run)
    held = nullcontext() if dry_run else stack.session(run.id if run else None)
    with held, _undone_if_interrupted(stack, engine, run, "verify", ending):
        before = stack.state_before(run)
        state = snapshot(engine)
        recreated = rollout.present(engine, run.affected_services, stack.config.optional_services)[0] if run else []
        found = health.problems(before, state, recreated)
        previous = stack.values_in(run) if run else {}
        current = stack.values()
        probes = tuple(run_probes(stack.config, current, previous, stack.databases, stack.vaults(current)))
        problems = found + [f"probe {p.name} failed: {p.detail}" for p in probes if not p.ok]
        live = run is not None and run.status.live
        failure = _conclude(stack, engine, run, "verify", problems, RunStatus.VERIFIED, ending)
        if run is not None and live and failure is None and not dry_run:
            for note in targets.settled(engine, run.database, "verified"):  # kept for a rollback until now
                say(note)
    return VerifyOutcome(state, before, tuple(found), probes, failure)


def interrupted(stack: Stack) -> bool:
    """Whether the newest run was interrupted during its restart or verify, and waits for `recover`."""
    latest = stack.store.latest_rotation() if stack.store.directory.is_dir() else None
    return latest is not None and latest.status is RunStatus.INTERRUPTED


@dataclass(frozen=True, slots=True)
class RecoverOutcome:
    """What `recover` finished: an interrupted commit (from its journal), an interrupted restart or verify."""

    journal: str | None
    rolled_back: RollbackResult | None


def recover(
    stack: Stack,
    engine: Callable[[], Engine],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    parallel: int = DEFAULT_PARALLEL,
    progress: Progress | None = None,
) -> RecoverOutcome:
    """Finish what was interrupted: a commit's journal first (files, databases, stores), then a run whose
    restart or verify a signal stopped, rolled back as a failed verify would have been."""
    with stack.session() as journal:
        run = stack.store.latest_rotation()
        if run is None or run.status is not RunStatus.INTERRUPTED:
            return RecoverOutcome(journal, None)
        reason = str(run.metadata.get("error") or "interrupted")
        result = roll_back(stack, engine(), run, reason, timeout=timeout, parallel=parallel, progress=progress)
    return RecoverOutcome(journal, result)

"""The Invoke tasks: parse flags, call the library, print, turn failures into exit codes.

`inv` reads them through the top-level `tasks.py`; `rotation` is a `Program` over the same
collection. Several tasks on one command line (`rotation precheck rotate restart verify`)
share one config object, and with it the run they work on. Every task run that reaches a
stack is written to its audit log, and those that change or judge it are announced to the
configured webhooks.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from . import audit, health, report, rollout
from .backup import Backup, local_time
from .compose import ComposeEngine, compose_failure
from .config import find_config, load
from .engine import Engine
from .errors import RecoveryError, RotationError
from .fsio import write_atomic
from .health import Snapshot, regressions
from .probes import run_probes
from .rollback import roll_back
from .runs import LIVE, Stack
from .runs import restore as restore_backup
from .runs import rotate as rotate_secrets
from .schedule import due as due_secrets

__all__ = ["namespace"]

BUNDLED_CONFIG = Path(__file__).with_name("secrets-config.yaml")
_ANSI = re.compile(r"\033\[[0-9;]*m")


def _setting(c: Context, key: str) -> object:
    return c.config.get("rotation", {}).get(key)


def _root(c: Context) -> Path:
    configured = _setting(c, "root") or os.environ.get("ROTATION_ROOT") or os.getcwd()
    return Path(str(configured)).expanduser().absolute()


@dataclass
class _Record:
    """What one task run did, for the audit log and the webhooks (names only, never values)."""

    task: str
    stack: Stack | None = None
    secrets: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    run: str | None = None
    announce: bool = True
    verdict: str | None = None  # the outcome, where a non-zero exit is not a failure (`due`)


def _stack(c: Context, record: _Record, config: str | None = None) -> Stack:
    root = _root(c)
    if not root.is_dir():
        raise Exit(f"rotation: stack root {root} is not a directory (rotation.root / ROTATION_ROOT)", 2)
    explicit = config or _setting(c, "config")
    path = find_config(root, str(explicit) if explicit else None, BUNDLED_CONFIG)
    timeout = _number(str(_setting(c, "lock_timeout") or 60), "rotation.lock_timeout")
    stack = Stack(root, load(path), lock_timeout=timeout)
    record.stack = stack
    recovered = stack.recover()
    if recovered:
        print(report.paint(f"rotation: {recovered}", "yellow"), file=sys.stderr)
    return stack


@contextmanager
def _task(name: str) -> Iterator[_Record]:
    """Run a task body: a `RotationError` becomes a one-line message and its exit code, and the
    outcome goes to the audit log and the webhooks whatever happens."""
    record = _Record(name)
    started = time.monotonic()
    outcome = "ok"
    try:
        yield record
    except RotationError as exc:
        outcome = f"failed: {exc}"
        raise Exit(report.paint(f"rotation: {exc}", "red"), exc.exit_code) from None
    except Exit as exc:
        outcome = record.verdict or ("ok" if not exc.code else f"failed: {_ANSI.sub('', str(exc.message or exc.code))}")
        raise
    finally:
        _record(record, outcome, time.monotonic() - started)


def _record(record: _Record, outcome: str, seconds: float) -> None:
    stack = record.stack
    if stack is None or not stack.store.directory.is_dir():
        return
    entry = {
        "time": local_time(time.time()),
        "task": record.task,
        "stack": str(stack.root),
        "secrets": sorted(record.secrets),
        "services": sorted(record.services),
        "run": record.run,
        "outcome": outcome,
        "duration": round(seconds, 3),
    }
    audit.append(stack.store.directory, entry)
    if stack.config.notify and (record.announce or outcome.startswith("failed")):
        verdict = "succeeded" if outcome == "ok" else outcome
        text = f"rotation {record.task} on {socket.gethostname()}:{stack.root} {verdict}"
        if record.secrets:
            text += f"; secrets: {', '.join(sorted(record.secrets))}"
        if record.services:
            text += f"; services: {', '.join(sorted(record.services))}"
        for problem in audit.notify(
            stack.config.notify, {"text": text, "ok": not outcome.startswith("failed"), **entry}
        ):
            print(report.paint(f"rotation: warning: {problem}", "yellow"), file=sys.stderr)


def _number(value: str | float, flag: str, kind: type[int] | type[float] = float) -> float:
    """A flag's numeric value; anything else is a one-line error naming the flag."""
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise Exit(f"rotation: {flag} takes a number, not '{value}'", 2) from None
    if number <= 0:
        raise Exit(f"rotation: {flag} must be greater than 0, not '{value}'", 2)
    return number


def _names(flag: str | None) -> list[str] | None:
    if not flag:
        return None
    return [name.strip() for name in flag.split(",") if name.strip()]


@task(
    help={
        "dry-run": "Print the plan (and check the databases) without writing anything.",
        "secrets": "Comma-separated secrets to rotate; default: every auto_rotate secret.",
        "due": "Rotate only the secrets past their rotation_period (see `rotation due`).",
        "skip-backup": "Keep no backup after a successful run (crash safety still uses one).",
        "config": "Configuration file; default: <root>/secrets-config.yaml, then scripts/, then bundled.",
        "accept-data-loss": "Allow rotating keys that encrypt stored data (encrypts_data: true).",
        "json": "Print machine-readable JSON.",
    }
)
def rotate(
    c: Context,
    dry_run: bool = False,
    secrets: str | None = None,
    due: bool = False,
    skip_backup: bool = False,
    config: str | None = None,
    accept_data_loss: bool = False,
    json: bool = False,
) -> None:
    """Rotate secrets: back up, change live databases, then every file, all or nothing."""
    with _task("rotate") as record:
        record.announce = not dry_run
        stack = _stack(c, record, config)
        selection = _names(secrets)
        if due:
            if selection:
                raise Exit("rotation: rotate takes --due or --secrets, not both", 2)
            selection = [d.name for d in due_secrets(stack.config, stack.store.all())]
            if not selection:
                record.announce = False
                print("rotate: no secret is due")
                return
        result = rotate_secrets(
            stack,
            selection,
            accept_data_loss=accept_data_loss,
            skip_backup=skip_backup,
            dry_run=dry_run,
            run=_setting(c, "run"),  # type: ignore[arg-type]
        )
        record.secrets, record.services = list(result.plan.names), list(result.plan.services)
        if result.backup is not None:
            c.config.rotation.run = record.run = result.backup.id
    if json:
        print(report.dumps(report.rotation_json(result)))
        return
    if result.recovered:
        print(report.paint(result.recovered, "yellow"))
    for warning in result.plan.warnings:
        print(report.paint(f"warning: {warning}", "yellow"))
    print(report.rotation_text(result))


@task(
    help={
        "list": "Show every backup: id, age, kind, rotated secrets, affected services, status.",
        "latest": "Restore the newest rotation backup.",
        "backup": "Restore this backup id (or its directory name).",
        "dry-run": "Show what would change without writing anything.",
        "config": "Configuration file (see rotate).",
        "json": "With --list: machine-readable JSON.",
    }
)
def restore(
    c: Context,
    list: bool = False,  # noqa: A002 - the flag users type is --list
    latest: bool = False,
    backup: str | None = None,
    dry_run: bool = False,
    config: str | None = None,
    json: bool = False,
) -> None:
    """Restore a backup byte for byte (and its database passwords); the restore itself is undoable."""
    with _task("restore") as record:
        record.announce = not (list or dry_run)
        stack = _stack(c, record, config)
        if list:
            backups = stack.store.all()
            print(report.dumps(report.backups_json(backups)) if json else report.backups_table(backups))
            return
        if not (latest or backup):
            raise Exit("rotation: restore needs --latest, --backup ID or --list", 2)
        if latest and backup:
            raise Exit("rotation: restore takes --latest or --backup, not both", 2)
        result = restore_backup(stack, backup, dry_run=dry_run)
        record.run = result.restored.id
        record.secrets = [*result.restored.metadata.get("rotated_secrets", [])]
        record.services = [*result.restored.metadata.get("affected_services", [])]
    if result.recovered:
        print(report.paint(result.recovered, "yellow"))
    print(report.restore_text(result))


def _engine(c: Context, stack: Stack) -> ComposeEngine:
    def run(argv: Sequence[str], cwd: Path) -> str:
        with c.cd(str(cwd)):
            result = c.run(shlex.join(argv), hide=True, warn=True, in_stream=False)
        if result is None or result.exited != 0:
            raise compose_failure(
                argv, f"{result.stderr}{result.stdout}" if result else "", result.exited if result else -1
            )
        return str(result.stdout)

    return ComposeEngine(stack.root, stack.config.compose, runner=run)


def _snapshot(engine: ComposeEngine) -> Snapshot:
    return Snapshot(engine.project, local_time(time.time()), engine.states())


@task(
    help={
        "save": "Write the state to FILE as JSON.",
        "compare": "Report regressions against a state saved with --save; any regression exits 1.",
        "verbose": "For unhealthy services: last healthcheck output, exit code, OOMKilled, last log lines.",
        "json": "Print the state as JSON.",
        "config": "Configuration file (see rotate).",
    }
)
def check(
    c: Context,
    save: str | None = None,
    compare: str | None = None,
    verbose: bool = False,
    json: bool = False,
    config: str | None = None,
) -> None:
    """Show every service's state, health, restarts and uptime; exit 1 if any is not healthy."""
    with _task("check") as record:
        record.announce = False
        stack = _stack(c, record, config)
        engine = _engine(c, stack)
        snapshot = _snapshot(engine)
        found = regressions(Snapshot.load(Path(compare)), snapshot) if compare else []
        if save:
            write_atomic(Path(save), report.dumps(snapshot.to_json()).encode(), mode=0o644)
        if json:
            print(report.dumps(snapshot.to_json()))
        else:
            print(report.states_table(snapshot))
            if verbose:
                for state in snapshot.unhealthy:
                    print(report.details(state, engine.logs(state.service, 20)))
        for problem in found:
            print(report.paint(f"regression: {problem.describe()}", "red"))
        if not snapshot.healthy or found:
            names = ", ".join(s.service for s in snapshot.unhealthy) or f"{len(found)} regressions"
            raise Exit(report.paint(f"rotation: not healthy: {names}", "red"), 1)


@task(help={"config": "Configuration file (see rotate)."})
def precheck(c: Context, config: str | None = None) -> None:
    """Health gate: save the state for this run and stop the pipeline if anything is unhealthy."""
    with _task("precheck") as record:
        record.announce = False
        stack = _stack(c, record, config)
        snapshot = _snapshot(_engine(c, stack))
        if not snapshot.healthy:
            print(report.states_table(snapshot))
            names = ", ".join(s.service for s in snapshot.unhealthy)
            raise Exit(report.paint(f"rotation: precheck failed, not healthy: {names}; nothing was rotated", "red"), 1)
        run = stack.open_run(snapshot)
        c.config.rotation.run = record.run = run.id
    print(f"precheck: {len(snapshot.states)} services healthy; state saved in run {run.id}")


def _pipeline_run(c: Context, stack: Stack, record: _Record) -> Backup | None:
    """This pipeline's run, else the latest rotation, recorded with its secrets for the audit log."""
    run = stack.run(_setting(c, "run"))  # type: ignore[arg-type]
    if run is not None:
        record.run, record.secrets = run.id, [*run.metadata.get("rotated_secrets", [])]
    return run


def _summary(task: str, problems: Sequence[str]) -> str:
    """`restart failed: <first problem> (and N more)`: the reason a rollback and a notification give."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{task} failed: {problems[0]}{more}"


def _fail(
    record: _Record,
    stack: Stack,
    engine: Engine,
    run: Backup | None,
    reason: str,
    *,
    rollback: bool,
    timeout: float,
    parallel: int,
) -> Exit:
    """The `Exit` for a failed restart or verify, after rolling the run back when it is live."""
    if not rollback or run is None or run.status not in LIVE:
        if run is not None and run.status in LIVE:
            stack.store.update(run, status="failed", error=reason)
        return Exit(report.paint(f"rotation: {reason}", "red"), 1)
    print(report.paint(f"rolling back run {run.id}: {reason}", "yellow"))
    try:
        result = roll_back(stack, engine, run, reason, timeout=timeout, parallel=parallel)
    except RecoveryError as exc:
        return Exit(report.paint(f"rotation: {reason}\n{exc}", "red"), exc.exit_code)
    services = ", ".join(result.restart.order) or "none"
    record.services = [*result.restart.order]
    return Exit(
        report.paint(
            f"rotation: ROLLED BACK run {run.id} because {reason}. Files and databases are back on the "
            f"values before the rotation, and the recreated services ({services}) are healthy",
            "red",
        ),
        1,
    )


@task(
    help={
        "all": "Recreate every service of the project, not only those the rotation affected.",
        "services": "Comma-separated services (or container names) to recreate.",
        "no-healthcheck": "Do not wait for health after each recreate.",
        "timeout": "Seconds to wait for the services to be healthy (default 180).",
        "parallel": "How many independent services to recreate at once (default 4).",
        "no-rollback": "On failure, leave the stack as it is instead of rolling the rotation back.",
        "config": "Configuration file (see rotate).",
    }
)
def restart(
    c: Context,
    all: bool = False,  # noqa: A002 - the flag users type is --all
    services: str | None = None,
    no_healthcheck: bool = False,
    timeout: str = "180",
    parallel: str = "4",
    no_rollback: bool = False,
    config: str | None = None,
) -> None:
    """Recreate the services the latest rotation affected, in dependency order, each proven healthy."""
    with _task("restart") as record:
        seconds, workers = _number(timeout, "--timeout"), int(_number(parallel, "--parallel", int))
        stack = _stack(c, record, config)
        engine = _engine(c, stack)
        run = _pipeline_run(c, stack, record)
        if all:
            chosen = sorted(engine.services())
        elif services:
            chosen = engine.resolve(_names(services) or [], "--services")
        elif run is not None:
            chosen = engine.resolve([*run.metadata.get("affected_services", [])])
        else:
            raise Exit("rotation: no rotation to restart after; pass --services or --all", 2)
        record.services = chosen
        if not chosen:
            print("restart: no service to recreate")
            return
        before = stack.state_before(run)
        result = rollout.restart(
            engine,
            chosen,
            timeout=seconds,
            parallel=workers,
            healthcheck=not no_healthcheck,
            healthy_before=before.healthy_services if before else None,
        )
        print(f"restart: recreated {', '.join(result.order) or '(none)'}, started in dependency order")
        found = regressions(before, _snapshot(engine), recreated=chosen) if before else []
        problems = result.failures() + [r.describe() for r in found if result.outcome.get(r.service, "ok") == "ok"]
        for line in problems:
            print(report.paint(f"failed: {line}", "red"))
        if problems:
            reason = _summary("restart", problems)
            raise _fail(record, stack, engine, run, reason, rollback=not no_rollback, timeout=seconds, parallel=workers)
        if run is not None and run.status in LIVE:
            stack.store.update(run, status="restarted")
        rechecked = sorted(set(result.outcome) - set(chosen))
        also = f", and {', '.join(rechecked)} that depend on them passed a new healthcheck" if rechecked else ""
    print(report.paint(f"restart: {len(chosen)} services healthy{also}", "green"))


@task(
    help={
        "no-rollback": "On failure, leave the stack as it is instead of rolling the rotation back.",
        "timeout": "Seconds to wait for services to be healthy again if it rolls back (default 180).",
        "config": "Configuration file (see rotate).",
    }
)
def verify(c: Context, no_rollback: bool = False, timeout: str = "180", config: str | None = None) -> None:
    """Compare the stack with its precheck state and run the configured probes; exit 1 on any failure."""
    with _task("verify") as record:
        seconds = _number(timeout, "--timeout")
        stack = _stack(c, record, config)
        engine = _engine(c, stack)
        run = _pipeline_run(c, stack, record)
        before = stack.state_before(run)
        snapshot = _snapshot(engine)
        recreated = engine.resolve([*run.metadata.get("affected_services", [])]) if run else []
        print(report.states_table(snapshot))
        if before is None:
            print(report.paint("verify: no precheck state for this run; checking health only", "yellow"))
        problems = health.problems(before, snapshot, recreated)
        for line in problems:
            print(report.paint(f"regression: {line}", "red"))
        previous = stack.values_in(run) if run else {}
        for probe in run_probes(stack.config, stack.values(), previous, stack.databases):
            mark = report.paint("ok  ", "green") if probe.ok else report.paint("FAIL", "red")
            print(f"{mark} {probe.name}: {probe.detail}")
            if not probe.ok:
                problems.append(f"probe {probe.name} failed: {probe.detail}")
        if problems:
            reason = _summary("verify", problems)
            raise _fail(record, stack, engine, run, reason, rollback=not no_rollback, timeout=seconds, parallel=4)
        if run is not None and run.status in LIVE:
            stack.store.update(run, status="verified")
    print(report.paint("verify: every service healthy, every probe passed", "green"))


@task(help={"config": "Configuration file (see rotate).", "json": "Print machine-readable JSON."})
def due(c: Context, config: str | None = None, json: bool = False) -> None:
    """List the secrets past their rotation_period; exit 1 when some are due, 0 when none are."""
    with _task("due") as record:
        record.announce = False
        stack = _stack(c, record, config)
        found = due_secrets(stack.config, stack.store.all())
        record.secrets = [d.name for d in found]
        print(report.dumps(report.due_json(found)) if json else report.due_table(found))
        if found:
            record.verdict = f"due: {', '.join(record.secrets)}"
            raise Exit(code=1)


namespace = Collection(rotate, restore, check, precheck, restart, verify, due)
namespace.configure({"rotation": {"root": None, "config": None, "lock_timeout": None, "run": None}})
logging.basicConfig(level=logging.INFO, format="rotation: %(message)s")

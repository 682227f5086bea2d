"""The Invoke tasks: parse flags, call the library, print, turn failures into exit codes.

`inv` reads them through the top-level `tasks.py`; `rotation` is a `Program` over the same
collection. Several tasks on one command line (`rotation precheck rotate restart verify`)
share one config object, and with it the run they work on.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from . import report, rollout
from .backup import local_time
from .compose import ComposeEngine
from .config import find_config, load
from .errors import EngineError, RotationError
from .fsio import write_atomic
from .health import Snapshot, regressions
from .runs import Stack
from .runs import restore as restore_backup
from .runs import rotate as rotate_secrets

__all__ = ["namespace"]

BUNDLED_CONFIG = Path(__file__).with_name("secrets-config.yaml")


def _setting(c: Context, key: str) -> object:
    return c.config.get("rotation", {}).get(key)


def _root(c: Context) -> Path:
    configured = _setting(c, "root") or os.environ.get("ROTATION_ROOT") or os.getcwd()
    return Path(str(configured)).expanduser().absolute()


def _stack(c: Context, config: str | None = None) -> Stack:
    root = _root(c)
    if not root.is_dir():
        raise Exit(f"rotation: stack root {root} is not a directory (rotation.root / ROTATION_ROOT)", 2)
    explicit = config or _setting(c, "config")
    path = find_config(root, str(explicit) if explicit else None, BUNDLED_CONFIG)
    timeout = float(str(_setting(c, "lock_timeout") or 60))
    stack = Stack(root, load(path), lock_timeout=timeout)
    recovered = stack.recover()
    if recovered:
        print(report.paint(f"rotation: {recovered}", "yellow"), file=sys.stderr)
    return stack


@contextmanager
def _reported() -> Iterator[None]:
    """Turn a `RotationError` into a one-line message and its exit code, without a traceback."""
    try:
        yield
    except RotationError as exc:
        raise Exit(report.paint(f"rotation: {exc}", "red"), exc.exit_code) from None


def _names(flag: str | None) -> list[str] | None:
    if not flag:
        return None
    return [name.strip() for name in flag.split(",") if name.strip()]


@task(
    help={
        "dry-run": "Print the plan (and check the databases) without writing anything.",
        "secrets": "Comma-separated secrets to rotate; default: every auto_rotate secret.",
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
    skip_backup: bool = False,
    config: str | None = None,
    accept_data_loss: bool = False,
    json: bool = False,
) -> None:
    """Rotate secrets: back up, change live databases, then every file, all or nothing."""
    with _reported():
        stack = _stack(c, config)
        result = rotate_secrets(
            stack,
            _names(secrets),
            accept_data_loss=accept_data_loss,
            skip_backup=skip_backup,
            dry_run=dry_run,
            run=_setting(c, "run"),  # type: ignore[arg-type]
        )
    if result.backup is not None:
        c.config.rotation.run = result.backup.id
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
    with _reported():
        stack = _stack(c, config)
        if list:
            backups = stack.store.all()
            print(report.dumps(report.backups_json(backups)) if json else report.backups_table(backups))
            return
        if not (latest or backup):
            raise Exit("rotation: restore needs --latest, --backup ID or --list", 2)
        if latest and backup:
            raise Exit("rotation: restore takes --latest or --backup, not both", 2)
        result = restore_backup(stack, backup, dry_run=dry_run)
    if result.recovered:
        print(report.paint(result.recovered, "yellow"))
    print(report.restore_text(result))


def _engine(c: Context, stack: Stack) -> ComposeEngine:
    def run(argv: Sequence[str], cwd: Path) -> str:
        with c.cd(str(cwd)):
            result = c.run(shlex.join(argv), hide=True, warn=True, in_stream=False)
        if result is None or result.exited != 0:
            words = (result.stderr.strip() or result.stdout.strip()).splitlines() if result else []
            raise EngineError(f"`{shlex.join(argv[:3])} ...` failed: {words[-1] if words else 'no output'}")
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
    with _reported():
        stack = _stack(c, config)
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
    with _reported():
        stack = _stack(c, config)
        snapshot = _snapshot(_engine(c, stack))
        if not snapshot.healthy:
            print(report.states_table(snapshot))
            names = ", ".join(s.service for s in snapshot.unhealthy)
            raise Exit(report.paint(f"rotation: precheck failed, not healthy: {names}; nothing was rotated", "red"), 1)
        run = stack.open_run(snapshot)
    c.config.rotation.run = run.id
    print(f"precheck: {len(snapshot.states)} services healthy; state saved in run {run.id}")


@task(
    help={
        "all": "Recreate every service of the project, not only those the rotation affected.",
        "services": "Comma-separated services (or container names) to recreate.",
        "no-healthcheck": "Do not wait for health after each recreate.",
        "timeout": "Seconds to wait for the services to be healthy (default 180).",
        "parallel": "How many independent services to recreate at once (default 4).",
        "config": "Configuration file (see rotate).",
    }
)
def restart(
    c: Context,
    all: bool = False,  # noqa: A002 - the flag users type is --all
    services: str | None = None,
    no_healthcheck: bool = False,
    timeout: float = 180.0,
    parallel: int = 4,
    config: str | None = None,
) -> None:
    """Recreate the services the latest rotation affected, in dependency order, each proven healthy."""
    with _reported():
        stack = _stack(c, config)
        engine = _engine(c, stack)
        run = stack.run(_setting(c, "run"))  # type: ignore[arg-type]
        if all:
            chosen = sorted(engine.services())
        elif services:
            chosen = engine.resolve(_names(services) or [])
        elif run is not None:
            chosen = engine.resolve(list(run.metadata.get("affected_services", [])))
        else:
            raise Exit("rotation: no rotation to restart after; pass --services or --all", 2)
        if not chosen:
            print("restart: no service to recreate")
            return
        result = rollout.restart(engine, chosen, timeout=timeout, parallel=parallel, healthcheck=not no_healthcheck)
        print(f"restart: recreated {', '.join(result.order) or '(none)'} in dependency order")
        before = stack.state_before(run)
        after = _snapshot(engine)
        found = regressions(before, after, recreated=chosen) if before else []
        problems = result.failures() + [p.describe() for p in found if p.service not in result.outcome]
        if run is not None:
            stack.store.update(run, status="restarted" if not problems else "failed")
    if problems:
        for line in problems:
            print(report.paint(f"failed: {line}", "red"))
        raise Exit(report.paint(f"rotation: restart failed for {len(problems)} service(s)", "red"), 1)
    print(report.paint(f"restart: {len(chosen)} services healthy", "green"))


@task(help={"config": "Configuration file (see rotate)."})
def verify(c: Context, config: str | None = None) -> None:
    """Check the stack against the precheck state of the same run; exit 1 on any regression."""
    with _reported():
        stack = _stack(c, config)
        engine = _engine(c, stack)
        run = stack.run(_setting(c, "run"))  # type: ignore[arg-type]
        before = stack.state_before(run)
        snapshot = _snapshot(engine)
        recreated = engine.resolve(list(run.metadata.get("affected_services", []))) if run else []
        found = regressions(before, snapshot, recreated) if before else []
        if before is None:
            print(report.paint("verify: no precheck state for this run; checking health only", "yellow"))
        problems = [p.describe() for p in found] + [
            f"{s.service} {s.summary}" for s in snapshot.unhealthy if s.service not in {p.service for p in found}
        ]
        if run is not None and run.status in ("applied", "restarted"):
            stack.store.update(run, status="verified" if not problems else "failed")
    print(report.states_table(snapshot))
    if problems:
        for line in problems:
            print(report.paint(f"regression: {line}", "red"))
        raise Exit(report.paint(f"rotation: verify failed: {len(problems)} problem(s)", "red"), 1)
    print(report.paint("verify: every service healthy, no regression", "green"))


namespace = Collection(rotate, restore, check, precheck, restart, verify)
namespace.configure({"rotation": {"root": None, "config": None, "lock_timeout": 60, "run": None}})
logging.basicConfig(level=logging.INFO, format="rotation: %(message)s")

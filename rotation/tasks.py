"""The Invoke tasks: parse flags, call one use case, hand its result to `present`, exit with its code.

`inv` reads them through the top-level `tasks.py`; `rotation` is a `Program` over the same
collection (see `cli`). Several tasks on one command line (`rotation precheck rotate restart
verify`) share one config object, and with it the run they work on. Every task run that reaches
a stack is written to its audit log, and those that change or judge it are announced to the
configured webhooks. Invoke's own `--dry` makes every task a dry run: nothing that reads as dry
ever writes.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task, task

from .errors import Interrupted, RotationError, SelectionError
from .lazy import lazy
from .rollout import DEFAULT_PARALLEL, DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from . import audit, certificates, fsio, health, journal, pipeline, present, report, runs, schedule
    from . import guard as guardscan
    from . import stack as stacks
    from .backup import Run
    from .rollback import Command
    from .stack import Stack
else:  # loaded on first use: --help, --list and completion import no use case (as pip's commands_dict)
    audit, certificates, fsio, guardscan, health, journal, pipeline, present, report, runs, schedule, stacks = (
        lazy(f"{__package__}.{name}")
        for name in (
            *("audit", "certificates", "fsio", "guard", "health", "journal"),
            *("pipeline", "present", "report", "runs", "schedule", "stack"),
        )
    )

__all__ = ["BUNDLED_CONFIG", "DEFAULTS", "SHORT_FLAGS", "namespace"]

BUNDLED_CONFIG = Path(__file__).with_name("secrets-config.yaml")
# Defaults of the numeric flags and settings, in one place.
DEFAULTS = {"timeout": DEFAULT_TIMEOUT, "parallel": DEFAULT_PARALLEL, "lock_timeout": 60.0, "log_limit": 20}
# One meaning per short flag in every task; destructive flags have none, on purpose.
SHORT_FLAGS = {"dry_run": "n", "secrets": "s", "config": "c", "json": "j", "timeout": "t", "verbose": "v"}


class RotationTask(Task):  # type: ignore[type-arg]
    """A task whose short flags come from SHORT_FLAGS, never from the first free letter."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        if name in SHORT_FLAGS:
            opts["names"] = [*opts["names"], SHORT_FLAGS[name]]
        return opts


def _task_options(**kwargs: Any) -> Callable[[Callable[..., None]], RotationTask]:
    """`@task` with our short flags and our task class."""
    decorate: Callable[[Callable[..., None]], RotationTask] = task(klass=RotationTask, auto_shortflags=False, **kwargs)
    return decorate


def _setting(c: Context, key: str) -> object:
    return c.config.get("rotation", {}).get(key)


def _root(c: Context) -> Path:
    """The stack: `rotation.root`, else ROTATION_ROOT, else here. A relative root written in a
    settings file (`-f prod.yaml`, the project's invoke.yaml) counts from that file's folder, not
    from where the command runs, so that a printed `cd STACK && inv ...` finds the same stack."""
    configured = _setting(c, "root")
    if not configured:
        return Path(os.environ.get("ROTATION_ROOT") or os.getcwd()).expanduser().absolute()
    path = Path(str(configured)).expanduser()
    layers = [("_runtime", "_runtime_path")]
    if "INVOKE_ROTATION_ROOT" not in os.environ:  # the environment ranks above the project's file
        layers.append(("_project", "_project_path"))
    for layer, source in layers:
        written = (getattr(c.config, layer, None) or {}).get("rotation", {}).get("root")
        origin = getattr(c.config, source, None)
        if written == configured and origin:
            return (Path(origin).parent / path).absolute()
    return path.absolute()


def _dry(c: Context, flag: bool = False) -> bool:
    """`--dry-run`, or Invoke's own `--dry`/`-R` (`run.dry`), which makes every task a dry run."""
    return bool(flag or c.config.get("run", {}).get("dry"))


def _program() -> list[str]:
    """This program as a person types it again: its name where PATH finds this very program, else
    its path (`.venv/bin/inv` outside an activated environment); `python -m rotation` as `rotation`
    where PATH has one, else as it was run."""
    invoked = Path(sys.argv[0])
    if invoked.name in ("inv", "invoke", "rotation"):
        found = shutil.which(invoked.name)
        same = found is not None and Path(found).resolve() == invoked.resolve()
        return [invoked.name if same else str(invoked.absolute())]
    return ["rotation"] if shutil.which("rotation") else [sys.executable, "-m", "rotation"]


def _command(c: Context, config: str | None) -> Command:
    """How to spell a follow-up command so that it works as printed, from where it was printed."""
    words = _program()
    settings = getattr(c.config, "_runtime_path", None)
    if settings:
        words += ["-f", str(Path(settings).absolute())]  # printed after a `cd STACK` too
    after = ["--config", str(Path(config).expanduser().absolute())] if config else []

    def command(task_words: str) -> str:
        return shlex.join(words) + f" {task_words}" + (f" {shlex.join(after)}" if after else "")

    return command


@dataclass
class _Record:
    """What one task run did, for the audit log and the webhooks (names only, never values)."""

    task: str
    stack: Stack | None = None
    secrets: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    run: str | None = None
    announce: bool = True
    dry_run: bool = False
    accept_data_loss: bool = False
    verdict: str | None = None  # the outcome, where a non-zero exit is not a failure (`due`)
    recover: str = "rotation recover"  # the recover command, spelled as the user invoked us


def _stack(
    c: Context, record: _Record, config: str | None = None, *, read_only: bool = False, recover: bool = True
) -> Stack:
    """The stack this task works on, found (not assumed), with any interrupted run dealt with first."""
    root = _root(c)
    explicit = config or _setting(c, "config")
    settings, bundled = stacks.locate(root, str(explicit) if explicit else None, BUNDLED_CONFIG)
    if bundled:
        present.err(f"no secrets-config.yaml in {root}: using the bundled configuration for the local AI stack")
    timeout = _number(_setting(c, "lock_timeout") or DEFAULTS["lock_timeout"], "rotation.lock_timeout")
    stack = stacks.Stack(root, settings, lock_timeout=timeout, task=record.task, waiting=present.err)
    record.stack, record.recover = stack, _command(c, config)("recover")
    if recover:
        recovered, pending_reason = stack.recover_first(read_only=read_only, finish=record.recover)
        if pending_reason:
            present.err(f"warning: {pending_reason}")
        elif recovered:
            present.err(recovered)
    return stack


@contextmanager
def _task(name: str, json: bool = False) -> Iterator[_Record]:
    """Run a task body: a `RotationError` becomes one line and its exit code (with `--json`, also a
    JSON error on stdout), and the outcome goes to the audit log and the webhooks whatever happens."""
    record = _Record(name)
    started = time.monotonic()
    outcome = "failed: interrupted"  # until the body says otherwise: a crash is never logged as ok
    terminate = _interruptible()
    try:
        yield record
        outcome = "ok"
    except KeyboardInterrupt:
        raise present.error(_interrupted(record), json) from None
    except RotationError as exc:
        outcome = f"failed: {exc}"
        raise present.error(exc, json) from None
    except Exit as exc:
        outcome = record.verdict or ("ok" if not exc.code else f"failed: exit code {exc.code}")
        raise
    finally:
        if terminate is not None:
            signal.signal(signal.SIGTERM, terminate)
        _record(record, outcome, time.monotonic() - started)


def _interruptible() -> signal._HANDLER:
    """SIGTERM (a service manager stopping us, `kill`) taken as Ctrl-C for the task, so that both undo
    what they can in place; the handler it replaces, to put back (None off the main thread)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, interrupt)


def _interrupted(record: _Record) -> Interrupted:
    """What an interrupt that reached the task left behind: a journal or a run that `recover`
    finishes, or nothing half-done."""
    stack = record.stack
    try:
        left = stack is not None and (journal.pending(stack.store) is not None or pipeline.interrupted(stack))
    except RotationError:
        left = True  # a journal it cannot even read: recover says what is wrong with it
    if left:
        return Interrupted(
            f"interrupted: run `{record.recover}` to finish or roll back what was under way", steps=["recover"]
        )
    return Interrupted("interrupted; nothing was left half-done")


def _record(record: _Record, outcome: str, seconds: float) -> None:
    stack = record.stack
    if stack is None or not stack.store.directory.is_dir() or stack.store.directory.is_symlink():
        return
    done = audit.TaskRun(
        record.task,
        str(stack.root),
        outcome,
        seconds,
        tuple(record.secrets),
        tuple(record.services),
        record.run,
        record.dry_run,
        record.accept_data_loss,
    )
    urls = stack.config.notify if record.announce or done.failed else ()
    for warning in audit.record(stack.store.directory, done, urls, stack.env):
        present.err(f"warning: {warning}")


def _number(value: object, flag: str, kind: type[int] | type[float] = float) -> float:
    """A flag's numeric value, finite and above zero; anything else is a one-line error naming the flag."""
    try:
        number = kind(str(value))
    except (TypeError, ValueError):
        raise SelectionError(f"{flag} takes a number, not '{value}'") from None
    if not math.isfinite(number):
        raise SelectionError(f"{flag} must be a finite number of seconds or items, not '{value}'")
    if number <= 0:
        raise SelectionError(f"{flag} must be greater than 0, not '{value}'")
    return number


def _names(flag: str | None) -> list[str] | None:
    if not flag:
        return None
    return [name.strip() for name in flag.split(",") if name.strip()]


@_task_options(
    help={
        "dry-run": "Print the plan (and check the databases) without writing anything.",
        "secrets": "Comma-separated secrets to rotate; default: every auto_rotate secret.",
        "due": "Rotate only the secrets past their rotation_period (see `rotation due`).",
        "skip-backup": "Keep no backup after a successful run (crash safety still uses one).",
        "config": "Configuration file; default: <root>/secrets-config.yaml, then scripts/, then bundled.",
        "accept-data-loss": "Allow rotating keys that encrypt stored data (encrypts_data: true).",
        "json": "Print machine-readable JSON only.",
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
    dry = _dry(c, dry_run)
    with _task("rotate", json) as record:
        record.announce, record.dry_run, record.accept_data_loss = not dry, dry, accept_data_loss
        stack = _stack(c, record, config, read_only=dry)
        selection = _names(secrets)
        if due:
            if selection:
                raise SelectionError("rotate takes --due or --secrets, not both")
            selection = [
                d.name
                for d in schedule.due(
                    stack.config,
                    stack.store.all(),
                    expiries=certificates.expiries(stack.root, stack.config.certificates),
                )
            ]
            if not selection:
                record.announce = False
                return present.nothing_due(json, dry)
        result = runs.rotate(
            stack,
            selection,
            accept_data_loss=accept_data_loss,
            skip_backup=skip_backup,
            dry_run=dry,
            run=_setting(c, "run"),  # type: ignore[arg-type]
        )
        record.secrets, record.services = list(result.plan.names), list(result.plan.services)
        if result.backup is not None:
            c.config.rotation.run = record.run = result.backup.id
    present.rotation(result, json, _command(c, config))


@_task_options(
    help={
        "list": "Show every backup: id, age, kind, rotated secrets, affected services, status.",
        "latest": "Restore the newest rotation backup.",
        "backup": "Restore this backup id (or its directory name).",
        "dry-run": "Show what would change without writing anything.",
        "config": "Configuration file (see rotate).",
        "json": "Print machine-readable JSON only.",
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
    dry = _dry(c, dry_run)
    with _task("restore", json) as record:
        record.announce, record.dry_run = not (list or dry), dry and not list
        if not list and not (latest or backup):
            raise SelectionError("restore needs --latest, --backup ID or --list")
        if latest and backup:
            raise SelectionError("restore takes --latest or --backup, not both")
        stack = _stack(c, record, config, read_only=list or dry)
        if list:
            return present.backups(stack.store.all(), stack.store.damaged(), json)
        result = runs.restore(stack, backup, dry_run=dry)
        record.run = result.restored.id
        record.secrets = [*result.restored.rotated_secrets]
        record.services = [*result.restored.affected_services]
    present.restoration(result, json, _command(c, config))


@_task_options(
    help={
        "version": "Pull this version of the store's secret; default: the current one.",
        "dry-run": "Show what would change (and check the databases) without writing anything.",
        "accept-data-loss": "Allow pulling a different value of a key that encrypts stored data.",
        "config": "Configuration file (see rotate).",
        "json": "Print machine-readable JSON only.",
    }
)
def pull(
    c: Context,
    version: str | None = None,
    dry_run: bool = False,
    accept_data_loss: bool = False,
    config: str | None = None,
    json: bool = False,
) -> None:
    """Write the store's current values into this stack's files (and databases), as a rotation does."""
    dry = _dry(c, dry_run)
    with _task("pull", json) as record:
        record.announce, record.dry_run, record.accept_data_loss = not dry, dry, accept_data_loss
        number = int(_number(version, "--version", int)) if version is not None else None
        stack = _stack(c, record, config, read_only=dry)
        result = runs.pull(
            stack,
            number,
            accept_data_loss=accept_data_loss,
            dry_run=dry,
            run=_setting(c, "run"),  # type: ignore[arg-type]
        )
        record.secrets, record.services = list(result.plan.names), list(result.plan.services)
        if result.backup is not None:
            c.config.rotation.run = record.run = result.backup.id
        else:
            record.announce = False  # nothing changed
    present.pulled(result, json, _command(c, config))


@_task_options(
    help={
        "save": "Write the state to FILE as JSON.",
        "compare": "Report regressions against a state saved with --save; any regression exits 1.",
        "verbose": "For unhealthy services: last healthcheck output, exit code, OOMKilled, last log lines.",
        "json": "Print the state as JSON only.",
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
    with _task("check", json) as record:
        record.announce = False
        stack = _stack(c, record, config, read_only=not save or _dry(c))
        engine = stack.engine()
        result = pipeline.check(stack, engine, health.Snapshot.load(Path(compare)) if compare else None)
        if save and _dry(c):
            present.err(f"dry run: the state was not saved to {save}")
        elif save:
            fsio.write_atomic(Path(save), report.dumps(result.snapshot.to_json()).encode(), mode=0o644)
        details = (lambda state: report.details(state, engine.logs(state.service, 20))) if verbose else None
        verdict = present.check(result, stack.config, json, details)
        if verdict is not None:
            raise verdict


@_task_options(help={"config": "Configuration file (see rotate)."})
def precheck(c: Context, config: str | None = None) -> None:
    """Health gate: save the state for this run and stop the pipeline if anything is unhealthy."""
    with _task("precheck") as record:
        record.announce, record.dry_run = False, _dry(c)
        stack = _stack(c, record, config)
        result = pipeline.precheck(stack, stack.engine(), dry_run=record.dry_run)
        if result.run is not None:
            c.config.rotation.run = record.run = result.run.id
        verdict = present.precheck(result)
        if verdict is not None:
            raise verdict


def _recreated(failed: pipeline.Failure | None, services: Sequence[str]) -> Sequence[str]:
    """The services a task names in the audit log: after a rollback, those the rollback recreated."""
    return failed.rolled_back.restart.order if failed is not None and failed.rolled_back is not None else services


def _pipeline_run(c: Context, stack: Stack, record: _Record) -> Run | None:
    """This pipeline's run, else the latest rotation, recorded with its secrets for the audit log."""
    run = stack.run(_setting(c, "run"))  # type: ignore[arg-type]
    if run is not None:
        record.run, record.secrets = run.id, [*run.rotated_secrets]
    return run


@_task_options(
    help={
        "all": "Recreate every service of the project, not only those the rotation affected.",
        "services": "Comma-separated services (or container names) to recreate.",
        "no-healthcheck": "Do not wait for health after each recreate.",
        "timeout": f"Seconds to wait for the services to be healthy (default {DEFAULTS['timeout']:g}).",
        "parallel": f"How many independent services to recreate at once (default {DEFAULTS['parallel']}).",
        "no-rollback": "On failure, leave the stack as it is instead of rolling the rotation back.",
        "config": "Configuration file (see rotate).",
    }
)
def restart(
    c: Context,
    all: bool = False,  # noqa: A002 - the flag users type is --all
    services: str | None = None,
    no_healthcheck: bool = False,
    timeout: str = str(DEFAULTS["timeout"]),
    parallel: str = str(DEFAULTS["parallel"]),
    no_rollback: bool = False,
    config: str | None = None,
) -> None:
    """Recreate the services the latest rotation affected, in dependency order, each proven healthy."""
    with _task("restart") as record:
        record.dry_run = _dry(c)
        seconds, workers = _number(timeout, "--timeout"), int(_number(parallel, "--parallel", int))
        stack = _stack(c, record, config)
        engine = stack.engine()
        run = _pipeline_run(c, stack, record)
        outcome = pipeline.restart(
            stack,
            engine,
            run,
            services=_names(services),
            every=all,
            timeout=seconds,
            parallel=workers,
            healthcheck=not no_healthcheck,
            rollback=not no_rollback,
            dry_run=record.dry_run,
            progress=present.progress,
            command=_command(c, config),
            say=present.say,
        )
        record.services = [*_recreated(outcome.failure, outcome.services)]
        verdict = present.restart(outcome)
        if verdict is not None:
            raise verdict


@_task_options(
    help={
        "no-rollback": "On failure, leave the stack as it is instead of rolling the rotation back.",
        "timeout": f"Seconds to wait for health if it rolls back (default {DEFAULTS['timeout']:g}).",
        "config": "Configuration file (see rotate).",
    }
)
def verify(
    c: Context, no_rollback: bool = False, timeout: str = str(DEFAULTS["timeout"]), config: str | None = None
) -> None:
    """Compare the stack with its precheck state and run the configured probes; exit 1 on any failure."""
    with _task("verify") as record:
        record.dry_run = _dry(c)
        seconds = _number(timeout, "--timeout")
        stack = _stack(c, record, config)
        outcome = pipeline.verify(
            stack,
            stack.engine(),
            _pipeline_run(c, stack, record),
            rollback=not no_rollback,
            timeout=seconds,
            dry_run=record.dry_run,
            progress=present.progress,
            command=_command(c, config),
            say=present.say,
        )
        record.services = [*_recreated(outcome.failure, record.services)]
        verdict = present.verify(outcome)
        if verdict is not None:
            raise verdict


@_task_options(
    help={
        "config": "Configuration file (see rotate).",
        "json": "Print machine-readable JSON only.",
        "notify": "Also send one message listing what is due to every notify: URL (for a cron job or timer).",
    }
)
def due(c: Context, config: str | None = None, json: bool = False, notify: bool = False) -> None:
    """List the secrets past their rotation_period; exit 1 when some are due, 0 when none are."""
    with _task("due", json) as record:
        record.announce = False
        stack = _stack(c, record, config, read_only=True)
        found = schedule.due(
            stack.config, stack.store.all(), expiries=certificates.expiries(stack.root, stack.config.certificates)
        )
        record.secrets = [d.name for d in found]
        present.due(found, () if json else runs.key_sets(stack), json)
        if notify and found:
            message = audit.due_announcement(str(stack.root), record.secrets)
            present.warnings(audit.notify(stack.config.notify, message, stack.env()))
        if found:
            record.verdict = f"due: {', '.join(record.secrets)}"
            raise Exit(code=1)


@_task_options(
    help={
        "json": "Print machine-readable JSON only.",
        "limit": f"Show the newest N entries (default {DEFAULTS['log_limit']}).",
        "config": "Configuration file (see rotate).",
    }
)
def log(c: Context, json: bool = False, limit: str = str(DEFAULTS["log_limit"]), config: str | None = None) -> None:
    """Read the audit log: time, task, outcome, secrets, services, run and duration, newest first."""
    with _task("log", json) as record:
        record.announce = False
        count = int(_number(limit, "--limit", int))
        stack = _stack(c, record, config, read_only=True)
        record.stack = None  # reading the log is not itself worth a line in it
        entries, damaged = audit.read(stack.store.directory)
        present.log(entries[-count:], json)
        if damaged:
            present.err(f"warning: {damaged} damaged lines in {stack.store.directory / audit.AUDIT_LOG} were skipped")


@_task_options(
    iterable=["file"],
    help={
        "file": "A file to scan (rotation guard FILE...); default: what is staged in git, read from the index.",
        "config": "Configuration file (see rotate).",
    },
)
def guard(c: Context, file: list[str] | None = None, config: str | None = None) -> None:
    """Refuse a commit that holds a secret: any current or backed-up value, a backup, a .env (FILE...)."""
    with _task("guard") as record:
        record.announce = False
        cwd = Path.cwd()
        stack = _stack(c, record, config, read_only=True)
        record.stack = None  # a pre-commit hook runs at every commit: not worth a line in the audit log
        values = guardscan.values_of(stack.config, stack.root, stack.store)
        paths = list(file or []) or guardscan.staged(cwd)
        listed = sorted({name for spec in stack.config.secrets.values() for name in spec.files})
        result = guardscan.scan(paths, cwd, values, root=stack.root, backups=stack.store.directory, listed=listed)
        verdict = present.guard(result, values.short, guardscan.MIN_LENGTH)
        if verdict is not None:
            raise verdict


@_task_options(
    help={
        "timeout": f"Seconds to wait for health while rolling back (default {DEFAULTS['timeout']:g}).",
        "config": "Configuration file (see rotate).",
    }
)
def recover(c: Context, timeout: str = str(DEFAULTS["timeout"]), config: str | None = None) -> None:
    """Finish an interrupted run: databases, files and services back to one state (others do the first two too)."""
    with _task("recover") as record:
        record.announce = False
        seconds = _number(timeout, "--timeout")
        stack = _stack(c, record, config, recover=False)
        outcome = pipeline.recover(
            stack, stack.engine, timeout=seconds, progress=present.progress, command=_command(c, config)
        )
    present.recovered(outcome)


namespace = Collection(rotate, restore, pull, check, precheck, restart, verify, due, log, recover, guard)
namespace.configure({"rotation": {"root": None, "config": None, "lock_timeout": None, "run": None}})

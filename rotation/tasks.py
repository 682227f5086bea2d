"""The Invoke tasks: parse flags, call one use case, hand its result to `present`, exit with its code.

`inv` reads them through the top-level `tasks.py`; `rotation` is a `Program` over the same
collection (see `cli`). Several tasks on one command line (`rotation precheck rotate restart
verify`) share one config object, and with it the run they work on. Every task run that reaches
a stack is written to its audit log, and those that change or judge it are announced to the
configured webhooks. Invoke's own `--dry` makes every task a dry run: nothing that reads as dry
ever writes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task, task

from . import session
from .lazy import lazy
from .session import DEFAULTS

if TYPE_CHECKING:
    from . import audit, pipeline, present, runs
    from . import guard as guardscan
else:  # loaded on first use: --help, --list and completion import no use case (as pip's commands_dict)
    audit, guardscan, pipeline, present, runs = (
        lazy(f"{__package__}.{name}") for name in ("audit", "guard", "pipeline", "present", "runs")
    )

__all__ = ["DEFAULTS", "SHORT_FLAGS", "namespace"]

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
    dry = session.dry(c, dry_run)
    with session.task_run("rotate", json) as record:
        record.announce, record.dry_run, record.accept_data_loss = not dry, dry, accept_data_loss
        stack = session.find_stack(c, record, config, read_only=dry)
        selection = runs.selection(stack, session.names(secrets), due=due)
        if due and not selection:
            record.announce = False
            return present.nothing_due(json, dry)
        result = runs.rotate(
            stack,
            selection,
            accept_data_loss=accept_data_loss,
            skip_backup=skip_backup,
            dry_run=dry,
            run=session.setting(c, "run"),  # type: ignore[arg-type]
        )
        record.secrets, record.services = list(result.plan.names), list(result.plan.services)
        session.opened(c, record, result.backup)
    present.rotation(result, json, record.spell)


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
    dry = session.dry(c, dry_run)
    with session.task_run("restore", json) as record:
        record.announce, record.dry_run = not (list or dry), dry and not list
        session.one_of("restore", ("--list", list), ("--latest", latest), ("--backup ID", backup))
        stack = session.find_stack(c, record, config, read_only=list or dry)
        if list:
            record.stack = None  # a listing changes nothing: not worth a line in the audit log
            return present.backups(stack.store.all(), stack.store.damaged(), json)
        result = runs.restore(stack, backup, dry_run=dry)
        record.run = result.restored.id
        record.secrets = [*result.restored.rotated_secrets]
        record.services = [*result.restored.affected_services]
    present.restoration(result, json, record.spell)


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
    dry = session.dry(c, dry_run)
    with session.task_run("pull", json) as record:
        record.announce, record.dry_run, record.accept_data_loss = not dry, dry, accept_data_loss
        number = session.optional_number(version, "--version")
        stack = session.find_stack(c, record, config, read_only=dry)
        result = runs.pull(
            stack,
            number,
            accept_data_loss=accept_data_loss,
            dry_run=dry,
            run=session.setting(c, "run"),  # type: ignore[arg-type]
        )
        record.secrets, record.services = list(result.plan.names), list(result.plan.services)
        record.announce = result.backup is not None  # a pull that changed nothing is not news
        session.opened(c, record, result.backup)
    present.pulled(result, json, record.spell)


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
    with session.task_run("check", json) as record:
        record.announce = False
        stack = session.find_stack(c, record, config, read_only=not save or session.dry(c))
        engine = stack.engine()
        result = pipeline.check(
            stack, engine, compare=session.path(compare), save=session.path(save), dry_run=session.dry(c)
        )
        logs = (lambda service: engine.logs(service, 20)) if verbose else None
        verdict = present.check(result, stack.config, json, logs)
        if verdict is not None:
            raise verdict


@_task_options(help={"config": "Configuration file (see rotate)."})
def precheck(c: Context, config: str | None = None) -> None:
    """Health gate: save the state for this run and stop the pipeline if anything is unhealthy."""
    with session.task_run("precheck") as record:
        record.announce, record.dry_run = False, session.dry(c)
        stack = session.find_stack(c, record, config)
        result = pipeline.precheck(stack, stack.engine(), dry_run=record.dry_run)
        session.opened(c, record, result.run)
        verdict = present.precheck(result)
        if verdict is not None:
            raise verdict


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
    with session.task_run("restart") as record:
        record.dry_run = session.dry(c)
        seconds, workers = session.number(timeout, "--timeout"), int(session.number(parallel, "--parallel", int))
        stack = session.find_stack(c, record, config)
        engine = stack.engine()
        run = session.pipeline_run(c, stack, record)
        outcome = pipeline.restart(
            stack,
            engine,
            run,
            services=session.names(services),
            every=all,
            timeout=seconds,
            parallel=workers,
            healthcheck=not no_healthcheck,
            rollback=not no_rollback,
            dry_run=record.dry_run,
            progress=present.progress,
            say=present.say,
        )
        session.concluded(record, outcome.failure, outcome.services)
        verdict = present.restart(outcome, record.spell)
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
    with session.task_run("verify") as record:
        record.dry_run = session.dry(c)
        seconds = session.number(timeout, "--timeout")
        stack = session.find_stack(c, record, config)
        outcome = pipeline.verify(
            stack,
            stack.engine(),
            session.pipeline_run(c, stack, record),
            rollback=not no_rollback,
            timeout=seconds,
            dry_run=record.dry_run,
            progress=present.progress,
            say=present.say,
        )
        session.concluded(record, outcome.failure, record.services)
        verdict = present.verify(outcome, record.spell)
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
    with session.task_run("due", json) as record:
        record.announce = False
        stack = session.find_stack(c, record, config, read_only=True)
        found = runs.overdue(stack)
        record.secrets = [d.name for d in found]
        present.due(found, runs.key_sets(stack), json)
        if notify:
            present.warnings(audit.announce_due(stack, record.secrets))
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
    with session.task_run("log", json) as record:
        record.announce = False
        count = int(session.number(limit, "--limit", int))
        stack = session.find_stack(c, record, config, read_only=True)
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
    with session.task_run("guard") as record:
        record.announce = False
        cwd = Path.cwd()
        stack = session.find_stack(c, record, config, read_only=True)
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
    with session.task_run("recover") as record:
        record.announce = False
        seconds = session.number(timeout, "--timeout")
        stack = session.find_stack(c, record, config, recover=False)
        outcome = pipeline.recover(stack, stack.engine, timeout=seconds, progress=present.progress)
    present.recovered(outcome)


namespace = Collection(rotate, restore, pull, check, precheck, restart, verify, due, log, recover, guard)
namespace.configure(
    {"rotation": {"root": None, "config": None, "lock_timeout": None, "run": None, "bundled_told": None}}
)

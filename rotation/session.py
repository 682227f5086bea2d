"""The session beside the tasks: which stack a task works on (found, with any interrupted run dealt
with first), the audit record of the task run, how follow-up commands are spelled for the way the
user invoked us, and the flags every task parses the same way.

Nothing here prints a result (that is `present`) or decides what the tool does (the use cases).
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from invoke.context import Context
from invoke.exceptions import Exit

from .errors import Interrupted, RotationError, SelectionError, Step
from .lazy import lazy
from .rollout import DEFAULT_PARALLEL, DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from . import audit, journal, pipeline, present, report
    from . import stack as stacks
    from .backup import Run
    from .report import Spell
    from .stack import Stack
else:  # loaded on first use: --help, --list and completion import no use case
    audit, journal, pipeline, present, report, stacks = (
        lazy(f"{__package__}.{name}") for name in ("audit", "journal", "pipeline", "present", "report", "stack")
    )

__all__ = [
    "BUNDLED_CONFIG",
    "DEFAULTS",
    "Record",
    "concluded",
    "dry",
    "find_stack",
    "follow_up",
    "names",
    "number",
    "one_of",
    "opened",
    "optional_number",
    "path",
    "pipeline_run",
    "setting",
    "stack_root",
    "task_run",
]

BUNDLED_CONFIG = Path(__file__).with_name("secrets-config.yaml")
# Defaults of the numeric flags and settings, in one place.
DEFAULTS = {"timeout": DEFAULT_TIMEOUT, "parallel": DEFAULT_PARALLEL, "lock_timeout": 60.0, "log_limit": 20}


def setting(c: Context, key: str) -> object:
    """A `rotation.*` setting from Invoke's configuration (invoke.yaml, `-f FILE`, INVOKE_ROTATION_*)."""
    return c.config.get("rotation", {}).get(key)


def stack_root(c: Context) -> Path:
    """The stack: `rotation.root`, else ROTATION_ROOT, else here. A relative root written in a
    settings file (`-f prod.yaml`, the project's invoke.yaml) counts from that file's folder, not
    from where the command runs, so that a printed `cd STACK && inv ...` finds the same stack."""
    configured = setting(c, "root")
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


def dry(c: Context, flag: bool = False) -> bool:
    """`--dry-run`, or Invoke's own `--dry`/`-R` (`run.dry`), which makes every task a dry run."""
    return bool(flag or c.config.get("run", {}).get("dry"))


def program() -> list[str]:
    """This program as a person types it again: its name where PATH finds this very program, else
    its path (`.venv/bin/inv` outside an activated environment); `python -m rotation` as `rotation`
    where PATH has one, else as it was run."""
    invoked = Path(sys.argv[0])
    if invoked.name in ("inv", "invoke", "rotation"):
        found = shutil.which(invoked.name)
        same = found is not None and Path(found).resolve() == invoked.resolve()
        return [invoked.name if same else str(invoked.absolute())]
    return ["rotation"] if shutil.which("rotation") else [sys.executable, "-m", "rotation"]


def follow_up(c: Context, config: str | None) -> Spell:
    """How the presenter spells a step of ours so that it works as printed, from where it was
    printed: the program as the user invoked it, with its settings file and `--config`."""
    words = program()
    settings = getattr(c.config, "_runtime_path", None)
    if settings:
        words += ["-f", str(Path(settings).absolute())]  # printed after a `cd STACK` too
    after = ["--config", str(Path(config).expanduser().absolute())] if config else []

    def spell(step: Step) -> str:
        if not step.ours:
            return step.words
        return shlex.join(words) + f" {step.words}" + (f" {shlex.join(after)}" if after else "")

    return spell


@dataclass
class Record:
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
    spell: Spell = field(default=lambda step: report.plain(step))  # find_stack adds the task's settings


def find_stack(
    c: Context, record: Record, config: str | None = None, *, read_only: bool = False, recover: bool = True
) -> Stack:
    """The stack this task works on, found (not assumed), with any interrupted run dealt with first."""
    record.spell = follow_up(c, config)
    root = stack_root(c)
    explicit = config or setting(c, "config")
    settings, bundled = stacks.locate(root, str(explicit) if explicit else None, BUNDLED_CONFIG)
    if bundled and setting(c, "bundled_told") != str(root):  # once per command line, not once per task
        present.err(
            f"no secrets-config.yaml in {root}: using the bundled configuration for the local AI stack", note=True
        )
        c.config.rotation.bundled_told = str(root)
    timeout = number(setting(c, "lock_timeout") or DEFAULTS["lock_timeout"], "rotation.lock_timeout")
    stack = stacks.Stack(root, settings, lock_timeout=timeout, task=record.task, waiting=present.err)
    record.stack = stack
    if recover:
        recovered, pending_reason = stack.recover_first(read_only=read_only)
        if pending_reason:
            present.err(f"warning: {pending_reason}; when that is fixed, run: {record.spell(Step('recover'))}")
        elif recovered:
            present.err(recovered)
    return stack


@contextmanager
def task_run(name: str, json: bool = False) -> Iterator[Record]:
    """Run a task body: a `RotationError` becomes one line and its exit code (with `--json`, also a
    JSON error on stdout), and the outcome goes to the audit log and the webhooks whatever happens."""
    record = Record(name)
    started = time.monotonic()
    outcome = "failed: interrupted"  # until the body says otherwise: a crash is never logged as ok
    terminate = _interruptible()
    try:
        yield record
        outcome = "ok"
    except KeyboardInterrupt:
        raise present.error(_interrupted(record), json, record.spell) from None
    except RotationError as exc:
        outcome = f"failed: {exc}"
        raise present.error(exc, json, record.spell) from None
    except Exit as exc:
        outcome = record.verdict or ("ok" if not exc.code else f"failed: exit code {exc.code}")
        raise
    finally:
        if terminate is not None:
            signal.signal(signal.SIGTERM, terminate)
        _audit(record, outcome, time.monotonic() - started)


def _interruptible() -> signal._HANDLER:
    """SIGTERM (a service manager stopping us, `kill`) taken as Ctrl-C for the task, so that both undo
    what they can in place; the handler it replaces, to put back (None off the main thread)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, interrupt)


def _interrupted(record: Record) -> Interrupted:
    """What an interrupt that reached the task left behind: a journal or a run that `recover`
    finishes, or nothing half-done."""
    stack = record.stack
    try:
        left = stack is not None and (journal.pending(stack.store) is not None or pipeline.interrupted(stack))
    except RotationError:
        left = True  # a journal it cannot even read: recover says what is wrong with it
    if left:
        return Interrupted("interrupted; to finish or roll back what was under way, run:", steps=["recover"])
    return Interrupted("interrupted; nothing was left half-done")


def _audit(record: Record, outcome: str, seconds: float) -> None:
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


def number(value: object, flag: str, kind: type[int] | type[float] = float) -> float:
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


def optional_number(value: str | None, flag: str) -> int | None:
    """An optional whole-number flag (`--version N`): None when not given, else as `number` checks it."""
    return None if value is None else int(number(value, flag, int))


def path(flag: str | None) -> Path | None:
    """A file flag (`--save FILE`), as given; None when not given."""
    return Path(flag) if flag else None


def one_of(task: str, *flags: tuple[str, object]) -> None:
    """A task that does one of several things takes exactly one of these flags, each (name, value)."""
    given = [name.split()[0] for name, value in flags if value]
    if not given:
        raise SelectionError(f"{task} needs {_either([name for name, _ in flags])}", key=flags[0][0].split()[0])
    if len(given) > 1:
        raise SelectionError(f"{given[-1]}: {task} takes {_either(given)}, not {'both' if len(given) == 2 else 'all'}")


def _either(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}"


def opened(c: Context, record: Record, run: Run | None) -> None:
    """The run a task opened becomes the one the next tasks of this command line work on."""
    if run is not None:
        c.config.rotation.run = record.run = run.id


def names(flag: str | None) -> list[str] | None:
    if not flag:
        return None
    return [name.strip() for name in flag.split(",") if name.strip()]


def concluded(record: Record, failed: pipeline.Failure | None, services: Sequence[str]) -> None:
    """What a restart or verify did, for the audit log: the services it recreated (after a rollback,
    those the rollback recreated), and an outcome that names a rollback and its reason."""
    rolled_back = failed.rolled_back if failed is not None else None
    record.services = [*(rolled_back.restart.order if rolled_back is not None else services)]
    if failed is None:
        return
    if failed.rollback_error is not None:
        record.verdict = f"failed: {failed.reason}; the rollback failed too: {failed.rollback_error}"
    elif rolled_back is not None:
        record.verdict = f"rolled back run {rolled_back.run.id}: {failed.reason}"
    else:
        record.verdict = f"failed: {failed.reason}"


def pipeline_run(c: Context, stack: Stack, record: Record) -> Run | None:
    """This pipeline's run, else the latest rotation, recorded with its secrets for the audit log."""
    run = stack.run(setting(c, "run"))  # type: ignore[arg-type]
    if run is not None:
        record.run, record.secrets = run.id, [*run.rotated_secrets]
    return run

"""The presenter: each task's result for people (text, colour per stream, progress lines) or for
scripts (JSON), rendered by `report` from the same data, so the two cannot drift.

A task hands its use case's result here and raises the `Exit` it gets back; nothing here decides
what the tool does, only how it is shown. Colour is decided per stream (`report.paint`).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from invoke.exceptions import Exit

from . import report
from .escape import printable

if TYPE_CHECKING:
    from .backup import Run
    from .config import Config
    from .errors import RotationError
    from .guard import Scan
    from .pipeline import CheckResult, Failure, PrecheckResult, RecoverOutcome, RestartOutcome, VerifyOutcome
    from .plan import KeyPhase
    from .runs import PullResult, RestoreResult, RotationResult
    from .schedule import Due

__all__ = ["err", "error", "failure", "progress", "quiet", "quiet_stdout", "red", "say", "width"]


def quiet_stdout() -> None:
    """After a reader closed our stdout (`| head`), send the rest to nothing: the work goes on quietly."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def width() -> int:
    """How wide a table may be on standard output: `COLUMNS`, or the terminal's width on a
    terminal, never under report.WIDTH; elsewhere (a pipe, a file, a cron log) report.WIDTH."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():
        return max(report.WIDTH, int(columns))
    if sys.stdout.isatty():
        return max(report.WIDTH, shutil.get_terminal_size().columns)
    return report.WIDTH


_quiet = False  # `-q`: no progress lines and no notes, for a cron job's log


def quiet(on: bool) -> None:
    """Leave out progress lines and notes (`rotation -q`); results, warnings and errors stay."""
    global _quiet
    _quiet = on


def err(text: str, colour: str = "yellow", *, note: bool = False) -> None:
    """A `rotation: ...` line on standard error: a warning, or a `note` that `-q` leaves out."""
    if note and _quiet:
        return
    print(report.paint(f"rotation: {text}", colour, sys.stderr), file=sys.stderr)


def red(text: str) -> str:
    """`text` in red, as standard error shows it: the message of a failing `Exit`."""
    return report.paint(text, "red", sys.stderr)


def say(line: str) -> None:
    """A line a pipeline says on its way (rolling back...), in yellow."""
    print(report.paint(line, "yellow"), flush=True)


def error(exc: RotationError, json: bool, spell: report.Spell | None = None) -> Exit:
    """The `Exit` for an error: its message on standard error, one escaped line per line of it, and
    the steps to run next below it, spelled by `spell`; with `--json` the error as data on standard
    output too."""
    spell = spell or report.plain
    if json:
        _json(report.error_json(exc, spell))
    return Exit(red(f"rotation: {_message(exc, spell)}"), exc.exit_code)


def _message(exc: RotationError, spell: report.Spell) -> str:
    shown = [printable(line) for line in str(exc).splitlines()]
    return "\n".join(shown + [printable(line) for line in report.step_lines(exc.steps, spell)])


def progress(service: str, status: str, seconds: float) -> None:
    """One line per service as it moves, so a person watching a long restart sees it advance.

    A closed pipe must not stop a restart half-way, so a line that cannot be written is dropped.
    """
    if _quiet:
        return
    colour = {"healthy": "green", "failed": "red", "left running": "yellow"}.get(status)
    line = f"  {seconds:6.1f}s  {service}: {status}"
    try:
        print(report.paint(line, colour) if colour else line, flush=True)
    except BrokenPipeError:
        quiet_stdout()


def _json(data: Any) -> None:
    print(report.dumps(data))


def _warnings(warnings: Sequence[str], recovered: str | None) -> None:
    if recovered:
        err(recovered)
    for warning in warnings:
        err(f"warning: {warning}")


def rotation(result: RotationResult, json: bool, spell: report.Spell) -> None:
    """A rotation or its dry run: the plan, what changed, the backup and what to run next."""
    if json:
        return _json(report.rotation_json(result))
    _warnings(result.plan.warnings, result.recovered)
    print(report.rotation_text(result, spell))


def nothing_due(json: bool, dry_run: bool) -> None:
    """`rotate --due` with nothing due."""
    print(report.dumps(report.nothing_due_json(dry_run)) if json else "rotate: no secret is due")


def restoration(result: RestoreResult, json: bool, spell: report.Spell) -> None:
    """A restore or its dry run."""
    if json:
        return _json(report.restore_json(result))
    _warnings((), result.recovered)
    print(report.restore_text(result, spell))


def pulled(result: PullResult, json: bool, spell: report.Spell) -> None:
    """A pull or its dry run."""
    if json:
        return _json(report.pull_json(result))
    _warnings(result.plan.warnings, result.recovered)
    print(report.pull_text(result, spell))


def backups(found: Sequence[Run], damaged: dict[str, str], json: bool) -> None:
    """`restore --list`: every backup, and a warning for each damaged one."""
    for ident, why in damaged.items():
        err(f"warning: backup {ident} is damaged and skipped: {printable(why)}")
    print(report.dumps(report.backups_json(found)) if json else report.backups_table(found, width=width()))


def check(result: CheckResult, config: Config, json: bool, logs: Callable[[str], str] | None) -> Exit | None:
    """Every service's state (with `logs` of each unhealthy one: `--verbose`); the `Exit` when not healthy."""
    if result.unsaved:
        err(f"dry run: the state was not saved to {result.unsaved}")
    print(report.dumps(report.check_json(result)) if json else report.check_text(result, config))
    if logs is not None and not json:
        for state in result.snapshot.unhealthy:
            print(report.details(state, logs(state.service)))
    if result.healthy:
        return None
    names = ", ".join(s.service for s in result.snapshot.unhealthy) or report.count(
        len(result.regressions), "regression"
    )
    return Exit(red(f"rotation: not healthy: {names}"), 1)


def precheck(result: PrecheckResult) -> Exit | None:
    """The health gate's verdict: the table and the `Exit` when something is unhealthy."""
    if not result.ok:
        print(report.states_table(result.snapshot))
        names = ", ".join(s.service for s in result.snapshot.unhealthy)
        return Exit(red(f"rotation: precheck failed, not healthy: {names}; nothing was rotated"), 1)
    healthy = report.count(len(result.snapshot.states), "service")
    if result.run is None:
        print(f"precheck (dry run): {healthy} healthy; no run was opened")
    else:
        print(f"precheck: {healthy} healthy; state saved in run {result.run.id}")
    return None


def failure(failed: Failure, spell: report.Spell) -> Exit:
    """The `Exit` for a failed restart or verify: rolled back, not rolled back, or a rollback that
    failed (with the steps that finish it by hand)."""
    if failed.rollback_error is not None:
        shown = _message(failed.rollback_error, spell)
        return Exit(red(f"rotation: {printable(failed.reason)}\n{shown}"), failed.rollback_error.exit_code)
    if failed.rolled_back is None:
        return Exit(red(f"rotation: {failed.reason}"), 1)
    order = failed.rolled_back.restart.order
    return Exit(
        red(
            f"rotation: ROLLED BACK run {failed.rolled_back.run.id} because {failed.reason}. Files and databases "
            f"are back on the values before the rotation, and the recreated services ({', '.join(order) or 'none'}) "
            "are healthy"
        ),
        1,
    )


def restart(outcome: RestartOutcome, spell: report.Spell) -> Exit | None:
    """What a restart recreated, how (start-first or stop-late), what failed and each service's
    downtime; the `Exit` when it failed."""
    for name in outcome.absent:
        err(f"warning: {name} is not a service of this stack; nothing to recreate there")
    if not outcome.services:
        print("restart: no service to recreate")
        return None
    if outcome.result is None:
        print(f"restart (dry run): would recreate {', '.join(outcome.services)} in dependency order; nothing was done")
        print("\n".join(report.strategy_lines(outcome.strategies)))
        return None
    print(f"restart: recreated {', '.join(outcome.result.order) or '(none)'}, in dependency order")
    print("\n".join(report.strategy_lines(outcome.strategies)))
    for line in outcome.problems:
        print(report.paint(f"failed: {line}", "red"))
    if outcome.failure is not None:
        return failure(outcome.failure, spell)
    rechecked = sorted(set(outcome.result.outcome) - set(outcome.services))
    also = f", and {', '.join(rechecked)} that depend on them passed a new healthcheck" if rechecked else ""
    print(report.paint(f"restart: {report.count(len(outcome.services), 'service')} healthy{also}", "green"))
    if outcome.result.downtime:
        down = ", ".join(f"{name} {secs:.1f}s" for name, secs in sorted(outcome.result.downtime.items()))
        print(f"restart: without a healthy container: {down}")
    return None


def verify(outcome: VerifyOutcome, spell: report.Spell) -> Exit | None:
    """The stack against its precheck state, and each probe; the `Exit` when something failed."""
    print(report.states_table(outcome.snapshot))
    if outcome.before is None:
        print(report.paint("verify: no precheck state for this run; checking health only", "yellow"))
    for line in outcome.regressions:
        print(report.paint(f"regression: {line}", "red"))
    for probe in outcome.probes:
        mark = report.paint("ok  ", "green") if probe.ok else report.paint("FAIL", "red")
        print(f"{mark} {probe.name}: {probe.detail}")
    if outcome.failure is not None:
        return failure(outcome.failure, spell)
    print(report.paint("verify: every service healthy, every probe passed", "green"))
    return None


def due(found: Sequence[Due], phases: Sequence[KeyPhase], json: bool) -> None:
    """What is due, with the signing key sets between phases."""
    print(report.dumps(report.due_json(found)) if json else report.due_table(found, phases))


def log(entries: Sequence[Any], json: bool) -> None:
    """The newest audit log entries."""
    print(report.dumps(report.log_json(entries)) if json else report.log_table(entries, width()))


def guard(result: Scan, short: Sequence[str], minimum: int) -> Exit | None:
    """The guard's findings; the `Exit` that refuses the commit when there are any."""
    if short:
        err(f"note: not looked for, shorter than {minimum} characters: {', '.join(short)}", note=True)
    for finding in result.findings:
        print(finding.describe())
    if result.findings:
        return Exit(
            red(
                f"rotation: guard: {len(result.findings)} secrets or secret files in "
                f"{report.count(result.files, 'file')}; "
                "remove them from the commit (git restore --staged FILE) and rotate any value that was pushed"
            ),
            1,
        )
    print(f"guard: no secret in {report.count(result.files, 'file')}")
    return None


def recovered(outcome: RecoverOutcome) -> None:
    """What `recover` finished."""
    if outcome.journal:
        print(outcome.journal)
    if outcome.rolled_back is not None:
        order = ", ".join(outcome.rolled_back.restart.order) or "none"
        print(f"recover: rolled back the interrupted run {outcome.rolled_back.run.id}; recreated: {order}")
    if not outcome.journal and outcome.rolled_back is None:
        print("recover: nothing to finish; no run was interrupted")


def warnings(found: Sequence[str]) -> None:
    """Warnings from a side job (a notification that could not be sent), on standard error."""
    for warning in found:
        err(f"warning: {warning}")

"""Text and JSON for people and scripts: plans, results, backup tables. Values never appear."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from .backup import Run, age, local_time
from .config import Config
from .engines import ServiceState
from .errors import RotationError, Step, count
from .escape import printable
from .health import Snapshot
from .pipeline import CheckResult
from .plan import KeyPhase, Plan
from .replacement import Strategy
from .runs import PullResult, RestoreResult, RotationResult
from .schedule import Due

__all__ = [
    "WIDTH",
    "Spell",
    "backups_json",
    "backups_table",
    "colour_on",
    "count",
    "details",
    "due_json",
    "due_table",
    "dumps",
    "error_json",
    "fit",
    "log_json",
    "log_table",
    "nothing_due_json",
    "paint",
    "plain",
    "restore_json",
    "restore_text",
    "rotation_json",
    "rotation_text",
    "states_table",
    "step_lines",
    "table",
]

_COLOURS = {"red": "31", "green": "32", "yellow": "33", "bold": "1", "dim": "2"}
_ANSI = re.compile(r"\033\[[0-9;]*m")
WIDTH = 100  # every table fits a 100-column terminal

Cell = str | Sequence[str]
Spell = Callable[[Step], str]  # a step -> the line a person runs, as the user invoked the tool


def plain(step: Step) -> str:
    """A step as it reads when nothing says how the tool was invoked: `rotation TASK`."""
    return f"rotation {step.words}" if step.ours else step.words


def step_lines(steps: Iterable[Step], spell: Spell) -> list[str]:
    """Steps to run, one indented line each, with what each does as a shell comment."""
    return [f"    {spell(step)}" + (f"    # {step.why}" if step.why else "") for step in steps]


def colour_on(stream: Any) -> bool:
    """Whether to colour `stream`: NO_COLOR wins, then FORCE_COLOR, then whether it is a terminal."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR", "0") not in ("", "0"):
        return True
    return bool(getattr(stream, "isatty", lambda: False)())


def paint(text: str, colour: str, stream: Any = None) -> str:
    """`text` in `colour` when the stream it is meant for (stdout by default) should be coloured."""
    if not colour_on(stream or sys.stdout):
        return text
    return f"\033[{_COLOURS[colour]}m{text}\033[0m"


def _visible(text: str) -> int:
    return len(_ANSI.sub("", text))


def fit(items: Sequence[str], width: int) -> str:
    """`a, b, c` joined, or as many as fit in `width` followed by `+N more`."""
    text = ", ".join(items) or "-"
    if len(text) <= width:
        return text
    for shown in range(len(items) - 1, -1, -1):
        more = f"+{len(items) - shown} more"
        head = ", ".join(items[:shown])
        candidate = f"{head} {more}" if head else more
        if len(candidate) <= width:
            return candidate
    return f"+{len(items)} more"


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], width: int = WIDTH) -> str:
    """A left-aligned plain-text table at most `width` columns wide: list cells give way first."""
    natural = [
        max([len(h)] + [_visible(c) if isinstance(c, str) else len(", ".join(c) or "-") for c in column])
        for h, *column in zip(headers, *rows, strict=False)
    ]
    flexible = [i for i in range(len(headers)) if any(not isinstance(r[i], str) for r in rows)]
    widths = list(natural)
    spare = width - 2 * (len(headers) - 1) - sum(natural[i] for i in range(len(headers)) if i not in flexible)
    wanted = sum(natural[i] for i in flexible)
    if flexible and wanted > spare:
        for left, i in enumerate(sorted(flexible, key=lambda k: natural[k]), start=0):
            share = spare // (len(flexible) - left)  # the narrow ones take what they need, the rest split
            widths[i] = max(len(headers[i]), min(natural[i], share), 8)
            spare -= widths[i]

    def render(cell: Cell, w: int) -> str:
        text = cell if isinstance(cell, str) else fit(list(cell), w)
        return text + " " * (w - _visible(text))

    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(render(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def dumps(data: Any) -> str:
    """Stable, indented JSON."""
    return json.dumps(data, indent=2, sort_keys=True)


def rotation_json(result: RotationResult) -> dict[str, Any]:
    """A rotation for scripts: names, reasons, lengths, files, services, backup id; never a value."""
    plan = result.plan
    return {
        "dry_run": result.dry_run,
        "secrets": [
            {
                "name": c.name,
                "type": c.spec.type,
                "reason": c.reason,
                "old": c.old.describe() if c.old else None,
                "new": c.new.describe(),
            }
            for c in plan.changes
        ],
        "rotated_secrets": list(plan.names),
        "files": list(plan.files),
        "affected_services": list(plan.services),
        "affected_by": {service: list(names) for service, names in plan.because.items()},
        "strategies": {service: strategy.to_json() for service, strategy in plan.strategies.items()},
        "phases": dict(plan.phases),
        "certificates": [
            {"name": c.spec.name, "old": c.old.to_json() if c.old else None, "new": c.new.described.to_json()}
            for c in plan.certificates
        ],
        "reloaded": list(result.reloaded),
        "database": list(result.database),
        "stores": list(result.stores),
        "backup": result.backup.id if result.backup else None,
        "pruned": list(result.pruned),
        "accepted_data_loss": list(result.accepted_data_loss),
        "warnings": list(plan.warnings) + ([result.recovered] if result.recovered else []),
    }


def rotation_text(result: RotationResult, spell: Spell = plain) -> str:
    """A rotation for people; `spell` writes its follow-ups the way this program was invoked."""
    plan = result.plan
    title = "Rotation plan (dry run: nothing written)" if result.dry_run else "Rotated"
    rows = [[c.name, c.reason, c.old.describe() if c.old else "(unset)", c.new.describe()] for c in plan.changes]
    lines = [paint(title, "bold"), table(["secret", "why", "old value", "new value"], rows), ""]
    lines.append(f"files:    {', '.join(plan.files)}")
    lines += _services(plan)
    for name, phase in plan.phases.items():
        lines.append(f"phase:    {name} {phase}: {PHASE_TEXT[phase]}")
    for cert in plan.certificates:
        lines.append(f"cert:     {cert.spec.name} {printable(cert.new.described.line())}")
    for label in result.reloaded:
        lines.append(f"reloaded: {label}")
    for label in result.database:
        lines.append(f"database: {label}")
    for label in result.stores:
        lines.append(f"store:    {label}")
    if result.accepted_data_loss:
        lines.append(paint(f"accepted: data loss from rotating {', '.join(result.accepted_data_loss)}", "yellow"))
    if result.backup and result.undo_step:
        lines.append(f"backup:   {result.backup.id}  (undo: {spell(result.undo_step)})")
    elif not result.dry_run:
        lines.append(paint("backup:   none kept (--skip-backup)", "yellow"))
    if result.pruned:
        lines.append(f"pruned:   {count(len(result.pruned), 'backup')} older than the retention period")
    if result.next_step:
        lines.append(f"next:     {spell(result.next_step)}   ({result.next_step.why})")
    return "\n".join(lines)


PHASE_TEXT = {
    "standby": "a new EC key verifies beside the signing one; once its readers are recreated, rotate it again",
    "rotate": "the new key signs and the tokens carry its kid; the old one verifies until the revoke",
    "revoke": "the old key left both sets",
}


def _services(plan: Plan) -> list[str]:
    """One line per service the plan recreates: how a restart replaces it, the changed variables it
    reads, and why not start-first where it declares that but cannot run twice."""
    if not plan.services:
        return ["services: (none)"]
    width = max(len(printable(s)) for s in plan.services)
    lines = []
    for index, service in enumerate(plan.services):
        strategy = plan.strategies.get(service)
        order = f"{strategy.order:<11}  " if strategy else ""
        names = plan.because.get(service, ())
        why = f"reads {', '.join(names)}" if names else ""
        refused = (
            f"  (not start-first: {strategy.reason})"
            if strategy and strategy.order == "stop-late" and strategy.notable
            else ""
        )
        row = f"{printable(service):<{width}}  {order}{why}{refused}".rstrip()
        lines.append(f"{'services: ' if index == 0 else ' ' * 10}{row}")
    return lines


def strategy_lines(strategies: Mapping[str, Strategy]) -> list[str]:
    """How each service is (or would be) replaced: one line for those replaced stop-late by
    default, and one line with the reason for each start-first one or one that declared it and could not be."""
    plain = sorted(name for name, s in strategies.items() if not s.notable)
    lines = [f"  {paint(s.order, 'green' if s.order == 'start-first' else 'bold')}: {printable(name)} ({s.reason})"
             for name, s in sorted(strategies.items()) if s.notable]  # fmt: skip
    if plain:
        lines.append(f"  {paint('stop-late', 'bold')}: {', '.join(map(printable, plain))} (no start-first declared)")
    return lines


def nothing_due_json(dry_run: bool) -> dict[str, Any]:
    """`rotate --due --json` when nothing is due: the rotation shape, with nothing in it."""
    empty: list[str] = []
    return {
        "dry_run": dry_run,
        "secrets": empty,
        "rotated_secrets": empty,
        "files": empty,
        "affected_services": empty,
        "affected_by": {},
        "strategies": {},
        "phases": {},
        "certificates": [],
        "reloaded": [],
        "database": empty,
        "stores": empty,
        "backup": None,
        "pruned": empty,
        "accepted_data_loss": empty,
        "warnings": ["no secret is due"],
    }


def restore_json(result: RestoreResult) -> dict[str, Any]:
    """A restore for scripts: which backup, which files differ, which databases, the undo id."""
    return {
        "dry_run": result.dry_run,
        "backup": result.restored.id,
        "files_changed": list(result.changed),
        "database": list(result.database),
        "stores": list(result.stores),
        "reloaded": list(result.reloaded),
        "undo": result.undo.id if result.undo else None,
        "affected_services": list(result.restored.affected_services),
    }


def restore_text(result: RestoreResult, spell: Spell = plain) -> str:
    """A restore for people."""
    head = f"Would restore backup {result.restored.id}" if result.dry_run else f"Restored backup {result.restored.id}"
    lines = [paint(head, "bold")]
    lines.append(f"files changed: {', '.join(result.changed) or '(none: already identical)'}")
    for label in result.database:
        lines.append(f"database:      {label} back on the backed-up password")
    for label in result.stores:
        lines.append(f"store:         {label} (the backed-up values, as a new version)")
    for label in result.reloaded:
        lines.append(f"reloaded:      {label}")
    if result.undo_step:
        lines.append(f"undo:          {spell(result.undo_step)}")
    if result.next_step:
        lines.append(f"next:          {spell(result.next_step)}   (recreates the affected services)")
    return "\n".join(lines)


def pull_json(result: PullResult) -> dict[str, Any]:
    """A pull for scripts: the store versions read, the secrets that changed, files, services, backup."""
    plan = result.plan
    return {
        "dry_run": result.dry_run,
        "source": [{"label": s["label"], "version": s["version"]} for s in result.source],
        "secrets": [
            {"name": c.name, "old": c.old.describe() if c.old else None, "new": c.new.describe()} for c in plan.changes
        ],
        "rotated_secrets": list(plan.names),
        "files": list(plan.files),
        "affected_services": list(plan.services),
        "affected_by": {service: list(names) for service, names in plan.because.items()},
        "strategies": {service: strategy.to_json() for service, strategy in plan.strategies.items()},
        "database": list(result.database),
        "backup": result.backup.id if result.backup else None,
        "warnings": list(plan.warnings) + ([result.recovered] if result.recovered else []),
    }


def pull_text(result: PullResult, spell: Spell = plain) -> str:
    """A pull for people."""
    plan = result.plan
    source = ", ".join(f"{s['label']} version {s['version']}" for s in result.source)
    if not plan.changes:
        return f"pull: the files already hold {source}; nothing to do"
    title = f"Would pull {source} (dry run: nothing written)" if result.dry_run else f"Pulled {source}"
    rows = [[c.name, c.old.describe() if c.old else "(unset)", c.new.describe()] for c in plan.changes]
    lines = [paint(title, "bold"), table(["secret", "old value", "new value"], rows), ""]
    lines.append(f"files:    {', '.join(plan.files)}")
    lines += _services(plan)
    for label in result.database:
        lines.append(f"database: {label}")
    if result.backup and result.undo_step:
        lines.append(f"backup:   {result.backup.id}  (undo: {spell(result.undo_step)})")
    if result.next_step:
        lines.append(f"next:     {spell(result.next_step)}   ({result.next_step.why})")
    return "\n".join(lines)


def error_json(error: RotationError, spell: Spell = plain) -> dict[str, Any]:
    """What a `--json` command prints when it fails: the one-line error, its kind and exit code, the
    key and file at fault, and the commands to run next, spelled as the tool was invoked."""
    return {**error.to_json(), "steps": [spell(step) for step in error.steps]}


def _row(backup: Run, now: float) -> dict[str, Any]:
    return {
        "id": backup.id,
        "age": age(now - backup.created),
        "kind": backup.kind,
        "status": backup.status.value,
        "rotated_secrets": list(backup.rotated_secrets),
        "phases": backup.phases,
        "affected_services": list(backup.affected_services),
        "restored_from": backup.restored_from,
        "stores": [{"label": e["label"], "before": e["before"], "after": e["after"]} for e in backup.stores],
        "pulled": [{"label": e["label"], "version": e["version"]} for e in backup.pulled],
    }


def _store_cell(row: Mapping[str, Any]) -> str:
    """The store versions a run wrote (`v3->v4`) or pulled (`pulled v4`), for the backups table."""
    written = [f"v{e['before']}->v{e['after']}" for e in row["stores"]]
    return ", ".join(written + [f"pulled v{e['version']}" for e in row["pulled"]])


def backups_json(backups: Sequence[Run], now: float | None = None) -> list[dict[str, Any]]:
    """The backups for scripts, newest first."""
    moment = time.time() if now is None else now
    return [_row(b, moment) for b in reversed(backups)]


def backups_table(backups: Sequence[Run], now: float | None = None, width: int = WIDTH) -> str:
    """The backups for people, newest first."""
    if not backups:
        return "no backups yet"
    rows: list[list[Cell]] = []
    stored = any(b.stores or b.pulled for b in backups)  # the column only where a store is in use
    for row in backups_json(backups, now):
        secrets: Cell = [f"{n} ({row['phases'][n]})" if n in row["phases"] else n for n in row["rotated_secrets"]]
        if row["restored_from"]:
            secrets = f"(before restoring {row['restored_from']})"
        cells: list[Cell] = [row["id"], row["age"], row["kind"], row["status"], secrets, row["affected_services"]]
        rows.append(_escaped([*cells, _store_cell(row)] if stored else cells))
    headers = ["id", "age", "kind", "status", "secrets", "services"]
    return table([*headers, "store"] if stored else headers, rows, width)


def _escaped(row: Sequence[Cell]) -> list[Cell]:
    """A row read from disk, its control characters shown rather than sent to the terminal."""
    return [printable(c) if isinstance(c, str) else [printable(item) for item in c] for c in row]


def log_json(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Audit log entries for scripts, newest first, with the fields `rotation log` documents."""
    return [
        {
            "time": e.get("time"),
            "task": e.get("task"),
            "outcome": e.get("outcome"),
            "secrets": list(e.get("secrets") or []),
            "services": list(e.get("services") or []),
            "run": e.get("run"),
            "duration": e.get("duration"),
            "dry_run": bool(e.get("dry_run")),
            "accept_data_loss": bool(e.get("accept_data_loss")),
            "user": e.get("user"),
        }
        for e in reversed(entries)
    ]


def log_table(entries: Sequence[Mapping[str, Any]], width: int = WIDTH) -> str:
    """Audit log entries for people, newest first; dry runs and accepted data loss are marked.

    The table keeps to `width` columns: the date loses its year, and of the columns left an outcome
    takes at most half (12 at least, its tail cut) while secrets and services share the rest,
    giving way to `+N more` (JSON has them whole).
    """
    if not entries:
        return "no task has run on this stack yet"
    found = log_json(entries)
    tasks = [
        f"{e['task']}{' dry-run' if e['dry_run'] else ' data-loss' if e['accept_data_loss'] else ''}" for e in found
    ]
    took = [f"{e['duration']:.1f}s" if isinstance(e["duration"], (int, float)) else "-" for e in found]
    runs = [str(e["run"] or "-") for e in found]
    fixed = 11 + max(map(len, [*tasks, "task"])) + max(map(len, [*runs, "run"])) + max(map(len, [*took, "took"]))
    room = max(12, (width - 2 * 6 - fixed) // 2)  # half the rest; secrets and services share the other
    rows: list[list[Cell]] = []
    for e, task, run, duration in zip(found, tasks, runs, took, strict=True):
        outcome = str(e["outcome"] or "")
        when = str(e["time"] or "")[5:16].replace("T", " ")
        row: list[Cell] = [when, task, outcome if len(outcome) <= room else outcome[: room - 1] + "…"]
        rows.append(_escaped([*row, e["secrets"], e["services"], run, duration]))
    return table(["time", "task", "outcome", "secrets", "services", "run", "took"], rows, width)


def _uptime(started: str | None, now: float) -> str:
    if not started or started.startswith("0001-"):
        return "-"
    stamp = datetime.strptime(started[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return age(now - stamp)


def states_table(snapshot: Snapshot, now: float | None = None) -> str:
    """Every service with its state, health, restart count and uptime; on Swarm also its running and
    desired tasks, its update state and the last task error."""
    moment = time.time() if now is None else now
    swarm = any(s.tasks is not None for s in snapshot.states.values())
    rows: list[list[Cell]] = []
    for name, s in sorted(snapshot.states.items()):
        mark = paint("ok", "green") if s.healthy else paint("FAIL", "red")
        uptime = _uptime(s.started_at, moment) if s.state == "running" else "-"
        if swarm:
            error = printable(s.health_output or "-") if not s.healthy else "-"
            rows.append([name, s.state, s.tasks or "-", s.health or "-", s.update or "-", uptime, error, mark])
        else:
            rows.append([name, s.state, s.health or "-", str(s.restarts), uptime, mark])
    if swarm:
        return table(["service", "state", "tasks", "health", "update", "uptime", "last task error", ""], rows)
    return table(["service", "state", "health", "restarts", "uptime", ""], rows)


def details(state: ServiceState, logs: str) -> str:
    """What `check --verbose` adds for an unhealthy service."""
    lines = [f"{state.service}:"]
    if state.health_output:
        lines.append(f"  last healthcheck: {printable(state.health_output)}")
    if state.exit_code is not None and state.state != "running":
        lines.append(f"  exit code: {state.exit_code}")
    lines.append(f"  OOMKilled: {'yes' if state.oom_killed else 'no'}")
    if logs.strip():
        lines.append("  last log lines:")
        lines += [f"    {printable(line)}" for line in logs.rstrip().splitlines()]
    return "\n".join(lines)


def check_json(result: CheckResult) -> dict[str, Any]:
    """`check --json`: the snapshot, the regressions, and each certificate's expiry."""
    shown = {"regressions": [r.describe() for r in result.regressions]}
    return {**result.snapshot.to_json(), **shown, "certificates": certificates_json(result.certificates)}


def check_text(result: CheckResult, config: Config) -> str:
    """`check` for people: the states table, the certificates' days left, and each regression in red."""
    lines = [states_table(result.snapshot), *certificate_lines(result.certificates, config)]
    lines += [paint(f"regression: {problem.describe()}", "red") for problem in result.regressions]
    return "\n".join(lines)


def certificates_json(expires: Mapping[str, float | None], now: float | None = None) -> list[dict[str, Any]]:
    """Each configured certificate's expiry and whole days left (null: the stack has none yet)."""
    moment = time.time() if now is None else now
    return [
        {
            "name": name,
            "expires": local_time(at) if at else None,
            "days_left": int((at - moment) // 86400) if at else None,
        }
        for name, at in expires.items()
    ]


def certificate_lines(expires: Mapping[str, float | None], config: Config, now: float | None = None) -> list[str]:
    """`check`'s line per certificate: days left, in yellow once it is due and red once expired."""
    lines = []
    for row in certificates_json(expires, now):
        spec = config.certificates[row["name"]]
        if row["days_left"] is None:
            lines.append(paint(f"certificate {row['name']}: no certificate at {spec.cert}", "yellow"))
            continue
        colour = "red" if row["days_left"] < 0 else "yellow" if row["days_left"] * 86400 < spec.renew_before else None
        text = f"certificate {row['name']}: {row['days_left']} days left (expires {row['expires']})"
        lines.append(paint(text, colour) if colour else text)
    return lines


def due_json(found: Sequence[Due], now: float | None = None) -> list[dict[str, Any]]:
    """Due secrets for scripts."""
    moment = time.time() if now is None else now
    return [
        {
            "name": d.name,
            "period": age(d.period),
            "last_rotated": local_time(d.last) if d.last else None,
            "age": age(moment - d.last) if d.last else None,
            "expires": local_time(d.expires) if d.expires else None,
        }
        for d in found
    ]


def due_table(found: Sequence[Due], phases: Sequence[KeyPhase] = (), now: float | None = None) -> str:
    """Due secrets for people, and the signing key sets between phases with when the next may run."""
    moment = time.time() if now is None else now
    rows = [
        [r["name"], r["period"], f"certificate expires {r['expires']}" if r["expires"] else r["age"] or "never rotated"]
        for r in due_json(found, moment)
    ]
    lines = [table(["secret", "period", "last rotated"], rows) if found else "no secret is due"]
    for phase in phases:
        if phase.ready_at is None and phase.next == "revoke":
            when = "once a run of this tool recreated its readers"
        elif phase.ready_at is not None and phase.ready_at > moment:
            when = f"from {local_time(phase.ready_at)} (in {age(phase.ready_at - moment)})"
        else:
            when = "now"
        lines.append(f"{phase.name}: {phase.state}; next phase {phase.next}, may run {when}")
    return "\n".join(lines)

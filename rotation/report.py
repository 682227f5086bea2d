"""Text and JSON for people and scripts: plans, results, backup tables. Values never appear."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from .backup import Backup, age, local_time
from .engine import ServiceState
from .health import Snapshot
from .runs import RestoreResult, RotationResult
from .schedule import Due

__all__ = [
    "backups_json",
    "backups_table",
    "details",
    "due_json",
    "due_table",
    "dumps",
    "paint",
    "restore_text",
    "rotation_json",
    "rotation_text",
    "states_table",
    "table",
]

_COLOURS = {"red": "31", "green": "32", "yellow": "33", "bold": "1", "dim": "2"}


def paint(text: str, colour: str, stream: Any = None) -> str:
    """`text` in `colour` when the stream is a terminal and NO_COLOR is unset; plain otherwise."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR") or not getattr(stream, "isatty", lambda: False)():
        return text
    return f"\033[{_COLOURS[colour]}m{text}\033[0m"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A left-aligned plain-text table."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
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
        "database": list(result.database),
        "backup": result.backup.id if result.backup else None,
        "pruned": list(result.pruned),
        "warnings": list(plan.warnings) + ([result.recovered] if result.recovered else []),
    }


def rotation_text(result: RotationResult) -> str:
    """A rotation for people."""
    plan = result.plan
    title = "Rotation plan (dry run: nothing written)" if result.dry_run else "Rotated"
    rows = [[c.name, c.reason, c.old.describe() if c.old else "(unset)", c.new.describe()] for c in plan.changes]
    lines = [paint(title, "bold"), table(["secret", "why", "old value", "new value"], rows), ""]
    lines.append(f"files:    {', '.join(plan.files)}")
    lines.append(f"services: {', '.join(plan.services) or '(none)'}")
    for label in result.database:
        lines.append(f"database: {label}")
    if result.backup:
        lines.append(f"backup:   {result.backup.id}  (undo: rotation restore --backup {result.backup.id})")
    elif not result.dry_run:
        lines.append(paint("backup:   none kept (--skip-backup)", "yellow"))
    if result.pruned:
        lines.append(f"pruned:   {len(result.pruned)} backups older than the retention period")
    if not result.dry_run and plan.services:
        lines.append("next:     rotation restart   (recreates the services above so they read the new values)")
    return "\n".join(lines)


def restore_text(result: RestoreResult) -> str:
    """A restore for people."""
    head = f"Would restore backup {result.restored.id}" if result.dry_run else f"Restored backup {result.restored.id}"
    lines = [paint(head, "bold")]
    lines.append(f"files changed: {', '.join(result.changed) or '(none: already identical)'}")
    for label in result.database:
        lines.append(f"database:      {label} back on the backed-up password")
    if result.undo:
        lines.append(f"undo:          rotation restore --backup {result.undo.id}")
    services = result.restored.metadata.get("affected_services") or []
    if not result.dry_run and services:
        lines.append("next:          rotation restart   (recreates the affected services)")
    return "\n".join(lines)


def _row(backup: Backup, now: float) -> dict[str, Any]:
    return {
        "id": backup.id,
        "age": age(now - backup.created),
        "kind": backup.kind,
        "status": backup.status,
        "rotated_secrets": list(backup.metadata.get("rotated_secrets", [])),
        "affected_services": list(backup.metadata.get("affected_services", [])),
        "restored_from": backup.metadata.get("restored_from"),
    }


def backups_json(backups: Sequence[Backup], now: float | None = None) -> list[dict[str, Any]]:
    """The backups for scripts, newest first."""
    moment = time.time() if now is None else now
    return [_row(b, moment) for b in reversed(backups)]


def backups_table(backups: Sequence[Backup], now: float | None = None) -> str:
    """The backups for people, newest first."""
    if not backups:
        return "no backups yet"
    rows = []
    for row in backups_json(backups, now):
        secrets = ", ".join(row["rotated_secrets"]) or "-"
        if row["restored_from"]:
            secrets = f"(before restoring {row['restored_from']})"
        rows.append(
            [row["id"], row["age"], row["kind"], row["status"], secrets, ", ".join(row["affected_services"]) or "-"]
        )
    return table(["id", "age", "kind", "status", "secrets", "services"], rows)


def _uptime(started: str | None, now: float) -> str:
    if not started or started.startswith("0001-"):
        return "-"
    stamp = datetime.strptime(started[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return age(now - stamp)


def states_table(snapshot: Snapshot, now: float | None = None) -> str:
    """Every service with its state, health, restart count and uptime."""
    moment = time.time() if now is None else now
    rows = []
    for name, s in sorted(snapshot.states.items()):
        mark = paint("ok", "green") if s.healthy else paint("FAIL", "red")
        uptime = _uptime(s.started_at, moment) if s.state == "running" else "-"
        rows.append([name, s.state, s.health or "-", str(s.restarts), uptime, mark])
    return table(["service", "state", "health", "restarts", "uptime", ""], rows)


def details(state: ServiceState, logs: str) -> str:
    """What `check --verbose` adds for an unhealthy service."""
    lines = [f"{state.service}:"]
    if state.health_output:
        lines.append(f"  last healthcheck: {state.health_output}")
    if state.exit_code is not None and state.state != "running":
        lines.append(f"  exit code: {state.exit_code}")
    lines.append(f"  OOMKilled: {'yes' if state.oom_killed else 'no'}")
    if logs.strip():
        lines.append("  last log lines:")
        lines += [f"    {line}" for line in logs.rstrip().splitlines()]
    return "\n".join(lines)


def due_json(found: Sequence[Due], now: float | None = None) -> list[dict[str, Any]]:
    """Due secrets for scripts."""
    moment = time.time() if now is None else now
    return [
        {
            "name": d.name,
            "period": age(d.period),
            "last_rotated": local_time(d.last) if d.last else None,
            "age": age(moment - d.last) if d.last else None,
        }
        for d in found
    ]


def due_table(found: Sequence[Due], now: float | None = None) -> str:
    """Due secrets for people."""
    if not found:
        return "no secret is due"
    rows = [[r["name"], r["period"], r["age"] or "never rotated"] for r in due_json(found, now)]
    return table(["secret", "period", "last rotated"], rows)

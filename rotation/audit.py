"""The audit log and notifications: who ran what, on which secrets, and how it went.

Both carry names only, never values. A notification goes to a webhook (`https://`, a Slack-compatible
JSON POST) or through Apprise (`mailto://`, `ntfy://`, `discord://`, `json://` and the rest, about 150
services behind one URL syntax), which is imported only when one is sent. A notification that fails
is reported to the caller and never fails or undoes anything.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backup import local_time
from .config import interpolate
from .errors import RotationError, StorageError
from .fsio import read_bounded

if TYPE_CHECKING:
    from .stack import Stack

__all__ = [
    "AUDIT_LOG",
    "TaskRun",
    "announce_due",
    "announcement",
    "append",
    "due_announcement",
    "entry",
    "is_webhook",
    "notify",
    "read",
    "record",
    "shown",
]

AUDIT_LOG = "audit.log"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def append(directory: Path, entry: Mapping[str, Any]) -> str | None:
    """Add one JSON line to `<directory>/audit.log` (mode 600), with user and host filled in.

    It never raises: it runs while a task ends, perhaps with another error on its way to the
    user, so a full disk or a link planted in place of the log is returned as a warning instead.
    """
    line = {"user": _user(), "host": socket.gethostname(), **entry}
    path = directory / AUDIT_LOG
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return f"{path}: cannot write the audit log (not a regular file: a link, a FIFO?); nothing was logged"
    except FileNotFoundError:
        pass
    except OSError as exc:
        return f"{path}: cannot write the audit log ({exc.strerror})"
    try:  # non-blocking: a FIFO planted in its place must not hang the task
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        return f"{path}: cannot write the audit log ({exc.strerror})"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return f"{path}: cannot write the audit log (not a regular file); nothing was logged"
        os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode())
        os.fsync(fd)
        os.fchmod(fd, 0o600)
    except OSError as exc:
        return f"{path}: cannot write the audit log ({exc.strerror})"
    finally:
        os.close(fd)
    return None


def read(directory: Path) -> tuple[list[dict[str, Any]], int]:
    """Every entry of the audit log, oldest first, and how many lines were damaged and skipped."""
    try:
        lines = read_bounded(directory / AUDIT_LOG).decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return [], 0
    except StorageError as exc:
        raise StorageError(f"{exc} (the audit log)") from None
    entries, damaged = [], 0
    for text in lines:
        try:
            entry = json.loads(text)
        except ValueError:
            entry = None
        if _sound(entry):
            entries.append(entry)
        elif text.strip():
            damaged += 1
    return entries, damaged


_TEXT_FIELDS = ("time", "task", "outcome", "stack", "user", "host", "run")


def _sound(entry: object) -> bool:
    """Whether an audit line has the shape this tool writes: read from disk, so checked before use."""
    if not isinstance(entry, dict):
        return False
    lists = all(
        isinstance(entry.get(k, []), list) and all(isinstance(v, str) for v in entry.get(k, []))
        for k in ("secrets", "services")
    )
    texts = all(entry.get(k) is None or isinstance(entry[k], str) for k in _TEXT_FIELDS)
    number = entry.get("duration") is None or isinstance(entry["duration"], (int, float))
    return lists and texts and number


@dataclass(frozen=True, slots=True)
class TaskRun:
    """What one task run did, for the audit log and the webhooks: names only, never values."""

    task: str
    stack: str
    outcome: str  # ok, failed: <reason>, or a verdict such as due: <names>
    seconds: float
    secrets: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    run: str | None = None
    dry_run: bool = False
    accept_data_loss: bool = False

    @property
    def failed(self) -> bool:
        """Whether the task failed (a verdict such as `due: ...` is not a failure)."""
        return self.outcome.startswith("failed")


def entry(run: TaskRun, now: float | None = None) -> dict[str, Any]:
    """The audit log line for a task run (user and host are added when it is written)."""
    return {
        "time": local_time(time.time() if now is None else now),
        "task": run.task,
        "stack": run.stack,
        "secrets": sorted(run.secrets),
        "services": sorted(run.services),
        "run": run.run,
        "outcome": run.outcome,
        "duration": round(run.seconds, 3),
        "dry_run": run.dry_run,
        "accept_data_loss": run.accept_data_loss,
    }


def record(
    directory: Path, run: TaskRun, urls: Sequence[str], env: Callable[[], Mapping[str, str | None]]
) -> list[str]:
    """Log `run` in `directory`'s audit log and send it to every URL (`env`, read only when there is
    one, expands their `${VAR}`); a warning line for each thing that failed, which fails nothing."""
    logged = entry(run)
    problem = append(directory, logged)
    warnings = [problem] if problem else []
    if urls:
        warnings += notify(urls, announcement(run, logged), env())
    return warnings


def announcement(run: TaskRun, logged: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook payload: a Slack-compatible `text` for people, and the audit entry for machines."""
    verdict = "succeeded" if run.outcome == "ok" else run.outcome
    text = f"rotation {run.task} on {socket.gethostname()}:{run.stack} {verdict}"
    if run.secrets:
        text += f"; secrets: {', '.join(sorted(run.secrets))}"
    if run.services:
        text += f"; services: {', '.join(sorted(run.services))}"
    if run.accept_data_loss:
        text += "; data loss accepted (--accept-data-loss)"
    return {"text": text, "ok": not run.failed, **logged}


def due_announcement(stack: str, names: Sequence[str]) -> dict[str, Any]:
    """`due --notify`'s message: which secrets of which stack are past their rotation period."""
    text = f"rotation due on {socket.gethostname()}:{stack}: {', '.join(names)} past their rotation_period"
    return {"text": text, "ok": True, "task": "due", "stack": stack, "secrets": list(names)}


def announce_due(stack: Stack, names: Sequence[str]) -> list[str]:
    """Send `due --notify`'s message to the stack's notify: URLs when something is due; one problem
    line per URL that failed."""
    if not names:
        return []
    return notify(stack.config.notify, due_announcement(str(stack.root), names), stack.env())


def is_webhook(url: str) -> bool:
    """Whether `url` is a plain webhook (http or https), POSTed as today, rather than an Apprise URL."""
    return url.lower().startswith(("http://", "https://"))


def shown(url: str) -> str:
    """A notification URL as messages show it: its scheme and host only, since the rest often holds a
    token or a password (Slack's path, mailto's user:password@)."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    where = f"{parts.hostname}{port}" if parts.hostname else "(no host)"
    return where if is_webhook(url) else f"{parts.scheme}://{where}"


def notify(
    urls: Sequence[str], payload: Mapping[str, Any], env: Mapping[str, str | None] | None = None, timeout: float = 5.0
) -> list[str]:
    """Send `payload` to every URL (its `${VAR}` from `env`, then the environment); one problem line
    per URL that failed, naming only its scheme and host."""
    problems = []
    body = json.dumps(payload).encode()
    for template in urls:
        try:
            url = interpolate(template, env or {})
        except RotationError as exc:
            problems.append(f"notification to {shown(template)} skipped: {exc}")
            continue
        if not is_webhook(url):
            problem = _apprise(url, payload)
            if problem:
                problems.append(f"notification to {shown(template)} failed: {problem}")
            continue
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            problems.append(f"notification to {shown(template)} failed: HTTP {exc.code}")
        except (urllib.error.URLError, OSError) as exc:
            problems.append(f"notification to {shown(template)} failed: {getattr(exc, 'reason', exc)}")
    return problems


def _apprise(url: str, payload: Mapping[str, Any]) -> str | None:
    """Send through Apprise; why it failed, or None. Apprise's own log stays quiet: it may name the
    URL's user and host, and what failed is said here in one line."""
    import logging

    import apprise  # deferred: about 150 service plugins, needed only when a message is sent

    logging.getLogger("apprise").disabled = True
    sender = apprise.Apprise()
    if not sender.add(url):
        return "not a URL Apprise knows (see its wiki for the services and their syntax)"
    ok = "succeeded" if payload.get("ok", True) else "failed"
    if not sender.notify(title=f"rotation: {payload.get('task', 'run')} {ok}", body=str(payload.get("text", ""))):
        return "the service did not accept the message"
    return None

"""The audit log and webhook notifications: who ran what, on which secrets, and how it went.

Both carry names only, never values. A notification that fails is reported to the caller and
never fails or undoes anything.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import StorageError

__all__ = ["AUDIT_LOG", "append", "notify", "read"]

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
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        return f"{path}: cannot write the audit log ({exc.strerror})"
    try:
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
        fd = os.open(directory / AUDIT_LOG, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return [], 0
    except OSError as exc:
        raise StorageError(f"{directory / AUDIT_LOG}: cannot read the audit log ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        lines = handle.read().decode("utf-8", "replace").splitlines()
    entries, damaged = [], 0
    for text in lines:
        try:
            entry = json.loads(text)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            entries.append(entry)
        elif text.strip():
            damaged += 1
    return entries, damaged


def _host(url: str) -> str:
    """Only the host of a webhook: its path often holds a token (Slack's does)."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.hostname}{port}" if parts.hostname else "webhook"  # never user:password@


def notify(urls: Sequence[str], payload: Mapping[str, Any], timeout: float = 5.0) -> list[str]:
    """POST `payload` as JSON to every webhook; returns one problem line per webhook that failed."""
    problems = []
    body = json.dumps(payload).encode()
    for url in urls:
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            problems.append(f"notification to {_host(url)} failed: HTTP {exc.code}")
        except (urllib.error.URLError, OSError) as exc:
            problems.append(f"notification to {_host(url)} failed: {getattr(exc, 'reason', exc)}")
    return problems

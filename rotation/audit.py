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

__all__ = ["AUDIT_LOG", "append", "notify"]

AUDIT_LOG = "audit.log"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def append(directory: Path, entry: Mapping[str, Any]) -> None:
    """Add one JSON line to `<directory>/audit.log` (mode 600), with user and host filled in."""
    line = {"user": _user(), "host": socket.gethostname(), **entry}
    fd = os.open(directory / AUDIT_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(directory / AUDIT_LOG, 0o600)


def _host(url: str) -> str:
    """Only the host of a webhook: its path often holds a token (Slack's does)."""
    return urllib.parse.urlsplit(url).netloc or "webhook"


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

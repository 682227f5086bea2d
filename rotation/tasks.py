"""The Invoke tasks: parse flags, call the library, print, turn failures into exit codes.

`inv` reads them through the top-level `tasks.py`; `rotation` is a `Program` over the same
collection. Several tasks on one command line (`rotation precheck rotate restart verify`)
share one config object, and with it the run they work on.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from . import report
from .config import find_config, load
from .errors import RotationError
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


namespace = Collection(rotate, restore)
namespace.configure({"rotation": {"root": None, "config": None, "lock_timeout": 60, "run": None}})
logging.basicConfig(level=logging.INFO, format="rotation: %(message)s")

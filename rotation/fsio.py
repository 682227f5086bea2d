"""Crash-safe file writes and the stack-wide lock: the only places that write secrets to disk."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from .errors import LockedError, StorageError

__all__ = ["ensure_private_dir", "fsync_dir", "locked", "write_atomic"]


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in directory `path` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file, never half.

    A temporary file in the same directory is written, fsynced, given `mode`, renamed over
    the target, and the directory is fsynced.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise StorageError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StorageError(f"{path}: cannot write ({exc.strerror})") from None
    fsync_dir(path.parent)


def ensure_private_dir(path: Path) -> None:
    """Create `path` and its missing parents with mode 700, and make `path` itself 700."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    if not missing:
        os.chmod(path, 0o700)


@contextmanager
def locked(
    path: Path, timeout: float, holder: str = "", waiting: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block, waiting up to `timeout` seconds for it.

    The lock is an `flock`, so the kernel releases it when a holder dies, even by SIGKILL. The
    holder writes `holder` (pid, task, since when) into the file; a second process that has to
    wait tells `waiting` once who it is waiting for, so a person is not left staring at nothing.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise StorageError(f"{path}: cannot open the lock file ({exc.strerror}); is it a link?") from None

    def attempt() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        if not attempt():
            if waiting is not None:
                who = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                waiting(f"waiting up to {timeout:g}s for the lock on this stack, held by {who}")
            try:
                Retrying(
                    stop=stop_after_delay(timeout),
                    wait=wait_fixed(0.05),
                    retry=retry_if_result(lambda got: not got),
                )(attempt)
            except RetryError:
                raise LockedError(
                    f"{path}: another rotation or restore of this stack is running; "
                    f"waited {timeout:g}s. Try again when it has finished"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder or f'pid {os.getpid()}'}\n".encode(), 0)
        yield
    finally:
        os.close(fd)

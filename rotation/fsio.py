"""Crash-safe file writes and the stack-wide lock: the only places that write secrets to disk."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from .errors import LockedError, StorageError
from .escape import printable

__all__ = [
    "MAX_STATE_FILE",
    "ensure_private_dir",
    "read_bounded",
    "refuse_shared",
    "fsync_dir",
    "inside",
    "locked",
    "remove_file",
    "remove_tree",
    "write_atomic",
    "write_stack_file",
]

log = logging.getLogger(__name__)
MAX_STATE_FILE = 64 << 20  # bytes: a backed-up .env, a journal or a log is far smaller; a planted one may not be


def read_bounded(path: Path, limit: int = MAX_STATE_FILE) -> bytes:
    """The bytes of a regular file read from the tool's own state, which is untrusted input: never
    through a link, never a FIFO or a device (opening one could block every task), never more than
    `limit` bytes. `FileNotFoundError` passes through; anything else is a `StorageError` saying why."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StorageError(f"{path}: cannot read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StorageError(f"{path}: not a regular file; refusing to read it")
        if info.st_size > limit:
            raise StorageError(f"{path}: {info.st_size} bytes, more than the {limit} a file of this tool may hold")
        try:
            return handle.read(limit + 1)[:limit]
        except OSError as exc:
            raise StorageError(f"{path}: cannot read ({exc.strerror})") from None


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in directory `path` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def inside(root: Path, name: object, what: str) -> Path:
    """`root / name` for a relative path read from untrusted state (a journal, a backup's metadata).

    Anything that is not a plain relative path, or that a link on the way leads out of `root`, is
    a `StorageError` naming `what`: the tool's own files are input like any other.
    """
    if not isinstance(name, str) or not name or "\0" in name:
        raise StorageError(f"{what}: {name!r} is not a file name")
    posix = PurePosixPath(name)
    if posix.is_absolute() or ".." in posix.parts or name.startswith("~"):
        raise StorageError(f"{what}: '{name}' leaves {root}; refusing to touch it")
    path = root / name
    if not path.resolve().is_relative_to(root.resolve()):
        raise StorageError(f"{what}: '{name}' is reached through a link that leads out of {root}; refusing it")
    return path


def write_atomic(path: Path, data: bytes, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
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
        if owner is not None and (os.geteuid() == 0 or owner[0] == os.geteuid()):
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StorageError(f"{path}: cannot write ({exc.strerror})") from None
    fsync_dir(path.parent)


def write_stack_file(root: Path, name: str, data: bytes) -> Path:
    """Write a file of the stack as its owner left it; returns the real file written.

    A symbolic link (`supabase/docker/.env -> ../../.env`) is written through, atomically in its
    target's directory, so the link stays a link. Owner and group are kept, and the mode too,
    unless it lets anyone but the owner read a secret: then it is tightened to 600, and the log
    says so. A PEM file (a certificate, a key) keeps its mode as it is: PostgreSQL accepts a key
    of mode 640 owned by root, and decides itself what it refuses. A file with several hard links
    is rewritten in place, which keeps every link; the journal around every write makes that
    crash-safe as well.
    """
    real = inside(root, name, "stack file").resolve()
    try:
        before = os.stat(real)
    except FileNotFoundError:
        write_atomic(real, data)
        return real
    mode = stat.S_IMODE(before.st_mode)
    if mode & 0o077 and not data.startswith(b"-----BEGIN "):
        log.warning("%s: mode %o lets others read secrets; tightened to 600", name, mode)
        mode = 0o600
    if before.st_nlink > 1:
        refuse_shared(root, name)
        try:
            fd = os.open(real, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fchmod(handle.fileno(), mode)
                os.fsync(handle.fileno())
        except OSError as exc:
            raise StorageError(f"{real}: cannot write ({exc.strerror})") from None
        return real
    write_atomic(real, data, mode, (before.st_uid, before.st_gid))
    return real


def refuse_shared(root: Path, name: str) -> None:
    """A file with several hard links is rewritten in place, and so through every one of its names:
    refuse it unless every name of it is found by walking the stack."""
    try:
        info = inside(root, name, "stack file").resolve().stat()
    except FileNotFoundError:
        return
    if info.st_nlink < 2:
        return
    found = 0
    for folder, _dirs, names in os.walk(root):
        for entry in names:
            try:
                other = os.lstat(os.path.join(folder, entry))
            except OSError:
                continue
            found += (other.st_ino, other.st_dev) == (info.st_ino, info.st_dev)
    if found < info.st_nlink:
        raise StorageError(
            f"{name}: {info.st_nlink - found} of its {info.st_nlink} hard links lie outside the stack "
            f"{root}; writing it would change that file too. Refusing: make it a file of its own (cp, then mv)"
        )


def remove_file(path: Path) -> None:
    """Remove one file (a link itself, never what it points to) and make the removal durable."""
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def remove_tree(path: Path) -> None:
    """Remove a directory of the tool's own; a link in its place is refused, never followed."""
    if path.is_symlink():
        raise StorageError(f"{path} is a symbolic link; refusing to delete through it")
    shutil.rmtree(path, ignore_errors=True)


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
            who = printable(os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process")
            if waiting is not None:
                waiting(f"waiting up to {timeout:g}s for the lock on this stack, held by {who}")
            try:
                Retrying(
                    stop=stop_after_delay(timeout),
                    wait=wait_fixed(0.05),
                    retry=retry_if_result(lambda got: not got),
                )(attempt)
            except RetryError:
                raise LockedError(
                    f"{path}: another rotation or restore of this stack is running ({who}); "
                    f"waited {timeout:g}s. Try again when it has finished"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder or f'pid {os.getpid()}'}\n".encode(), 0)
        yield
    finally:
        os.close(fd)

"""Keep secrets out of commits: find any value of the stack's secrets, current or backed up, in files.

One pass per file with one Aho-Corasick automaton of every value, as UTF-8 and as UTF-16 (ahocorasick-rs:
a Rust multi-pattern matcher, many times faster than a regular-expression alternation, which Python
runs by backtracking); binary files are scanned like any other; a hit is reported by file, line and
secret name, never by value or any part of it. The guard fails closed: what it cannot read, whether
a file to scan or a file that holds the values to look for, is a failure, never a pass.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from . import envfile
from .backup import BackupStore
from .config import Config
from .errors import BackupError, EnvFileError, GuardError, SelectionError, StorageError
from .escape import printable

__all__ = ["MIN_LENGTH", "Finding", "Scan", "Values", "scan", "staged", "values_of"]

MIN_LENGTH = 8  # shorter values match too much by chance to be worth a block
Matcher = Callable[[bytes], list[tuple[bytes, int]]]  # data -> (value, offset) of every occurrence
_ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be")  # a value pasted into a UTF-16 file is still a leak


@dataclass(frozen=True, slots=True)
class Finding:
    """A place where a secret is, or a path that must never be committed. No value, ever."""

    path: str
    line: int | None
    secret: str

    def describe(self) -> str:
        """`file:line: SECRET_NAME`, or `file: why` for a refused path; the file name shown, never obeyed."""
        path = printable(self.path)
        return f"{path}:{self.line}: {self.secret}" if self.line is not None else f"{path}: {self.secret}"


@dataclass(frozen=True, slots=True)
class Values:
    """The values to look for, each with the names it is the value of, and what was left out."""

    names: Mapping[bytes, tuple[str, ...]]
    short: tuple[str, ...]  # secrets whose value is too short to look for

    def matcher(self) -> Matcher | None:
        """One automaton for every value; overlapping matches are all reported."""
        if not self.names:
            return None
        from ahocorasick_rs import BytesAhoCorasick  # deferred: only the guard needs it

        values = list(self.names)
        automaton = BytesAhoCorasick(values)
        return lambda data: [
            (values[i], start) for i, start, _ in automaton.find_matches_as_indexes(data, overlapping=True)
        ]


@dataclass(frozen=True, slots=True)
class Scan:
    """What a guard run found, in how many files."""

    findings: tuple[Finding, ...]
    files: int


def values_of(config: Config, root: Path, store: BackupStore) -> Values:
    """Every secret's value in the stack's files now and in every backup still on disk: a rotated-away
    value is still a credential until every copy of it is gone. Values that are no secret by
    themselves (`secret: false`: a user name, a key id) are not looked for. A file that holds values
    and cannot be read is a `GuardError`: the guard cannot pass what it cannot check."""
    names: dict[bytes, set[str]] = {}
    short: set[str] = set()
    wanted = {name for name, spec in config.secrets.items() if spec.secret}

    def add(parsed: envfile.EnvFile) -> None:
        for key in wanted & set(parsed.names()):
            value = parsed.get(key)
            if not value:
                continue
            if len(value) < MIN_LENGTH:
                short.add(key)
                continue
            for encoding in _ENCODINGS:
                names.setdefault(
                    value.encode(encoding, "surrogateescape" if encoding == "utf-8" else "replace"), set()
                ).add(key)

    keys = {spec.key: spec.name for spec in config.certificates.values()}

    def add_key(read: Callable[[], bytes], name: str, what: str) -> None:
        """A certificate's private key: each of its PEM lines after the first (which every key of
        one type shares) is looked for, so a copy of the key file is found wherever it is pasted."""
        body = [line.strip() for line in _held(read, what).splitlines()[1:-1]]
        for line in body[1:] or body:  # a one-line key (ed25519) is looked for whole
            if len(line) >= MIN_LENGTH:
                names.setdefault(line, set()).add(f"{keys[name]} (private key)")

    for name in sorted({f for spec in config.secrets.values() for f in spec.files}):
        if (root / name).is_file():
            add(_parsed((root / name).read_bytes, name))
    for name in sorted(keys):
        if (root / name).is_file():
            add_key((root / name).read_bytes, name, name)
    for backup in store.all():
        for name in backup.files:
            if name in keys:
                add_key(partial(backup.read, name), name, f"backup {backup.id}/{name}")
            else:
                add(_parsed(partial(backup.read, name), f"backup {backup.id}/{name}"))
    return Values({v: tuple(sorted(n)) for v, n in names.items()}, tuple(sorted(short)))


def _parsed(read: Callable[[], bytes], what: str) -> envfile.EnvFile:
    data = _held(read, what)
    try:
        return envfile.from_bytes(data)
    except EnvFileError as exc:
        raise _unreadable(what, exc) from None


def _held(read: Callable[[], bytes], what: str) -> bytes:
    """The bytes of a file that holds values to look for; what cannot be read fails closed."""
    try:
        return read()
    except (BackupError, StorageError, OSError) as exc:
        raise _unreadable(what, exc) from None


def _unreadable(what: str, exc: Exception) -> GuardError:
    return GuardError(
        f"guard: cannot read {what}, which holds values to look for ({exc}); refusing to pass what it cannot "
        "check. Run the guard as a user who can read the stack's .env files and backups"
    )


def staged(cwd: Path) -> dict[str, bytes]:
    """The content of every file staged in git (added, copied, modified, renamed), as the commit will
    hold it: read from the index, never from the working tree. Keyed by path relative to `cwd`."""
    names = _git(cwd, ["diff", "--cached", "--name-only", "-z", "--diff-filter=ACMR", "--relative"])
    paths = [name for name in names.decode("utf-8", "surrogateescape").split("\0") if name]
    if not paths:
        return {}
    listed = _git(cwd, ["ls-files", "--stage", "-z", "--", *paths])
    blobs: dict[str, str] = {}
    for record in listed.decode("utf-8", "surrogateescape").split("\0"):
        if record:
            info, _, path = record.partition("\t")
            blobs[path] = info.split()[1]
    batch = subprocess.run(
        ["git", "cat-file", "--batch"],
        cwd=cwd,
        input="".join(f"{blobs[p]}\n" for p in paths if p in blobs).encode(),
        capture_output=True,
        check=False,
    )
    out, at, contents = batch.stdout, 0, {}
    for path in (p for p in paths if p in blobs):
        header_end = out.index(b"\n", at)
        size = int(out[at:header_end].split()[2])
        contents[path] = out[header_end + 1 : header_end + 1 + size]
        at = header_end + 2 + size
    return contents


def _git(cwd: Path, args: list[str]) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError:
        raise SelectionError("git is not installed: name the files to scan (rotation guard FILE...)") from None
    if done.returncode != 0:
        raise SelectionError(
            f"{cwd} is not inside a git repository and no files were given: name the files to scan "
            "(rotation guard FILE...)"
        )
    return done.stdout


def _refusals(root: Path, backups: Path, listed: Iterable[str]) -> Callable[[Path], str | None]:
    """Why a path must never be committed at all (a backup, a configured .env), or None."""
    backups = _normal(backups)
    files = {_normal(root / name): PurePosixPath(name) for name in listed}

    def why(path: Path) -> str | None:
        for real in {_normal(path), path.resolve()}:  # `x/../backups/...` and links on the way alike
            if real.is_relative_to(backups) or real.is_relative_to(backups.resolve()):
                return "a backup of the stack's secrets; never commit it"
            if real in files:
                return f"holds the stack's secrets ({files[real]} in secrets-config.yaml files:); never commit it"
        return None

    return why


def _normal(path: Path) -> Path:
    """The absolute path with `.` and `..` taken out, links left alone."""
    return Path(os.path.normpath(path.absolute()))


def scan(
    paths: Sequence[str] | Mapping[str, bytes],
    cwd: Path,
    values: Values,
    *,
    root: Path,
    backups: Path,
    listed: Iterable[str],
) -> Scan:
    """Look through `paths` (relative to `cwd`; or staged contents by path) for any of `values`,
    refusing secret files outright. A file that cannot be read is a `GuardError`."""
    matcher = values.matcher()
    refused = _refusals(root, backups, listed)
    findings: list[Finding] = []
    for name in paths:
        path = cwd / name
        why = refused(path)
        if why:
            findings.append(Finding(name, None, why))
            continue
        data = paths[name] if isinstance(paths, Mapping) else _read(path, name)
        if data is not None and matcher is not None:
            findings += _hits(name, data, matcher, values.names)
    return Scan(tuple(findings), len(paths))


def _read(path: Path, name: str) -> bytes | None:
    """A regular file's bytes; None for what git does not store as content here (a directory, a
    link, which git commits as its target's name, or a file already gone). A file that exists and
    cannot be read is a `GuardError`."""
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            return None
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise GuardError(
            f"guard: cannot read {printable(name)} ({exc.strerror}); refusing to pass it unchecked"
        ) from None


def _hits(name: str, data: bytes, matcher: Matcher, names: Mapping[bytes, tuple[str, ...]]) -> Iterator[Finding]:
    seen: set[tuple[int, str]] = set()
    line, counted = 1, 0
    for value, start in sorted(matcher(data), key=lambda hit: hit[1]):
        line += data.count(b"\n", counted, start)
        counted = start
        for secret in names[value]:
            if (line, secret) not in seen:
                seen.add((line, secret))
                yield Finding(name, line, secret)

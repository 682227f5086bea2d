"""Keep secrets out of commits: find any value of the stack's secrets, current or backed up, in files.

One pass per file with one Aho-Corasick automaton of every value (ahocorasick-rs: a Rust
multi-pattern matcher, many times faster than a regular-expression alternation, which Python
runs by backtracking); binary files are skipped; a hit is reported by file, line and secret
name, never by value or any part of it.
"""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import envfile
from .backup import BackupStore
from .config import Config
from .errors import RotationError, SelectionError

__all__ = ["MIN_LENGTH", "Finding", "Scan", "Values", "scan", "staged_files", "values_of"]

MIN_LENGTH = 8  # shorter values match too much by chance to be worth a block
Matcher = Callable[[bytes], list[tuple[bytes, int]]]  # data -> (value, offset) of every occurrence
_BINARY_PROBE = 8192


@dataclass(frozen=True, slots=True)
class Finding:
    """A place where a secret is, or a path that must never be committed. No value, ever."""

    path: str
    line: int | None
    secret: str

    def describe(self) -> str:
        """`file:line: SECRET_NAME`, or `file: why` for a refused path."""
        return f"{self.path}:{self.line}: {self.secret}" if self.line is not None else f"{self.path}: {self.secret}"


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
    """What a guard run found, and what it could not look at."""

    findings: tuple[Finding, ...]
    skipped: tuple[str, ...]  # "path: why" for files not read
    files: int


def values_of(config: Config, root: Path, store: BackupStore) -> Values:
    """Every configured secret's value in the stack's files now and in every backup still on disk:
    a rotated-away value is still a credential until every copy of it is gone."""
    names: dict[bytes, set[str]] = {}
    short: set[str] = set()
    wanted = set(config.secrets)

    def add(parsed: envfile.EnvFile) -> None:
        for key in wanted & set(parsed.names()):
            value = parsed.get(key)
            if not value:
                continue
            if len(value) < MIN_LENGTH:
                short.add(key)
                continue
            names.setdefault(value.encode("utf-8", "surrogateescape"), set()).add(key)

    for name in sorted({f for spec in config.secrets.values() for f in spec.files}):
        if (root / name).is_file():
            try:
                add(envfile.read(root / name))
            except RotationError:
                continue
    for backup in store.all():
        for name in backup.files:
            try:
                add(envfile.from_bytes(backup.read(name)))
            except RotationError:
                continue
    return Values({v: tuple(sorted(n)) for v, n in names.items()}, tuple(sorted(short)))


def staged_files(cwd: Path) -> list[str]:
    """The paths staged in git (added, copied, modified, renamed), relative to `cwd`."""
    try:
        done = subprocess.run(
            ["git", "diff", "--cached", "--name-only", "-z", "--diff-filter=ACMR", "--relative"],
            cwd=cwd,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:
        raise SelectionError("git is not installed: name the files to scan (rotation guard FILE...)") from None
    if done.returncode != 0:
        raise SelectionError(
            f"{cwd} is not inside a git repository and no files were given: name the files to scan "
            "(rotation guard FILE...)"
        )
    return [name for name in done.stdout.decode("utf-8", "surrogateescape").split("\0") if name]


def _refusals(root: Path, backups: Path, listed: Iterable[str]) -> Callable[[Path], str | None]:
    """Why a path must never be committed at all (a backup, a configured .env), or None."""
    backups = backups.absolute()
    files = {(root / name).absolute(): PurePosixPath(name) for name in listed}

    def why(path: Path) -> str | None:
        real = path.absolute()
        if real.is_relative_to(backups):
            return "a backup of the stack's secrets; never commit it"
        if real in files:
            return f"holds the stack's secrets ({files[real]} in secrets-config.yaml files:); never commit it"
        return None

    return why


def scan(paths: Sequence[str], cwd: Path, values: Values, *, root: Path, backups: Path, listed: Iterable[str]) -> Scan:
    """Look through `paths` (relative to `cwd`) for any of `values`, refusing secret files outright."""
    matcher = values.matcher()
    refused = _refusals(root, backups, listed)
    findings: list[Finding] = []
    skipped: list[str] = []
    for name in paths:
        path = cwd / name
        why = refused(path)
        if why:
            findings.append(Finding(name, None, why))
            continue
        try:
            data = _read(path)
        except OSError as exc:
            skipped.append(f"{name}: cannot read ({exc.strerror})")
            continue
        if data is None:
            continue  # a directory, or gone (a staged deletion)
        if b"\0" in data[:_BINARY_PROBE]:
            skipped.append(f"{name}: binary")
            continue
        if matcher is not None:
            findings += _hits(name, data, matcher, values.names)
    return Scan(tuple(findings), tuple(skipped), len(paths))


def _read(path: Path) -> bytes | None:
    """A regular file's bytes; None for what git does not store as content here (a directory, a
    link, which git commits as its target's name, or a file already gone)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return path.read_bytes()


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

"""Lossless `.env` files: parse as docker compose reads them, render back byte for byte.

Only the characters of a value being replaced ever change; comments, blank lines,
order, `export ` prefixes, quoting, inline comments and line endings stay as they were.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .errors import EnvFileError

__all__ = ["MAX_VALUE", "Entry", "EnvFile", "from_bytes", "parse", "read", "safe_value", "unfit", "unwritable"]

_ASSIGNMENT = re.compile(r"\n[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.\-]*)[ \t]*=[ \t]*([^\n]*)")
_INLINE_COMMENT = re.compile(r"[ \t]#")
# What ends or changes an unquoted value we write: white space or `#` anywhere (an inline comment),
# a quote where compose would take the value as quoted. A JSON value such as JWT_KEYS holds quotes
# inside, which compose keeps as they are.
_UNQUOTED_CLOSERS = re.compile(r"[\s#]|^['\"]|['\"]$")
_DOUBLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: never part of a value we write.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CLOSING = {"": "white space, '#' or a quote at an end", '"': "a double quote", "'": "a single quote"}
_CLOSERS = {"": _UNQUOTED_CLOSERS, '"': re.compile('"'), "'": re.compile("'")}
MAX_VALUE = 8192  # characters; far above any key, token or JWKS a stack holds, far below what hangs a parser


class Entry(NamedTuple):
    """One `KEY=value` assignment: its key, decoded value and where the raw value sits in the text.

    A named tuple rather than a dataclass: large files hold hundreds of thousands of them.
    """

    key: str
    value: str
    start: int
    end: int
    quote: str


@dataclass(frozen=True, slots=True)
class EnvFile:
    """The full text of a `.env` file, the assignments found in it, and those by key."""

    text: str
    entries: tuple[Entry, ...]
    by_key: Mapping[str, list[Entry]] = field(repr=False, compare=False)

    def get(self, key: str) -> str | None:
        """The value compose would use for `key`: the last assignment wins."""
        found = self.by_key.get(key)
        return found[-1].value if found else None

    def count(self, key: str) -> int:
        """How many times `key` is assigned."""
        return len(self.by_key.get(key, ()))

    def quotes(self, key: str) -> frozenset[str]:
        """The quoting of each assignment of `key`: `''` (unquoted), `'` or `"`."""
        return frozenset(entry.quote for entry in self.by_key.get(key, ()))

    def names(self) -> frozenset[str]:
        """Every key assigned at least once."""
        return frozenset(self.by_key)

    def render(self) -> bytes:
        """The file's bytes, exactly as read for an unchanged file."""
        return self.text.encode("utf-8", "surrogateescape")

    def replace(self, values: Mapping[str, str]) -> EnvFile:
        """A copy with every assignment of each key in `values` set to its new value."""
        return from_bytes(self.rendered(values))

    def rendered(self, values: Mapping[str, str]) -> bytes:
        """The file's bytes with every assignment of each key in `values` set to its new value.

        One pass over the assignments of those keys only; every other byte is copied as it was.
        """
        spans = sorted((e for key in values for e in self.by_key.get(key, ())), key=lambda e: e.start)
        pieces: list[str] = []
        cursor = 0
        for entry in spans:
            pieces += [self.text[cursor : entry.start], _encode(values[entry.key], entry.quote, entry.key)]
            cursor = entry.end
        pieces.append(self.text[cursor:])
        return "".join(pieces).encode("utf-8", "surrogateescape")


def safe_value(value: str) -> bool:
    """Whether `value` can be written in any quoting style without escapes or interpolation."""
    return all(unwritable(value, quote) is None for quote in ("", "'", '"'))


def unfit(value: str) -> str | None:
    """Why `value` is no value at all, whatever the quoting, or None: empty, longer than MAX_VALUE, or
    holding a control character or line break."""
    if not value:
        return "is empty"
    if len(value) > MAX_VALUE:
        return f"is {len(value)} characters long (at most {MAX_VALUE})"
    if _CONTROL.search(value):
        return "holds a control character or line break"
    return None


def unwritable(value: str, quote: str) -> str | None:
    """Why compose would not read `value` back as written in a `quote`-quoted assignment, or None.

    Compose interpolates `$` (in double quotes and unquoted values), reads a backslash as an escape
    (a trailing one swallows the closing quote and the lines after it), ends an unquoted value at
    white space or ` #`, and reads an empty value beside an inline comment as the comment. So a value
    we write is non-empty, bounded, free of control characters, `$` and backslashes, and of the
    characters that would close its quoting.
    """
    problem = unfit(value)
    if problem is not None:
        return problem
    if "$" in value:
        return "holds '$', which compose would interpolate"
    if "\\" in value:
        return "holds a backslash, which compose reads as an escape"
    if _CLOSERS[quote].search(value):
        return f"holds {_CLOSING[quote]}, which ends {'an unquoted' if not quote else 'this quoted'} value"
    return None


def _encode(value: str, quote: str, key: str) -> str:
    problem = unwritable(value, quote)
    if problem is not None:
        raise EnvFileError(f"{key}: the new value {problem}; it cannot be written in this file's quoting style")
    return value


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


def parse(text: str) -> EnvFile:
    """Find every assignment in `text`; lines that are not assignments are kept as they are."""
    with _no_cyclic_gc():
        return _parse(text)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cycle collector while building many small acyclic objects, as pickle does.

    A large file yields hundreds of thousands of entries, none of them in a cycle; scanning them
    over and over would cost a third of the parse.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse(text: str) -> EnvFile:
    entries: list[Entry] = []
    consumed = 0
    # Matching "\n" + text lets the regex engine jump from line to line; offsets shift by one.
    for match in _ASSIGNMENT.finditer("\n" + text):
        if match.start() < consumed:
            continue  # inside a multi-line quoted value
        key, rest = match.group(1, 2)
        start, eol = match.start(2) - 1, match.end() - 1
        if rest[:1] in ("'", '"'):
            close = _closing_quote(text, start + 1, rest[0])
            if close >= 0:
                raw = text[start + 1 : close]
                entries.append(Entry(key, raw if rest[0] == "'" else _unescape(raw), start + 1, close, rest[0]))
                consumed = _line_end(text, close) + 1
                continue
        end = eol
        if "#" in rest:
            comment = _INLINE_COMMENT.search(text, start, end)
            if comment is not None:
                end = comment.start()
        while end > start and text[end - 1] in " \t\r":
            end -= 1
        entries.append(Entry(key, text[start:end], start, end, ""))
        consumed = eol + 1
    return _envfile(text, entries)


def _envfile(text: str, entries: list[Entry]) -> EnvFile:
    index: dict[str, list[Entry]] = {}
    for entry in entries:
        index.setdefault(entry.key, []).append(entry)
    return EnvFile(text, tuple(entries), index)


def _closing_quote(text: str, pos: int, quote: str) -> int:
    if quote == "'":
        return text.find("'", pos)
    begin = pos
    while True:
        found = text.find('"', pos)
        if found < 0:
            return -1
        backslashes = 0
        while found - 1 - backslashes >= begin and text[found - 1 - backslashes] == "\\":
            backslashes += 1
        if backslashes % 2 == 0:
            return found
        pos = found + 1


def _unescape(raw: str) -> str:
    return re.sub(r"\\(.)", lambda m: _DOUBLE_ESCAPES.get(m[1], m[0]), raw, flags=re.S)


def from_bytes(data: bytes) -> EnvFile:
    """Parse a file's bytes; bytes that are not UTF-8 survive a round trip unchanged."""
    return parse(data.decode("utf-8", "surrogateescape"))


def read(path: Path) -> EnvFile:
    """Parse the file at `path`; an unreadable file is an `EnvFileError` that names it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EnvFileError(f"{path}: cannot read ({exc.strerror})") from None
    return from_bytes(data)

"""Lossless `.env` files: parse as docker compose reads them, render back byte for byte.

Only the characters of a value being replaced ever change; comments, blank lines,
order, `export ` prefixes, quoting, inline comments and line endings stay as they were.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import EnvFileError

__all__ = ["Entry", "EnvFile", "parse", "read", "safe_value"]

_ASSIGNMENT = re.compile(r"[ \t]*(?:export[ \t]+)?(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)[ \t]*=[ \t]*")
_INLINE_COMMENT = re.compile(r"[ \t]#")
_UNSAFE_UNQUOTED = re.compile(r"[\s'\"#$\\]")
_DOUBLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


@dataclass(frozen=True, slots=True)
class Entry:
    """One `KEY=value` assignment: its key, decoded value and where the raw value sits in the text."""

    key: str
    value: str
    start: int
    end: int
    quote: str
    line: int


@dataclass(frozen=True, slots=True)
class EnvFile:
    """The full text of a `.env` file and the assignments found in it."""

    text: str
    entries: tuple[Entry, ...]

    def get(self, key: str) -> str | None:
        """The value compose would use for `key`: the last assignment wins."""
        found = [e.value for e in self.entries if e.key == key]
        return found[-1] if found else None

    def count(self, key: str) -> int:
        """How many times `key` is assigned."""
        return sum(1 for e in self.entries if e.key == key)

    def names(self) -> frozenset[str]:
        """Every key assigned at least once."""
        return frozenset(e.key for e in self.entries)

    def render(self) -> bytes:
        """The file's bytes, exactly as read for an unchanged file."""
        return self.text.encode("utf-8", "surrogateescape")

    def replace(self, values: Mapping[str, str]) -> EnvFile:
        """A copy with every assignment of each key in `values` set to its new value, in one pass."""
        pieces: list[str] = []
        cursor = 0
        for entry in self.entries:
            if entry.key not in values:
                continue
            pieces.append(self.text[cursor : entry.start])
            pieces.append(_encode(values[entry.key], entry.quote, entry.key))
            cursor = entry.end
        if not pieces:
            return self
        pieces.append(self.text[cursor:])
        return parse("".join(pieces))


def safe_value(value: str) -> bool:
    """Whether `value` can be written in any quoting style without escapes or interpolation."""
    return bool(value) and not _UNSAFE_UNQUOTED.search(value)


def _encode(value: str, quote: str, key: str) -> str:
    if quote == '"':
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    if quote == "'" and "'" not in value and "\n" not in value:
        return value
    if quote == "" and not _UNSAFE_UNQUOTED.search(value):
        return value
    raise EnvFileError(f"{key}: the new value cannot be written in this file's quoting style")


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


def parse(text: str) -> EnvFile:
    """Find every assignment in `text`; lines that are not assignments are kept as they are."""
    entries: list[Entry] = []
    pos = 0
    line = 1
    size = len(text)
    while pos < size:
        eol = _line_end(text, pos)
        match = _ASSIGNMENT.match(text, pos, eol)
        if match is None:
            line += 1
            pos = eol + 1
            continue
        start = match.end()
        opener = text[start] if start < size else ""
        if opener in ("'", '"'):
            close = _closing_quote(text, start + 1, opener)
            if close >= 0:
                raw = text[start + 1 : close]
                value = raw if opener == "'" else _unescape(raw)
                entries.append(Entry(match["key"], value, start + 1, close, opener, line))
                line += raw.count("\n")
                eol = _line_end(text, close)
                line += 1
                pos = eol + 1
                continue
        end = eol
        if end > start and text[end - 1] == "\r":
            end -= 1
        comment = _INLINE_COMMENT.search(text, start, end)
        if comment is not None:
            end = comment.start()
        while end > start and text[end - 1] in " \t":
            end -= 1
        entries.append(Entry(match["key"], text[start:end], start, end, "", line))
        line += 1
        pos = eol + 1
    return EnvFile(text, tuple(entries))


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


def read(path: Path) -> EnvFile:
    """Parse the file at `path`; an unreadable file is an `EnvFileError` that names it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EnvFileError(f"{path}: cannot read ({exc.strerror})") from None
    return parse(data.decode("utf-8", "surrogateescape"))

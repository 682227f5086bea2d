"""Text from disk or from a server, made safe to print: control characters are shown, never obeyed.

Audit lines, backup metadata, store error texts and file names are input like any other; printed
raw, an escape sequence could retitle the terminal, write to the clipboard (OSC 52), or a CR or a
newline could forge a row of a table.
"""

from __future__ import annotations

import re

__all__ = ["printable"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}


def printable(text: object) -> str:
    """`text` with every control character (ESC, CR, newline, C1) written as a visible escape."""
    return _CONTROL.sub(lambda m: _NAMED.get(m[0], f"\\x{ord(m[0]):02x}"), str(text))

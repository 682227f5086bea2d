"""`${VAR}` references: the plain form the configuration's templates use, and compose's full syntax.

One place for the pattern, so that the configuration, the probes and the stack files agree on what
a reference is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["NAME", "REFERENCE", "compose_variables", "expanded", "references"]

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
REFERENCE = re.compile(rf"\$\{{({NAME})\}}")  # `${VAR}` in a template of the configuration
_NAME = re.compile(NAME)


def references(text: str) -> list[str]:
    """The variables a configuration template names with `${VAR}`, in order."""
    return REFERENCE.findall(text)


def compose_variables(text: str) -> set[str]:
    """Every variable compose would read to interpolate `text`.

    Compose's syntax: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
    `${VAR:+alternative}` and their one-character forms, with references nested in the default
    (`${JWT_JWKS:-${JWT_SECRET}}` reads both), and `$$` for a literal dollar.
    """
    found: set[str] = set()
    pos = 0
    while (pos := text.find("$", pos)) != -1:
        following = text[pos + 1 : pos + 2]
        if following == "$":
            pos += 2
            continue
        if following == "{":
            name = _NAME.match(text, pos + 2)
            end = _closing_brace(text, pos + 2)
            if name:
                found.add(name[0])
                found |= compose_variables(text[name.end() : end])
            pos = end + 1
            continue
        name = _NAME.match(text, pos + 1)
        if name:
            found.add(name[0])
            pos = name.end()
        else:
            pos += 1
    return found


_SIMPLE = re.compile(rf"\$(?:\{{({NAME})(?:(:?-)([^}}$]*))?\}}|({NAME})|(\$))")


def expanded(text: str, variables: Mapping[str, str]) -> str | None:
    """`text` as compose interpolates it from `variables`, for a name such as a `container_name`:
    `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `$$`; None where it uses more than that
    (a nested or required reference), or a `${VAR}` without a value."""
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        braced, operator, default, bare, dollar = match.groups()
        if dollar:
            return "$"
        name = braced or bare
        found = variables.get(name)
        if operator == ":-" and not found:
            return default
        if operator == "-" and found is None:
            return default
        if found is None:
            missing = True
            return ""
        return found

    result = _SIMPLE.sub(value, text)
    leftover = _SIMPLE.sub("", text)
    return None if missing or "$" in leftover else result


def _closing_brace(text: str, start: int) -> int:
    """Where the `${` whose body starts at `start` closes (the end of `text` if it never does);
    braces in a default such as `{"keys":[]}` nest."""
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    return len(text)

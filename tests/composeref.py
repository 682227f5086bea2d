"""Which compose services read which variable, computed from the compose files themselves.

A service reads `NAME` when its definition (after YAML merge keys) interpolates `${NAME}`,
`${NAME:-...}` or `$NAME` anywhere, or passes `NAME` through from the environment with a bare
`- NAME` entry (or `NAME:` with no value). `include:` is followed, as compose v2 does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """compose's `!override` and `!reset` tags (docker-compose.kong.yml uses `!override`)."""


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    assert isinstance(node, yaml.SequenceNode)
    return loader.construct_sequence(node, deep=True)


_Loader.add_constructor("!override", _override)
_Loader.add_constructor("!reset", lambda loader, node: None)

_REF = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in _strings(k) + _strings(v)]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return []


def _passed_through(body: dict[str, Any]) -> set[str]:
    environment = body.get("environment") or {}
    if isinstance(environment, list):
        return {e for e in environment if isinstance(e, str) and "=" not in e}
    return {k for k, v in environment.items() if v is None}


def services(files: list[Path]) -> dict[str, dict[str, Any]]:
    """Every service of the compose files, later files overriding earlier ones, includes first."""
    found: dict[str, dict[str, Any]] = {}
    for path in files:
        model = yaml.load(path.read_text(), Loader=_Loader) or {}
        for included in model.get("include") or []:
            listed = included if isinstance(included, str) else included["path"]
            for name in [listed] if isinstance(listed, str) else listed:
                found.update(services([path.parent / name]))
        for name, body in (model.get("services") or {}).items():
            found[name] = {**found.get(name, {}), **(body or {})}
    return found


def readers(files: list[Path]) -> dict[str, set[str]]:
    """Variable name -> the services that read it."""
    found: dict[str, set[str]] = {}
    for name, body in services(files).items():
        names = {a or b for text in _strings(body) for a, b in _REF.findall(text)} | _passed_through(body)
        for variable in names:
            found.setdefault(variable, set()).add(name)
    return found


def container_names(files: list[Path]) -> dict[str, str]:
    """container_name -> service name."""
    return {body["container_name"]: name for name, body in services(files).items() if body.get("container_name")}

"""Finding and reading the configuration: a size cap and a hardened YAML load (no aliases, no
tags), before the schema checks what it says."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import ConfigError
from .model import Config
from .schema import build

MAX_CONFIG_BYTES = 1 << 20
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's when the wheel has it


def find_config(root: Path, explicit: str | None) -> Path | None:
    """The configuration to use: `--config`, else the stack's own (root, then `scripts/`), else None."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if not path.is_file():
            raise ConfigError(f"{explicit}: no such configuration file (--config)")
        return path
    for candidate in (root / "secrets-config.yaml", root / "scripts" / "secrets-config.yaml"):
        if candidate.is_file():
            return candidate
    return None


def load(path: Path) -> Config:
    """Read and validate `path`; every problem is a `ConfigError` naming the file and key."""
    try:
        data = path.read_bytes()
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {len(data)} bytes is too large for a configuration", path)
        text = data.decode("utf-8")
        _check_nodes(path, yaml.compose(text, Loader=_LOADER))
        raw = yaml.load(text, Loader=_LOADER)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})", path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: YAML syntax error: {problem}", path) from None
    return build(path, raw)


def _check_nodes(path: Path, root: yaml.Node | None) -> None:
    """Refuse what YAML allows but a configuration must not have: aliases (an alias bomb makes a
    1 KB file expand for minutes) and duplicate keys (silently last-wins: a second JWT_SECRET
    would replace the first)."""
    seen: set[int] = set()
    pending = [root] if root is not None else []
    while pending:
        node = pending.pop()
        if id(node) in seen:
            line = node.start_mark.line + 1
            raise ConfigError(f"{path}: line {line}: YAML anchors and aliases are not supported here", path)
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys:
                        line = key.start_mark.line + 1
                        raise ConfigError(f"{path}: line {line}: duplicate key '{key.value}'", path, key.value)
                    keys.add(key.value)
                pending += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            pending += node.value

"""Which service reads which variable, from the compose files the stack really uses.

The files are read as compose reads them, without running it (a dry run on a machine without
Docker gives the same plan): the files named by `compose.files` or COMPOSE_FILE, else compose's
default file and the override beside it, and every local `include:` they pull in. A service reads
a variable when its definition references it anywhere, inside another variable's default too
(`${JWT_JWKS:-${JWT_SECRET}}`), or when one of its `env_file:`s holds it. YAML has already dropped
the comments, so a commented-out line reads nothing. Later files merge into earlier ones; an
override that drops a reference still counts it, so a derivation errs towards one recreate too many.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import envfile
from .errors import RotationError
from .fsio import read_bounded
from .interpolation import compose_variables, expanded
from .replacement import Footprint, footprint

__all__ = ["DEFAULT_FILES", "OVERRIDE_FILES", "Readers", "dotenv", "named_files", "read"]

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")  # what compose looks for
OVERRIDE_FILES = (
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
)
MAX_COMPOSE_BYTES = 4 << 20
MAX_INCLUDES = 64  # include chains deeper or wider than this are a loop or an attack, not a stack
MAX_NODES = 1_000_000  # values scanned in one service definition (a YAML alias bomb stops here)


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML as compose reads it: the safe loader, plus compose's `!override` (replace the value an
    earlier file gave, do not merge) and `!reset` (drop it), which upstream's docker-compose.kong.yml uses."""


@dataclass(frozen=True, slots=True)
class _Override:
    value: Any


_RESET = object()


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> _Override:
    if isinstance(node, yaml.MappingNode):
        return _Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return _Override(loader.construct_sequence(node, deep=True))
    return _Override(loader.construct_scalar(node))  # type: ignore[arg-type]


_Loader.add_constructor("!override", _override)
_Loader.add_constructor("!reset", lambda loader, node: _RESET)


def _merged(base: Any, update: Any, memo: dict[int, Any] | None = None) -> Any:
    """`update` merged over `base` as compose merges a later file: mappings key by key, sequences
    appended, scalars replaced; `!override` replaces whole, `!reset` drops. A node that YAML shares
    through an alias is merged once and stays shared, so an alias bomb is not expanded."""
    memo = {} if memo is None else memo
    if base is None and id(update) in memo:
        return memo[id(update)]
    if isinstance(update, _Override):
        result = _merged(None, update.value, memo)
    elif isinstance(update, dict):
        result = dict(base) if isinstance(base, dict) else {}
        for key, value in update.items():
            if value is _RESET:
                result.pop(key, None)
            else:
                result[key] = _merged(result.get(key), value, memo)
    elif isinstance(update, list):
        kept = [_merged(None, item, memo) for item in update if item is not _RESET]
        result = (list(base) if isinstance(base, list) else []) + kept
    else:
        result = update
    if base is None:
        memo[id(update)] = result
    return result


@dataclass(frozen=True, slots=True)
class Readers:
    """The services of the stack's compose files and the variables each one reads."""

    reads: Mapping[str, frozenset[str]]  # service -> every variable its definition or env files hold
    containers: Mapping[str, str] = field(default_factory=dict)  # container_name -> service
    files: tuple[str, ...] = ()  # the compose files read, relative to the stack root where inside it
    warnings: tuple[str, ...] = ()
    footprints: Mapping[str, Footprint] = field(default_factory=dict)  # what decides start-first, by service

    def of(self, variable: str) -> tuple[str, ...]:
        """The services that read `variable`, sorted."""
        return tuple(sorted(s for s, names in self.reads.items() if variable in names))

    def service(self, name: str) -> str | None:
        """The service a service or container name stands for; None where the files have neither."""
        if name in self.reads:
            return name
        return self.containers.get(name)


def dotenv(root: Path) -> dict[str, str]:
    """The stack's .env as compose reads it for its own settings (COMPOSE_PROJECT_NAME, COMPOSE_FILE);
    empty where there is none or it cannot be read."""
    try:
        parsed = envfile.from_bytes(read_bounded(root / ".env", MAX_COMPOSE_BYTES))
    except (FileNotFoundError, RotationError):
        return {}
    return {key: value for key in parsed.names() if (value := parsed.get(key)) is not None}


def named_files(root: Path, configured: Sequence[str], dotenv: Mapping[str, str | None]) -> tuple[str, ...]:
    """The compose files named for the stack, as compose decides: `configured` (compose.files), else
    COMPOSE_FILE from the environment, then the stack's .env; empty when none is named."""
    if configured:
        return tuple(configured)
    listed = os.environ.get("COMPOSE_FILE") or dotenv.get("COMPOSE_FILE") or ""
    separator = os.environ.get("COMPOSE_PATH_SEPARATOR") or dotenv.get("COMPOSE_PATH_SEPARATOR") or ":"
    return tuple(name for name in listed.split(separator) if name)


def _defaults(root: Path) -> list[str]:
    """Compose's own choice where no file is named: the first default file, and the override beside it."""
    first = [n for n in DEFAULT_FILES if (root / n).is_file()][:1]
    return first + [n for n in OVERRIDE_FILES if (root / n).is_file()][:1] if first else []


def read(root: Path, named: Sequence[str]) -> Readers:
    """The readers of every variable in the files `named` (or compose's defaults) and what they include.

    A file that cannot be read or parsed, or that lies outside the stack, is a warning, not an
    error: the derivation then knows less, and the plan says so. A file the configuration names
    outside the stack (`compose.files: [/srv/app/compose.yaml]`) is the user's choice, as it is
    compose's: its folder is read too. A link inside the stack that leads out of it is not followed.
    """
    reader = _Reader(root.resolve())
    names = list(named or _defaults(root))
    # compose without --project-directory: relative paths of every named file resolve against the
    # folder of the first one (includes against their own)
    project = Path(os.path.normpath(root / names[0])).parent if names else root
    for name in names:
        path = Path(os.path.normpath(root / name))
        if not path.is_relative_to(root):
            reader.roots.append(path.resolve().parent)
        reader.file(root / name, project)
    if not reader.read and not reader.warnings:
        reader.warnings.append(f"no compose file found in {root} ({', '.join(named or DEFAULT_FILES)})")
    reads = {name: reader.reads_of(body) for name, body in reader.services.items()}
    variables = {**dotenv(project), **os.environ}  # as compose interpolates: the shell over the .env
    containers = {}
    for name, body in reader.services.items():
        written = body.get("container_name")
        if isinstance(written, str) and written:
            containers[expanded(written, variables) or written] = name
    footprints = {name: footprint(body, project) for name, body in reader.services.items()}
    return Readers(reads, containers, tuple(reader.read), tuple(reader.warnings), footprints)


class _Reader:
    """Follows the files and merges each service's definition across them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.roots = [root]  # the stack, and the folders of files named outside it
        self.services: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, Any] = {}
        self.read: list[str] = []
        self.warnings: list[str] = []
        self.seen: set[Path] = set()

    def _inside(self, real: Path) -> bool:
        return any(real.is_relative_to(root) for root in self.roots)

    def _shown(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def _load(self, path: Path) -> Any:
        """The parsed file, or None with a warning."""
        real = path.resolve()
        try:
            return yaml.load(read_bounded(real, MAX_COMPOSE_BYTES).decode("utf-8"), Loader=_Loader)
        except FileNotFoundError:
            self.warnings.append(f"{self._shown(real)}: no such compose file")
        except (RotationError, UnicodeDecodeError, yaml.YAMLError) as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self.warnings.append(f"{self._shown(real)}: not read ({problem})")
        return None

    def file(self, path: Path, directory: Path) -> None:
        """Read one compose file whose relative paths resolve against `directory`, includes first."""
        real = path.resolve()
        if not self._inside(real):
            self.warnings.append(f"{path}: outside the stack root; not read")
            return
        if real in self.seen or len(self.seen) >= MAX_INCLUDES:
            return
        self.seen.add(real)
        model = self._load(path)
        if model is None:
            return
        if not isinstance(model, dict):
            self.warnings.append(f"{self._shown(real)}: not a compose file (expected a mapping)")
            return
        self.read.append(self._shown(real))
        for entry in _list(model.get("include")):
            self._include(entry, real.parent)
        self.secrets.update(_mapping(model.get("secrets")))
        for name, body in _mapping(model.get("services")).items():
            if isinstance(body, dict):
                body = {**body, "env_file": [str(directory / p) for p in _env_paths(body.get("env_file"))]}
                self.services[str(name)] = _merged(self.services.get(str(name)), body)

    def _include(self, entry: Any, directory: Path) -> None:
        """`include:` as a path, or a mapping whose `path` is one or several, relative to the includer."""
        paths = entry.get("path") if isinstance(entry, dict) else entry
        for name in _list(paths):
            if not isinstance(name, str) or "://" in name or name.startswith(("git@", "oci:")):
                continue  # remote includes are compose's to fetch; a stack's secrets are local
            path = directory / name
            project = entry.get("project_directory") if isinstance(entry, dict) else None
            self.file(path, directory / project if isinstance(project, str) else path.parent)

    def reads_of(self, body: Mapping[str, Any]) -> frozenset[str]:
        """The variables a merged service definition reads: referenced, passed through by name, held
        by its env files, or the source of a secret it mounts."""
        found = _variables({k: v for k, v in body.items() if k != "env_file"})
        found |= _passed_through(body.get("environment"))
        for path in body.get("env_file") or ():
            found |= self._env_file(Path(path))
        for entry in _list(body.get("secrets")):  # a top-level secret may come from a variable
            source = entry.get("source") if isinstance(entry, dict) else entry
            declared = self.secrets.get(source) if isinstance(source, str) else None
            if isinstance(declared, dict) and isinstance(declared.get("environment"), str):
                found.add(declared["environment"])
        return frozenset(found)

    def _env_file(self, path: Path) -> set[str]:
        """The keys an env_file sets and the variables its values reference."""
        real = path.resolve()
        if not self._inside(real):
            self.warnings.append(f"{path}: env_file outside the stack root; not read")
            return set()
        try:
            parsed = envfile.from_bytes(read_bounded(real, MAX_COMPOSE_BYTES))
        except FileNotFoundError:
            return set()  # compose itself fails on a required one; an optional one reads nothing
        except RotationError as exc:
            self.warnings.append(f"{self._shown(real)}: env_file not read ({exc})")
            return set()
        names = set(parsed.names())
        for key in parsed.names():
            names |= compose_variables(parsed.get(key) or "")
        return names


def _env_paths(value: Any) -> list[str]:
    """The paths of `env_file:` (a path, a list of paths, or of `{path, required}`)."""
    listed = [entry.get("path") if isinstance(entry, dict) else entry for entry in _list(value)]
    return [path for path in listed if isinstance(path, str)]


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _passed_through(environment: Any) -> set[str]:
    """The variables `environment:` passes on by name alone (`- NAME`, or `NAME:` with no value):
    compose gives the container their values from its own environment, the stack's .env included."""
    if isinstance(environment, dict):
        return {str(k) for k, v in environment.items() if v is None}
    if isinstance(environment, list):
        return {item for item in environment if isinstance(item, str) and "=" not in item}
    return set()


def _variables(body: Any) -> set[str]:
    """Every variable referenced by a string anywhere in `body`; each shared (aliased) node once."""
    found: set[str] = set()
    seen: set[int] = set()
    for value in _walk(body, seen):
        found |= compose_variables(value)
    return found


def _walk(node: Any, seen: set[int]) -> Iterator[str]:
    pending = [node]
    while pending and len(seen) < MAX_NODES:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, (dict, list)) and id(item) not in seen:
            seen.add(id(item))
            pending.extend(item.values() if isinstance(item, dict) else item)

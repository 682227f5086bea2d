"""The Docker Compose engine: the compose command recreates, with the files and project each
service was started with; the Docker API half (`docker.DockerEngine`) does everything else."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ..composefiles import DEFAULT_FILES, dotenv, named_files
from ..config import ComposeSpec, Config
from ..errors import EngineError
from ..replacement import Footprint, Strategy, footprint, strategy
from . import startfirst
from .docker import DockerEngine
from .protocol import Service, ServiceState

if TYPE_CHECKING:
    from docker import DockerClient

__all__ = [
    "ComposeEngine",
    "Origin",
    "Runner",
    "WarmRunner",
    "compose_command",
    "compose_failure",
    "subprocess_runner",
]

CONFIG_FILES = "com.docker.compose.project.config_files"
WORKING_DIR = "com.docker.compose.project.working_dir"

Runner = Callable[[Sequence[str], Path], str]


def compose_failure(argv: Sequence[str], output: str, code: int) -> EngineError:
    """The error for a failed compose command: its own error line, not the help text after it."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    at = next((i for i, line in enumerate(lines) if re.search(r"error|invalid", line, re.I)), len(lines) - 1)
    reason = " ".join(lines[at : at + 2]) if lines and lines[at].endswith(":") else (lines[at] if lines else "")
    return EngineError(f"`{shlex.join(argv[:3])} ...` failed: {reason or f'exit code {code}'}")


def subprocess_runner(argv: Sequence[str], cwd: Path) -> str:
    """Run a compose command and return its output; a failure is an `EngineError` with compose's words."""
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise compose_failure(argv, done.stderr + done.stdout, done.returncode)
    return done.stdout


# Run in a process started ahead of need: import the console script's entry point (compose and the
# docker SDK, the bulk of its start-up), then wait for the request on stdin. If the entry point
# cannot be found, the script itself runs as usual once the request comes.
_WARM = """
import json, os, sys
script = sys.argv[1]
main = None
try:
    from importlib.metadata import distributions
    name = os.path.basename(script)
    main = next(
        ep for dist in distributions() for ep in dist.entry_points
        if ep.group == "console_scripts" and ep.name == name
    ).load()
except Exception:
    main = None
line = sys.stdin.readline()
if not line:
    sys.exit(0)
request = json.loads(line)
os.chdir(request["cwd"])
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
sys.argv = [script, *request["argv"][1:]]
if main is None:
    import runpy
    runpy.run_path(script, run_name="__main__")
else:
    sys.exit(main())
"""


def _python_script(command: str) -> tuple[tuple[str, ...], str] | None:
    """(interpreter argv, script path) when `command` is a Python console script, as docker-compose
    v1 is; None for anything else (the compose plugin is a Go binary that starts fast anyway)."""
    path = shutil.which(command)
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            first = handle.readline(256).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!") or "python" not in first:
        return None
    return tuple(first[2:].split()), path


class WarmRunner:
    """Runs docker-compose v1 from a process started ahead, with compose already imported.

    Its Python start-up (about 0.5 s of CPU on a 2-core machine) otherwise lands on the restart's
    critical path once per dependency level. `prepare` starts a process ahead (a restart asks for
    one only when another wave of recreates will follow, so a single recreate costs no extra
    CPU); a call with none ready, and any command that is not a Python console script, runs as a
    plain subprocess. Results and errors are the same either way.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[tuple[tuple[str, ...], str], subprocess.Popen[bytes]] = {}

    def __call__(self, argv: Sequence[str], cwd: Path) -> str:
        entry = _python_script(argv[0])
        if entry is None:
            return subprocess_runner(argv, cwd)
        with self._lock:
            process = self._ready.pop(entry, None)
        if process is None:
            return subprocess_runner(argv, cwd)
        request = json.dumps({"argv": list(argv), "cwd": str(cwd)}).encode() + b"\n"
        out, err = process.communicate(request)
        if process.returncode != 0:
            raise compose_failure(
                argv, err.decode("utf-8", "replace") + out.decode("utf-8", "replace"), process.returncode
            )
        return out.decode("utf-8", "replace")

    def prepare(self, command: str) -> None:
        """Warm a process for the next call of `command`, unless one is ready."""
        entry = _python_script(command)
        with self._lock:
            if entry is not None and entry not in self._ready:
                self._ready[entry] = self._spawn(entry)

    @staticmethod
    def _spawn(entry: tuple[tuple[str, ...], str]) -> subprocess.Popen[bytes]:
        """A process that imports the entry point now and runs when asked; it exits on its own when
        this one does (its stdin closes)."""
        interpreter, script = entry
        return subprocess.Popen(
            [*interpreter, "-c", _WARM, script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


def compose_command(configured: str | None) -> list[str]:
    """The compose command: configured, else `docker compose`, else `docker-compose`."""
    if configured:
        argv = configured.split()
        if shutil.which(argv[0]) is None:
            raise EngineError(f"compose.command: '{argv[0]}' not found on PATH")
        return argv
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise EngineError("no compose command: neither `docker compose` nor `docker-compose` works; set compose.command")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where compose runs for a service: its project directory and the files it was started with."""

    directory: Path
    files: tuple[str, ...]


def _includes(origin: Origin) -> bool:
    for name in origin.files or DEFAULT_FILES:
        try:
            model = yaml.safe_load((origin.directory / name).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(model, dict) and model.get("include"):
            return True
    return False


def _normalise(name: str) -> str:
    return re.sub(r"[^-_a-z0-9]", "", name.lower())


class ComposeEngine(DockerEngine):
    """One compose project: the compose command recreates, the Docker API half does the rest."""

    def __init__(
        self,
        root: Path,
        spec: ComposeSpec,
        runner: Runner = subprocess_runner,
        client: DockerClient | None = None,
        recreator: Runner | None = None,
    ) -> None:
        super().__init__(client)
        self.root = root
        self.spec = spec
        self.runner = runner
        self.recreator = recreator or (WarmRunner() if runner is subprocess_runner else runner)
        self._command: list[str] | None = None
        self._services: dict[str, Service] | None = None
        self._origins: dict[str, Origin] | None = None
        self._dotenv = dotenv(root)
        self.files = self._default_files()
        # As compose decides it: flag or config, the environment, the stack's .env, the file's name:, the directory.
        self.project = _normalise(
            spec.project
            or os.environ.get("COMPOSE_PROJECT_NAME")
            or self._dotenv.get("COMPOSE_PROJECT_NAME")
            or self._default_project()
        )

    @classmethod
    def for_stack(cls, root: Path, config: Config) -> ComposeEngine:
        """The engine of the compose project the configuration's `compose:` describes."""
        return cls(root, config.compose)

    def _default_files(self) -> tuple[str, ...]:
        """compose.files, else COMPOSE_FILE (environment, then the stack's .env), else compose's own defaults."""
        return named_files(self.root, self.spec.files, self._dotenv)

    def _default_project(self) -> str:
        for name in self.files_or_defaults():
            try:
                raw = yaml.safe_load((self.root / name).read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(raw, dict) and isinstance(raw.get("name"), str) and "$" not in raw["name"]:
                return _normalise(raw["name"])
        return _normalise(self.root.resolve().name)

    def files_or_defaults(self) -> tuple[str, ...]:
        """The files compose reads when none is named: ours, or the names compose looks for."""
        return self.files or DEFAULT_FILES

    def _argv(self, origin: Origin, *args: str) -> list[str]:
        if self._command is None:
            self._command = compose_command(self.spec.command)
        argv = [*self._command, "-p", self.project]
        for name in origin.files:
            argv += ["-f", name]
        return [*argv, *args]

    def compose(self, origin: Origin, *args: str, runner: Runner | None = None) -> str:
        """The output of a compose command for the services started with `origin`'s files."""
        command = self._argv(origin, *args)
        if command[0] == "docker-compose" and _includes(origin):
            raise EngineError(
                f"{', '.join(origin.files) or 'the compose file'} uses `include:`, which docker-compose v1 cannot "
                "read; install the compose plugin (`docker compose` v2), or set compose.command"
            )
        return (runner or self.runner)(command, origin.directory)

    def origins(self) -> dict[str, Origin]:
        """Each service with a container: the directory and files compose was started with, from the
        labels compose put on it, so a recreate keeps every override file. Labels whose files are
        gone fall back to the stack's own. Read once per engine: a recreate made with them keeps
        them, so each later recreate of a restart saves an inspect of every container."""
        if self._origins is None:
            self._origins = self._read_origins()
        return self._origins

    def _read_origins(self) -> dict[str, Origin]:
        found: dict[str, Origin] = {}
        for service, container in self._containers().items():
            labels = container.labels
            directory = Path(labels.get(WORKING_DIR) or self.root)
            files = tuple(str(directory / f) for f in (labels.get(CONFIG_FILES) or "").split(",") if f)
            if files and directory.is_dir() and all(Path(f).is_file() for f in files):
                origin = Origin(directory, files)
                found[service] = self.own_origin if origin == self._defaults_here() else origin
        return found

    def _defaults_here(self) -> Origin:
        """What compose itself reads in the stack root when no file is named: its first default file
        and, beside it, docker-compose.override.yml."""
        names = [n for n in self.files_or_defaults() if (self.root / n).is_file()][:1]
        names += [
            n for n in ("docker-compose.override.yml", "docker-compose.override.yaml") if (self.root / n).is_file()
        ][:1]
        return Origin(self.root, tuple(str(self.root / n) for n in names))

    def _groups(self, services: Sequence[str], *, known: bool = True) -> dict[Origin, list[str]]:
        """`services` grouped by the files they were started with; with `known=False` an engine that
        cannot be asked leaves every service on the stack's own files (for a message, not an action)."""
        try:
            origins = self.origins()
        except EngineError:
            if known:
                raise
            origins = {}
        groups: dict[Origin, list[str]] = {}
        for service in services:
            groups.setdefault(origins.get(service, self.own_origin), []).append(service)
        return groups

    @property
    def own_origin(self) -> Origin:
        """The stack's own files, for a service without a container to read them from."""
        return Origin(self.root, self.files)

    def prepare(self) -> None:
        """Start warming the compose process the next recreate will use."""
        if isinstance(self.recreator, WarmRunner):
            self.recreator.prepare(self._argv(self.own_origin)[0])

    def recreate_command(self, services: Sequence[str]) -> str:
        """`<compose> up -d --force-recreate ...` per set of files the services were started with."""
        commands = []
        for origin, names in self._groups(services, known=False).items():
            command = shlex.join(self._argv(origin, "up", "-d", "--force-recreate", *names))
            same = origin.directory.resolve() == self.root.resolve()
            commands.append(command if same else f"(cd {shlex.quote(str(origin.directory))} && {command})")
        return " && ".join(commands)

    def services(self) -> Mapping[str, Service]:
        """The services of every set of compose files the project was started with, from `compose
        config` (without interpolating secrets)."""
        if self._services is None:
            found: dict[str, Service] = {}
            for origin in dict.fromkeys([self.own_origin, *self.origins().values()]):
                try:
                    model = yaml.safe_load(self.compose(origin, "config", "--no-interpolate"))
                except yaml.YAMLError:
                    raise EngineError("compose config printed something that is not YAML") from None
                for name, body in (model.get("services") or {}).items():
                    deps = body.get("depends_on") or {}
                    place = footprint(body, origin.directory)
                    found[name] = Service(name, body.get("container_name"), frozenset(deps), place)
            self._services = found
        return self._services

    def strategy(self, service: str) -> Strategy:
        """Start-first where the compose definition declares it and the service can run twice."""
        defined = self.services().get(service)
        return strategy(defined.footprint if defined else Footprint(), self.spec.single_writer, self.root)

    def replace(self, service: str, timeout: float) -> ServiceState:
        """Start a replacement beside the old container and switch to it once healthy (`startfirst`)."""
        return startfirst.replace(self, service, timeout)

    def recreate(self, services: Sequence[str]) -> None:
        """Each old container stops only now, replaced by a new one that reads the env files now.

        Compose creates the new containers (`up --no-start --no-deps --force-recreate`, one call per
        set of files the services were started with), which also removes the old ones; then the
        engine API starts them. Letting compose start them (`up -d`) would start each new container
        before removing its predecessor, and Podman's DNS (aardvark) then drops the service's name
        with the old container: its clients could no longer find it.
        """
        for origin, names in self._groups(services).items():
            self.compose(origin, "up", "--no-start", "--no-deps", "--force-recreate", *names, runner=self.recreator)
        for name in services:
            self.start(name)

"""The Docker Compose backend of `engine.Engine`: the compose command creates, the docker SDK does the rest.

Containers are found by their compose labels, never by name, so compose v1 and v2 naming and
Podman's Docker-compatible API all work. The docker SDK is imported only when the engine is
first used, so commands that never talk to it start fast.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay, wait_exponential

from . import envfile
from .config import ComposeSpec
from .engine import ExecResult, Service, ServiceState, instant
from .errors import EngineError, EngineUnreachable, RotationError, SelectionError, did_you_mean

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

__all__ = ["ComposeEngine", "Origin", "Runner", "compose_command", "compose_failure", "subprocess_runner"]

log = logging.getLogger(__name__)
PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
ONEOFF = "com.docker.compose.oneoff"
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


def _cause(exc: BaseException) -> str:
    """The operating system's words for why a connection failed (`No such file or directory`), not a repr."""
    pending, seen, reason = [exc], set(), ""
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError) and error.strerror:
            reason = error.strerror
        pending += [a for a in error.args if isinstance(a, BaseException)]
        pending += [e for e in (error.__cause__, error.__context__) if e is not None]
    return reason or "no answer"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where compose runs for a service: its project directory and the files it was started with."""

    directory: Path
    files: tuple[str, ...]


def _dotenv(root: Path) -> dict[str, str]:
    """The stack's .env as compose reads it for its own settings (COMPOSE_PROJECT_NAME, COMPOSE_FILE)."""
    try:
        parsed = envfile.read(root / ".env")
    except RotationError:
        return {}
    return {key: value for key in parsed.names() if (value := parsed.get(key)) is not None}


def _includes(origin: Origin) -> bool:
    for name in origin.files or ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml"):
        try:
            model = yaml.safe_load((origin.directory / name).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(model, dict) and model.get("include"):
            return True
    return False


def _normalise(name: str) -> str:
    return re.sub(r"[^-_a-z0-9]", "", name.lower())


def _state(service: str, container: Container | None) -> ServiceState:
    if container is None:
        return ServiceState(service, "missing")
    attrs: dict[str, Any] = container.attrs
    state = attrs.get("State") or {}
    health = state.get("Health") or state.get("Healthcheck") or {}
    log_entries = health.get("Log") or []
    passed = [str(e["Start"]) for e in log_entries if e.get("ExitCode") == 0 and e.get("Start")]
    return ServiceState(
        service=service,
        state=str(state.get("Status", "unknown")),
        health=health.get("Status") or None,  # Podman reports "" where Docker reports nothing
        restarts=int(attrs.get("RestartCount") or 0),
        started_at=state.get("StartedAt"),
        container_id=container.id,
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        health_output=(log_entries[-1].get("Output") or "").strip()[-500:] if log_entries else None,
        passed_at=max(passed, key=lambda stamp: instant(stamp) or 0, default=None),
        created_at=attrs.get("Created"),
        first_passed_at=min(
            (str(e["End"]) for e in log_entries if e.get("ExitCode") == 0 and e.get("End")),
            key=lambda stamp: instant(stamp) or 0,
            default=None,
        ),
    )


class _Progress:
    """Logs a service's state while waiting for it: each change at INFO, repeats at DEBUG."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.last: str | None = None

    def __call__(self, state: ServiceState) -> None:
        level = logging.DEBUG if state.summary == self.last else logging.INFO
        log.log(level, "waiting for %s: %s", self.service, state.summary)
        self.last = state.summary


class ComposeEngine:
    """One compose project, reached through `DOCKER_HOST` (docker.from_env) and the compose command."""

    def __init__(
        self,
        root: Path,
        spec: ComposeSpec,
        runner: Runner = subprocess_runner,
        client: DockerClient | None = None,
    ) -> None:
        self.root = root
        self.spec = spec
        self.runner = runner
        self._client = client
        self._command: list[str] | None = None
        self._services: dict[str, Service] | None = None
        self._dotenv = _dotenv(root)
        self.files = self._default_files()
        # As compose decides it: flag or config, the environment, the stack's .env, the file's name:, the directory.
        self.project = _normalise(
            spec.project
            or os.environ.get("COMPOSE_PROJECT_NAME")
            or self._dotenv.get("COMPOSE_PROJECT_NAME")
            or self._default_project()
        )

    def _default_files(self) -> tuple[str, ...]:
        """compose.files, else COMPOSE_FILE (environment, then the stack's .env), else compose's own defaults."""
        if self.spec.files:
            return self.spec.files
        listed = os.environ.get("COMPOSE_FILE") or self._dotenv.get("COMPOSE_FILE") or ""
        separator = os.environ.get("COMPOSE_PATH_SEPARATOR") or self._dotenv.get("COMPOSE_PATH_SEPARATOR") or ":"
        return tuple(name for name in listed.split(separator) if name)

    def _default_project(self) -> str:
        for name in self.files_or_defaults():
            try:
                raw = yaml.safe_load((self.root / name).read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(raw, dict) and isinstance(raw.get("name"), str) and "$" not in raw["name"]:
                return _normalise(raw["name"])
        return _normalise(self.root.resolve().name)

    @property
    def client(self) -> DockerClient:
        """The docker SDK client, connected on first use; an unreachable engine is an `EngineError`."""
        if self._client is None:
            import docker  # deferred: the SDK is slow to import and most commands never need it

            where = os.environ.get("DOCKER_HOST", "the default socket")
            try:
                client = docker.from_env()
                client.ping()
            except docker.errors.DockerException as exc:
                raise EngineUnreachable(
                    f"cannot reach the container engine at {where} ({_cause(exc)}); "
                    "is it running? Set DOCKER_HOST to its socket"
                ) from None
            self._client = client
        return self._client

    def files_or_defaults(self) -> tuple[str, ...]:
        """The files compose reads when none is named: ours, or the names compose looks for."""
        return self.files or ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")

    def _argv(self, origin: Origin, *args: str) -> list[str]:
        if self._command is None:
            self._command = compose_command(self.spec.command)
        argv = [*self._command, "-p", self.project]
        for name in origin.files:
            argv += ["-f", name]
        return [*argv, *args]

    def _compose(self, origin: Origin, *args: str) -> str:
        command = self._argv(origin, *args)
        if command[0] == "docker-compose" and _includes(origin):
            raise EngineError(
                f"{', '.join(origin.files) or 'the compose file'} uses `include:`, which docker-compose v1 cannot "
                "read; install the compose plugin (`docker compose` v2), or set compose.command"
            )
        return self.runner(command, origin.directory)

    def origins(self) -> dict[str, Origin]:
        """Each service with a container: the directory and files compose was started with, from the
        labels compose put on it, so a recreate keeps every override file. Labels whose files are
        gone fall back to the stack's own."""
        found: dict[str, Origin] = {}
        for service, container in self._containers().items():
            labels = container.labels
            directory = Path(labels.get(WORKING_DIR) or self.root)
            files = tuple(str(directory / f) for f in (labels.get(CONFIG_FILES) or "").split(",") if f)
            if files and directory.is_dir() and all(Path(f).is_file() for f in files):
                origin = Origin(directory, files)
                found[service] = self._own if origin == self._defaults_here() else origin
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
            groups.setdefault(origins.get(service, self._own), []).append(service)
        return groups

    @property
    def _own(self) -> Origin:
        return Origin(self.root, self.files)

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
            for origin in dict.fromkeys([self._own, *self.origins().values()]):
                try:
                    model = yaml.safe_load(self._compose(origin, "config", "--no-interpolate"))
                except yaml.YAMLError:
                    raise EngineError("compose config printed something that is not YAML") from None
                for name, body in (model.get("services") or {}).items():
                    deps = body.get("depends_on") or {}
                    found[name] = Service(name, body.get("container_name"), frozenset(deps))
            self._services = found
        return self._services

    def resolve(self, names: Sequence[str], source: str = "restart_services") -> list[str]:
        """Service names for `names` given as service or container names; an unknown one is an error naming `source`."""
        services = self.services()
        by_container = {s.container_name: s.name for s in services.values() if s.container_name}
        resolved, unknown = [], []
        for name in names:
            if name in services:
                resolved.append(name)
            elif name in by_container:
                resolved.append(by_container[name])
            else:
                unknown.append(name)
        if unknown:
            hint = did_you_mean(unknown[0], [*services, *by_container])
            raise SelectionError(
                f"{source}: {', '.join(unknown)}{hint} {'is' if len(unknown) == 1 else 'are'} neither a service "
                f"nor a container_name of compose project '{self.project}' (services: {', '.join(sorted(services))})"
            )
        return sorted(set(resolved))

    def _containers(self, service: str | None = None) -> dict[str, Container]:
        """The newest container of every service (or of `service` alone), found by compose labels."""
        import docker

        labels = [f"{PROJECT}={self.project}", *([f"{SERVICE}={service}"] if service else [])]
        found: dict[str, Container] = {}
        for container in self.client.containers.list(all=True, sparse=True, filters={"label": labels}):
            try:
                container.reload()
            except docker.errors.NotFound:
                continue  # removed between the list and the inspect, as a recreate does
            tags = container.labels
            if tags.get(ONEOFF, "False") == "True" or SERVICE not in tags:
                continue
            name = tags[SERVICE]
            # With several containers for one service, the newest one speaks for it.
            if name not in found or container.attrs.get("Created", "") > found[name].attrs.get("Created", ""):
                found[name] = container
        return found

    def states(self) -> Mapping[str, ServiceState]:
        """Every defined service's state, plus running services of the project the files do not define."""
        containers = self._containers()
        names = set(self.services()) | set(containers)
        return {name: _state(name, containers.get(name)) for name in sorted(names)}

    def state(self, service: str) -> ServiceState:
        """One service's state, read from its containers alone."""
        return _state(service, self._containers(service).get(service))

    def recreate(self, services: Sequence[str]) -> None:
        """`up -d --no-deps --force-recreate`: each old container stops only now, replaced by a new one,
        in one invocation per set of files the services were started with."""
        for origin, names in self._groups(services).items():
            self._compose(origin, "up", "-d", "--no-deps", "--force-recreate", *names)

    def wait_healthy(self, service: str, previous: str | None, timeout: float) -> ServiceState:
        """Wait until a new container is healthy, has stopped, or time is up, and return its state.

        It follows the engine's event stream (start, health_status, die) and reads the state only
        when the service's container reports something, so it sees health the moment the engine
        does; where the stream is unavailable, or the engine ends it early, it polls with a short
        capped backoff.
        """
        import docker

        progress = _Progress(service)

        def settled(state: ServiceState) -> bool:
            fresh = state.container_id is not None and state.container_id != previous
            return fresh and (state.healthy or state.stopped)

        deadline = time.time() + max(timeout, 0)
        try:
            events = self.client.events(
                decode=True,
                since=int(time.time()) - 1,
                until=int(deadline) + 1,
                filters={"type": "container", "label": f"{PROJECT}={self.project}"},
            )
        except docker.errors.DockerException:
            return self._poll(service, settled, deadline, progress)
        with closing(events):
            state = self.state(service)
            while not settled(state) and time.time() < deadline:
                progress(state)
                event = next(events, None)
                if event is None:
                    break
                if (event.get("Actor") or {}).get("Attributes", {}).get(SERVICE) == service:
                    state = self.state(service)
        if not settled(state) and time.time() < deadline:
            return self._poll(service, settled, deadline, progress)  # the engine ended the stream early
        return state

    def wait_rechecked(self, service: str, since: int, timeout: float) -> ServiceState:
        """Poll until a healthcheck begun after `since` has passed, the container stopped, or time is up.

        It polls rather than follows events: the engine reports a health event only when the
        status changes, and a service that stayed `healthy` on stale checks reports none.
        """

        def settled(state: ServiceState) -> bool:
            return state.stopped or state.state == "missing" or state.healthy_since(since)

        return self._poll(service, settled, time.time() + max(timeout, 0), _Progress(service))

    def _poll(
        self, service: str, settled: Callable[[ServiceState], bool], deadline: float, progress: _Progress
    ) -> ServiceState:
        def last(retry_state: RetryCallState) -> ServiceState:
            assert retry_state.outcome is not None
            state: ServiceState = retry_state.outcome.result()
            return state

        result: ServiceState = Retrying(
            stop=stop_after_delay(max(deadline - time.time(), 0)),
            wait=wait_exponential(multiplier=0.05, min=0.05, max=0.5),
            retry=retry_if_result(lambda s: not settled(s)),
            before_sleep=lambda rs: progress(last(rs)),
            retry_error_callback=last,
        )(self.state, service)
        return result

    def logs(self, service: str, lines: int) -> str:
        """The last lines of the service's newest container."""
        container = self._containers(service).get(service)
        if container is None:
            return ""
        return bytes(container.logs(tail=lines)).decode("utf-8", "replace")

    def execute(self, service: str, argv: Sequence[str], stdin: bytes, env: Mapping[str, str]) -> ExecResult:
        """Run `argv` in the service's container, feeding `stdin` through the attach socket, never argv."""
        from docker.utils.socket import frames_iter

        container = self._containers(service).get(service)
        if container is None or container.status != "running":
            raise EngineError(
                f"service {service} of project '{self.project}' is not running; cannot run {argv[0]} in it"
            )
        api = self.client.api
        exec_id = api.exec_create(
            container.id, list(argv), stdin=True, stdout=True, stderr=True, environment=dict(env) or None
        )["Id"]
        attached = api.exec_start(exec_id, socket=True)
        raw: Any = getattr(attached, "_sock", attached)
        raw.sendall(stdin)
        raw.shutdown(socket.SHUT_WR)
        output = b"".join(data for _, data in frames_iter(attached, tty=False))  # type: ignore[no-untyped-call]
        attached.close()
        code = api.exec_inspect(exec_id).get("ExitCode")
        return ExecResult(int(code if code is not None else -1), output.decode("utf-8", "replace"))

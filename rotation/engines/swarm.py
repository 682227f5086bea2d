"""The Docker Swarm engine: a stack deployed with `docker stack deploy`, updated by Swarm itself.

Swarm already does what a rotation needs: rolling updates gated on health (`update_config`,
with `order: start-first` an old task serves until its replacement is healthy), its own
rollback, and secrets mounted at `/run/secrets/NAME`. So a recreate here is `docker stack
deploy` of the stack files cut down to the services in hand: the stack files stay the source of
truth, values reach the `docker` process only through its environment (never its command line),
and the specs are exactly what a plain `docker stack deploy` of the whole files makes, so that
one changes nothing afterwards. The waits follow each service's update status until Swarm says
completed, or paused or rolled back.

Swarm ignores `depends_on`, but clients still care which side changes first: the services come
from the stack files with their `depends_on`, and the restart orders updates by them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_exponential

from .. import envfile
from ..composefiles import DEFAULT_FILES
from ..config import Config, SwarmSpec
from ..errors import ConfigError, EngineError, SelectionError, did_you_mean
from ..fsio import inside, remove_file
from ..generate import Secret
from ..interpolation import REFERENCE
from ..replacement import SWARM, Strategy
from .docker import DockerEngine
from .protocol import Service, ServiceState, instant

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

__all__ = ["STACK", "SwarmEngine", "stack_files"]

STACK = "com.docker.stack.namespace"
TASK_SERVICE = "com.docker.swarm.service.name"
# Update states in which Swarm gave up on the new spec (https://docs.docker.com/engine/api/v1.41/#tag/Service).
GAVE_UP = {
    "paused": "update paused by Swarm",
    "rollback_started": "update rolled back by Swarm",
    "rollback_paused": "update rollback paused by Swarm",
    "rollback_completed": "update rolled back by Swarm",
}
_VERSIONED = re.compile(r"^(?P<base>.*?)(?:_v(?P<n>\d+))?$")


def stack_files(root: Path, config: Config) -> tuple[str, ...]:
    """swarm.files, else compose.files, else the first of compose's default names that exists."""
    spec = config.swarm
    assert spec is not None
    listed = spec.files or config.compose.files or tuple(n for n in DEFAULT_FILES if (root / n).is_file())[:1]
    if not listed:
        raise ConfigError(
            f"{config.path}: swarm.files: no stack file given and none of {', '.join(DEFAULT_FILES)} in {root}"
        )
    for name in listed:
        if not inside(root, name, "swarm.files").is_file():
            raise ConfigError(
                f"{config.path}: swarm.files: {name} does not exist in {root}", config.path, "swarm.files"
            )
    return tuple(listed)


def _secret_keys(body: Mapping[str, Any]) -> set[str]:
    """The stack-file secrets a service mounts (short syntax or `{source: KEY}`)."""
    found = set()
    for item in body.get("secrets") or []:
        found.add(str(item.get("source")) if isinstance(item, dict) else str(item))
    return found


class SwarmEngine(DockerEngine):
    """One Swarm stack on the manager at `DOCKER_HOST`."""

    def __init__(self, root: Path, config: Config, client: DockerClient | None = None) -> None:
        super().__init__(client)
        assert config.swarm is not None
        self.root = root
        self.config = config
        self.spec: SwarmSpec = config.swarm
        self.project = self.spec.stack
        self.files = stack_files(root, config)
        self._model: dict[str, Any] | None = None
        self._managed = False
        self._updating: dict[str, str | None] = {}  # services a deploy changed: when their last update had begun

    @classmethod
    def for_stack(cls, root: Path, config: Config) -> SwarmEngine:
        """The engine of the Swarm stack the configuration's `swarm:` describes."""
        return cls(root, config)

    # The stack files -------------------------------------------------------------------------

    def model(self) -> dict[str, Any]:
        """The stack files merged as docker does for services and secrets (later files win per key)."""
        if self._model is None:
            merged: dict[str, Any] = {"services": {}, "secrets": {}}
            for name in self.files:
                try:
                    raw = yaml.safe_load((self.root / name).read_text(encoding="utf-8")) or {}
                except (OSError, UnicodeError, yaml.YAMLError) as exc:
                    raise ConfigError(f"{self.root / name}: not a readable stack file ({exc})") from None
                if not isinstance(raw, dict) or not isinstance(raw.get("services") or {}, dict):
                    raise ConfigError(f"{self.root / name}: expected a mapping with 'services'")
                for service, body in (raw.get("services") or {}).items():
                    merged["services"].setdefault(str(service), {}).update(body or {})
                merged["secrets"].update(raw.get("secrets") or {})
            self._model = merged
        return self._model

    def services(self) -> Mapping[str, Service]:
        """The services of the stack files, with the `depends_on` Swarm ignores but the order keeps."""
        found = {}
        for name, body in self.model()["services"].items():
            deps = body.get("depends_on") or {}
            found[name] = Service(name, None, frozenset(str(d) for d in deps))
        return found

    def resolve(self, names: Sequence[str], source: str = "restart_services") -> list[str]:
        """The names as given, each a service of the stack files; an unknown one is an error naming `source`."""
        services = self.services()
        unknown = [n for n in names if n not in services]
        if unknown:
            raise SelectionError(
                f"{source}: {', '.join(unknown)}{did_you_mean(unknown[0], services)} "
                f"{'is' if len(unknown) == 1 else 'are'} not a service of stack '{self.project}' "
                f"(services in {', '.join(self.files)}: {', '.join(sorted(services))})"
            )
        return sorted(set(names))

    def secret_variable(self, key: str, secret: str) -> str:
        """The `${VAR}` that names stack secret `key`'s current version, so that a rotation can point
        it at a new one; checked against the stack files, with the services that mount it."""
        declared = self.model()["secrets"].get(key)
        where = f"secrets.{secret}.swarm_secret"
        if not isinstance(declared, dict):
            raise ConfigError(f"{self.config.path}: {where}: '{key}' is not a secret in {', '.join(self.files)}")
        match = REFERENCE.fullmatch(str(declared.get("name") or ""))
        if not declared.get("external") or match is None:
            raise ConfigError(
                f"{self.config.path}: {where}: the stack file's secret '{key}' must be `external: true` with "
                "`name: ${VAR}`, so that each rotation can point it at a new version (Swarm secrets are immutable)"
            )
        if not self.secret_users(key):
            raise ConfigError(f"{self.config.path}: {where}: no service of stack '{self.project}' uses secret '{key}'")
        return match[1]

    def secret_users(self, key: str) -> list[str]:
        """The services that mount stack secret `key`."""
        return sorted(n for n, body in self.model()["services"].items() if key in _secret_keys(body))

    def _env(self) -> dict[str, str]:
        """The values a plain `docker stack deploy` gets from `set -a; . ./.env`: the stack's env files
        (the first listed file wins), over the process environment."""
        names = dict.fromkeys([n for spec in self.config.secrets.values() for n in spec.files] + [".env"])
        values: dict[str, str] = {}
        for name in reversed(list(names)):
            path = self.root / name
            if path.is_file():
                parsed = envfile.read(path)
                values.update({k: v for k in parsed.names() if (v := parsed.get(k)) is not None})
        return {**os.environ, **values}

    # The swarm ---------------------------------------------------------------------------------

    def _manager(self) -> None:
        if self._managed:
            return
        swarm = self.client.info().get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            where = os.environ.get("DOCKER_HOST", "the default socket")
            raise EngineError(
                f"engine: swarm: the engine at {where} is not a swarm manager (node state "
                f"{swarm.get('LocalNodeState') or 'unknown'}); run on a manager node, or `docker swarm init`"
            )
        self._managed = True

    def _deployed(self) -> dict[str, dict[str, Any]]:
        """The stack's services on the swarm, by their name in the stack files."""
        self._manager()
        found = self.client.api.services(filters={"label": f"{STACK}={self.project}"}, status=True)  # type: ignore[no-untyped-call]
        if not found:
            raise EngineError(
                f"swarm.stack: there is no stack '{self.project}' on this swarm; deploy it first: "
                f"docker stack deploy {' '.join(f'-c {shlex.quote(f)}' for f in self.files)} {self.project}"
            )
        prefix = f"{self.project}_"
        return {str(s["Spec"]["Name"]).removeprefix(prefix): s for s in found}

    def _state(self, name: str, service: Mapping[str, Any] | None) -> ServiceState:
        """A service's tasks as one state: running when every desired task runs (Swarm runs a task only
        once its healthcheck passes), its update status, and the last task error."""
        if service is None:
            return ServiceState(name, "missing")
        status = service.get("ServiceStatus") or {}
        running, desired = int(status.get("RunningTasks") or 0), int(status.get("DesiredTasks") or 0)
        update = (service.get("UpdateStatus") or {}).get("State")
        tasks = self.client.api.tasks(filters={"service": service["ID"]})  # type: ignore[no-untyped-call]
        live = [t for t in tasks if t.get("DesiredState") == "running" and t["Status"].get("State") == "running"]
        failed = sorted(
            (t for t in tasks if t["Status"].get("Err")), key=lambda t: instant(t["Status"].get("Timestamp")) or 0
        )
        health, passed = self._task_health(live)
        state = "running" if running >= desired else ("degraded" if running else "down")
        return ServiceState(
            service=name,
            state=state,
            health=health,
            restarts=sum(1 for t in tasks if t["Status"].get("State") in ("failed", "rejected")),
            started_at=max((t["Status"].get("Timestamp") for t in live), key=lambda s: instant(s) or 0, default=None),
            container_id=",".join(sorted(t["ID"] for t in live)) or None,
            health_output=failed[-1]["Status"]["Err"] if failed else None,
            passed_at=passed,
            tasks=f"{running}/{desired}",
            update=update,
        )

    def _task_health(self, live: Sequence[Mapping[str, Any]]) -> tuple[str | None, str | None]:
        """`healthy` and the oldest of the latest passing checks, from the task containers on this
        node that have a healthcheck; (None, None) where none has one (or none runs here)."""
        import docker

        latest: list[str] = []
        for task in live:
            container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
            if not container:
                continue
            try:
                health = (self.client.api.inspect_container(container).get("State") or {}).get("Health") or {}
            except docker.errors.NotFound:
                continue  # on another node, or gone between the list and the inspect
            if health.get("Status"):
                passed = [e["Start"] for e in health.get("Log") or [] if e.get("ExitCode") == 0 and e.get("Start")]
                latest.append(max(passed, key=lambda s: instant(s) or 0, default=""))
        if not latest:
            return None, None
        return "healthy", min(latest, key=lambda s: instant(s) or 0) or None

    def states(self) -> Mapping[str, ServiceState]:
        deployed = self._deployed()
        names = set(self.services()) | set(deployed)
        return {name: self._state(name, deployed.get(name)) for name in sorted(names)}

    def state(self, service: str) -> ServiceState:
        return self._state(service, self._deployed().get(service))

    def _containers(self, service: str | None = None) -> dict[str, Container]:
        """The newest running task container of each service on this node (for exec and logs)."""
        labels = [f"{STACK}={self.project}"]
        if service:
            labels.append(f"{TASK_SERVICE}={self.project}_{service}")
        found: dict[str, Container] = {}
        for container in self.client.containers.list(filters={"label": labels, "status": "running"}):
            name = str(container.labels.get(TASK_SERVICE, "")).removeprefix(f"{self.project}_")
            if name not in found or container.attrs.get("Created", "") > found[name].attrs.get("Created", ""):
                found[name] = container
        return found

    # Updates -----------------------------------------------------------------------------------

    def recreate(self, services: Sequence[str]) -> None:
        """`docker stack deploy` of the stack files cut down to `services`: Swarm rolls each one whose
        spec changed (new environment values, a new secret version) as its `update_config` says."""
        before = self._deployed()
        for name in services:
            if name not in before:
                raise EngineError(
                    f"service {name} is in {', '.join(self.files)} but not deployed in stack '{self.project}'"
                )
        self.deploy(services)
        after = self._deployed()  # the deploy has set the new specs by the time it returns
        for name in services:
            if after[name]["Spec"] != before[name]["Spec"]:
                self._updating[name] = (before[name].get("UpdateStatus") or {}).get("StartedAt")

    def strategy(self, service: str) -> Strategy:
        """Swarm itself replaces each task as the service's `deploy.update_config` says."""
        return SWARM

    def replace(self, service: str, timeout: float) -> ServiceState:
        """Swarm's own update is the replacement, start-first where the service declares it."""
        previous = self.state(service).container_id
        self.recreate([service])
        return self.wait_healthy(service, previous, timeout)

    def deploy(self, services: Sequence[str] | None = None) -> None:
        """Deploy the stack (or only `services`) with the env files' values in the docker process's
        environment. Cut-down copies of the files sit beside the originals while docker reads them,
        so relative paths in them mean what they mean in the originals."""
        copies = []
        try:
            for name in self.files:
                source = inside(self.root, name, "swarm.files")
                raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
                if services is not None:
                    raw["services"] = {n: b for n, b in (raw.get("services") or {}).items() if n in services}
                copy = source.with_name(f".{source.name}.rotation-{uuid.uuid4().hex[:8]}.yml")
                fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                copies.append(copy)
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    yaml.safe_dump(raw, handle, sort_keys=False)
            argv = ["docker", "stack", "deploy", *(a for c in copies for a in ("-c", str(c))), self.project]
            done = subprocess.run(
                argv,
                cwd=self.root,
                env=self._env(),
                capture_output=True,
                text=True,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise EngineError(f"docker stack deploy: {exc.strerror or exc}") from None
        finally:
            for copy in copies:
                remove_file(copy)
        if done.returncode != 0:
            lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            reason = next((line for line in lines if re.search(r"error|failed|invalid|not found", line, re.I)), "")
            raise EngineError(
                f"`docker stack deploy {self.project}` failed: {reason or f'exit code {done.returncode}'}"
            )

    def recreate_command(self, services: Sequence[str]) -> str:
        files = " ".join(f"-c {shlex.quote(f)}" for f in self.files)
        return f"(set -a; . ./.env; set +a; docker stack deploy {files} {self.project})"

    def wait_healthy(self, service: str, previous: str | None, timeout: float) -> ServiceState:
        """Wait until every desired task runs the service's current container spec, healthy, with no
        update in progress; or until Swarm gave up on the update the deploy started (paused, rolled
        back: a failure, whatever the tasks look like afterwards); or until time is up."""
        gave_up: list[str] = []

        def settled(state: ServiceState) -> bool:
            current = self._deployed().get(service)
            if current is None:
                return False
            update = current.get("UpdateStatus") or {}
            fresh = service in self._updating and update.get("StartedAt") != self._updating[service]
            if fresh and update.get("State") in GAVE_UP:
                gave_up.append(GAVE_UP[update["State"]])
                return True
            if update.get("State") in ("updating", "rollback_started"):
                return False
            return state.healthy and self._converged(current)

        state = self._wait(service, settled, timeout)
        return replace(state, state=gave_up[-1], health="unhealthy") if gave_up else state

    def _converged(self, service: Mapping[str, Any]) -> bool:
        """Whether every desired task runs, each on the service's current container spec (environment,
        secrets, image): a deploy that changed nothing a task runs needs no update to be done."""
        spec = service["Spec"]["TaskTemplate"].get("ContainerSpec")
        desired = int((service.get("ServiceStatus") or {}).get("DesiredTasks") or 0)
        tasks = self.client.api.tasks(filters={"service": service["ID"], "desired-state": "running"})  # type: ignore[no-untyped-call]
        live = [t for t in tasks if t["Status"].get("State") == "running"]
        return len(live) >= desired and all((t.get("Spec") or {}).get("ContainerSpec") == spec for t in live)

    def wait_rechecked(self, service: str, since: int, timeout: float) -> ServiceState:
        def settled(state: ServiceState) -> bool:
            return state.state == "missing" or state.healthy_since(since)

        return self._wait(service, settled, timeout)

    def _wait(self, service: str, settled: Any, timeout: float) -> ServiceState:
        deadline = time.time() + max(timeout, 0)

        def read() -> tuple[ServiceState, bool]:
            state = self.state(service)
            return state, settled(state)

        result: tuple[ServiceState, bool] = Retrying(
            stop=stop_after_delay(max(deadline - time.time(), 0)),
            wait=wait_exponential(multiplier=0.1, min=0.1, max=0.5),
            retry=retry_if_result(lambda r: not r[1]),
            retry_error_callback=lambda rs: rs.outcome.result() if rs.outcome else (self.state(service), False),
        )(read)
        return result[0]

    def logs(self, service: str, lines: int) -> str:
        deployed = self._deployed().get(service)
        if deployed is None:
            return ""
        chunks = self.client.api.service_logs(deployed["ID"], stdout=True, stderr=True, tail=str(lines))
        return b"".join(chunks).decode("utf-8", "replace")

    # Swarm secrets -----------------------------------------------------------------------------

    def secret_names(self) -> set[str]:
        """Every Swarm secret's name."""
        self._manager()
        return {str(s["Spec"]["Name"]) for s in self.client.api.secrets()}

    def create_secret(self, name: str, value: Secret, key: str) -> None:
        """A new Swarm secret `name` holding `value`, sent in the API request's body, labelled with the
        stack secret it versions."""
        import docker

        self._manager()
        try:
            self.client.api.create_secret(name, value.reveal().encode(), labels={"rotation.secret": key})
        except docker.errors.APIError as exc:
            raise EngineError(
                f"Swarm secret {name}: the engine refused to create it: {exc.explanation or exc}"
            ) from None

    def remove_secret(self, name: str) -> str | None:
        """Remove Swarm secret `name`; why it was kept (in use, say), or None when it is gone."""
        import docker

        try:
            self.client.api.remove_secret(name)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            return str(exc.explanation or exc)
        return None

    def next_version(self, current: str) -> str:
        """The name of the version after `current` (`db_pw_v3` after `db_pw_v2` or `db_pw`) that no
        Swarm secret has yet."""
        match = _VERSIONED.match(current)
        assert match is not None
        base, number = match["base"] or current, int(match["n"] or 1)
        taken = self.secret_names()
        while True:
            number += 1
            candidate = f"{base}_v{number}"
            if candidate not in taken and len(candidate) <= 64:
                return candidate
            if len(candidate) > 64:
                raise EngineError(f"Swarm secret {current}: no room for a version number in a 64-character name")

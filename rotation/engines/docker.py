"""The Docker API half of every Docker-based engine: containers found by label, their state,
event-driven health waits, exec and logs.

Containers are found by their compose labels, never by name, so compose v1 and v2 naming and
Podman's Docker-compatible API all work. The docker SDK is imported only when the engine is
first used, so commands that never talk to it start fast. A subclass says what the stack's
services are and how to recreate them (`compose.ComposeEngine`; a Swarm engine would be another).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Any

from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay, wait_exponential

from ..errors import EngineError, EngineUnreachable, SelectionError, did_you_mean
from .protocol import CLIENT_GRACE, ExecResult, Service, ServiceState, instant

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

__all__ = ["NEXT", "ONEOFF", "PROJECT", "SERVICE", "DockerEngine", "is_replacement", "state_of"]

log = logging.getLogger(__name__)
PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
ONEOFF = "com.docker.compose.oneoff"
NEXT = "-rotation-next"  # a start-first replacement's name until it takes its predecessor's


def is_replacement(name: str | None) -> bool:
    """Whether a container name is a start-first replacement's temporary one: it does not speak for its service."""
    return (name or "").lstrip("/").endswith(NEXT)


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


def state_of(service: str, container: Container | None) -> ServiceState:
    """What an inspected container says about `service`."""
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
        checked_at=max(
            (str(e["Start"]) for e in log_entries if e.get("Start")),
            key=lambda stamp: instant(stamp) or 0,
            default=None,
        ),
        created_at=attrs.get("Created"),
        first_passed_at=min(
            (str(e["End"]) for e in log_entries if e.get("ExitCode") == 0 and e.get("End")),
            key=lambda stamp: instant(stamp) or 0,
            default=None,
        ),
    )


class _Progress:
    """Logs a service's state while waiting for it, with the seconds left: each change at INFO, and a
    countdown line at INFO every COUNTDOWN seconds while nothing changes (repeats between at DEBUG)."""

    COUNTDOWN = 10.0

    def __init__(self, service: str, deadline: float) -> None:
        self.service = service
        self.deadline = deadline
        self.last: str | None = None
        self.said = 0.0

    def __call__(self, state: ServiceState) -> None:
        now = time.time()
        loud = state.summary != self.last or now - self.said >= self.COUNTDOWN
        left = max(self.deadline - now, 0)
        log.log(
            logging.INFO if loud else logging.DEBUG, "waiting for %s: %s, %.0fs left", self.service, state.summary, left
        )
        self.last = state.summary
        self.said = now if loud else self.said


class DockerEngine:
    """One project's containers on the engine at `DOCKER_HOST` (docker.from_env)."""

    project: str

    def __init__(self, client: DockerClient | None = None) -> None:
        self._client = client

    def services(self) -> Mapping[str, Service]:
        """Every service the stack defines; each Docker-based engine says how it knows."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Nothing to start ahead by default."""

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

    def every_container(self, service: str | None = None) -> list[Container]:
        """Every container of the project's services (or of `service` alone), found by compose labels
        and inspected, oldest first; one-off containers (`compose run`) left out."""
        import docker

        labels = [f"{PROJECT}={self.project}", *([f"{SERVICE}={service}"] if service else [])]
        found: list[Container] = []
        for container in self.client.containers.list(all=True, sparse=True, filters={"label": labels}):
            try:
                container.reload()
            except docker.errors.NotFound:
                continue  # removed between the list and the inspect, as a recreate does
            tags = container.labels
            if tags.get(ONEOFF, "False") != "True" and SERVICE in tags:
                found.append(container)
        return sorted(found, key=lambda c: str(c.attrs.get("Created", "")))

    def _containers(self, service: str | None = None) -> dict[str, Container]:
        """The container that speaks for every service (or for `service` alone): the newest, unless
        it is a start-first replacement that has not taken its predecessor's place yet."""
        found: dict[str, Container] = {}
        for container in self.every_container(service):
            if not is_replacement(container.name):
                found[container.labels[SERVICE]] = container
        return found

    def states(self) -> Mapping[str, ServiceState]:
        """Every defined service's state, plus running services of the project the files do not define."""
        containers = self._containers()
        names = set(self.services()) | set(containers)
        return {name: state_of(name, containers.get(name)) for name in sorted(names)}

    def state(self, service: str) -> ServiceState:
        """One service's state, read from its containers alone."""
        return state_of(service, self._containers(service).get(service))

    def start(self, service: str) -> None:
        """Start the newest container of `service` through the engine API, as `compose start` does."""
        import docker

        container = self._containers(service).get(service)
        if container is None:
            raise EngineError(f"service {service} of project '{self.project}' has no container to start")
        try:
            container.start()
        except docker.errors.APIError as exc:
            raise EngineError(f"service {service}: the engine could not start it: {exc.explanation or exc}") from None

    def wait_healthy(self, service: str, previous: str | None, timeout: float) -> ServiceState:
        """Wait until a new container is healthy, has stopped or turned unhealthy (on a name that does
        not resolve yet, it waits on), or time is up; its state.

        It follows the engine's event stream (start, health_status, die) and reads the state only
        when the service's container reports something, so it sees health the moment the engine
        does; where the stream is unavailable, or the engine ends it early, it polls with a short
        capped backoff.
        """
        import docker

        deadline = time.time() + max(timeout, 0)
        progress = _Progress(service, deadline)

        def settled(state: ServiceState) -> bool:
            fresh = state.container_id is not None and state.container_id != previous
            return fresh and (state.healthy or (state.failing and not state.unresolved))

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
        """Poll until a healthcheck begun after `since` has passed, the container stopped or turned
        unhealthy on a check begun after `since` (a name that does not resolve yet is no verdict:
        that waits for the timeout), or time is up.

        It polls rather than follows events: the engine reports a health event only when the
        status changes, and a service that stayed `healthy` on stale checks reports none.
        """

        def settled(state: ServiceState) -> bool:
            failed = state.failing_since(since + CLIENT_GRACE) and not state.unresolved
            return failed or state.state == "missing" or state.healthy_since(since)

        deadline = time.time() + max(timeout, 0)
        return self._poll(service, settled, deadline, _Progress(service, deadline))

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

    def signal(self, service: str, name: str) -> None:
        """Send SIG`name` to the service's running container (its main process, as `docker kill -s`)."""
        import docker

        container = self._containers(service).get(service)
        if container is None or container.status != "running":
            raise EngineError(f"service {service} of project '{self.project}' is not running; cannot send it SIG{name}")
        try:
            container.kill(signal=f"SIG{name}")
        except docker.errors.DockerException as exc:
            raise EngineError(f"SIG{name} to {service}: {str(exc)[:200]}") from None

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

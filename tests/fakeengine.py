"""An in-memory `Engine`: scripted services, health timings and failures, for fast orchestration tests.

It speaks the same protocol as the real engines (services, states, recreate, health waits with a
deadline, rechecks in the engine's clock), so `rollout` and `rollback` run against it unchanged.
Time is real but short: a service turns healthy `ready` seconds after its container starts.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rotation.engines import CLIENT_GRACE, ExecResult, Service, ServiceState, instant
from rotation.errors import EngineError, SelectionError
from rotation.replacement import Footprint, Strategy, strategy


def _stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Script:
    """How one service behaves when its container is (re)created."""

    ready: float = 0.01  # seconds from start to healthy
    fails: bool = False  # never turns healthy: exits with code 1
    healthcheck: bool = True
    recheck_fails: bool = False  # as a dependent, its next healthcheck fails
    depends_on: tuple[str, ...] = ()
    container_name: str | None = None
    footprint: Footprint = field(default_factory=Footprint)  # start-first where it declares so


@dataclass
class _Container:
    id: str
    created: float
    started: float
    script: Script


@dataclass
class FakeEngine:
    """One project of scripted services. `log` records every call, in order, for assertions."""

    scripts: dict[str, Script]
    project: str = "fake"
    recreate_fails: set[str] = field(default_factory=set)
    log: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    serving: list[tuple[str, str]] = field(default_factory=list)  # (service, container) after each replace
    grace: int = CLIENT_GRACE  # nanoseconds a client's unhealthy verdict waits, as the real engines wait
    _containers: dict[str, _Container] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for name in self.scripts:
            self._new(name, time.time() - 60)

    def _new(self, name: str, now: float) -> None:
        self._containers[name] = _Container(f"{name}-{next(self._ids)}", now, now, self.scripts[name])

    def services(self) -> Mapping[str, Service]:
        return {n: Service(n, s.container_name, frozenset(s.depends_on), s.footprint) for n, s in self.scripts.items()}

    def strategy(self, service: str) -> Strategy:
        return strategy(self.scripts[service].footprint, (), Path("."))

    def replace(self, service: str, timeout: float) -> ServiceState:
        """The old container serves (it stays the service's) while the new one comes up; it takes
        over only once healthy, and a failed one is dropped. `serving` records who served when."""
        self.log.append(("replace", (service,)))
        if service in self.recreate_fails:
            raise EngineError(f"{service}: the engine could not create its replacement")
        script, now = self.scripts[service], time.time()
        new = _Container(f"{service}-{next(self._ids)}", now, now, script)
        time.sleep(min(script.ready, max(timeout, 0)))
        if script.fails or script.ready > timeout:
            self.serving.append((service, self._containers[service].id))
            state = "exited" if script.fails else "running"
            return ServiceState(service, state, "unhealthy" if script.fails else "starting", container_id=new.id,
                                exit_code=1 if script.fails else None, created_at=_stamp(new.created))  # fmt: skip
        with self._lock:
            self._containers[service] = new
        self.serving.append((service, new.id))
        return dataclasses.replace(self.state(service), serving_since=_stamp(time.time()))

    def resolve(self, names: Sequence[str], source: str = "restart_services") -> list[str]:
        by_container = {s.container_name: n for n, s in self.scripts.items() if s.container_name}
        unknown = [n for n in names if n not in self.scripts and n not in by_container]
        if unknown:
            raise SelectionError(f"{source}: {', '.join(unknown)} is not a service of project '{self.project}'")
        return sorted({by_container.get(n, n) for n in names})

    def state(self, service: str) -> ServiceState:
        with self._lock:
            container = self._containers.get(service)
            now = time.time()
        if container is None:
            return ServiceState(service, "missing")
        script, age = container.script, now - container.started
        if script.fails and age >= script.ready:
            return ServiceState(service, "exited", "unhealthy" if script.healthcheck else None,
                                container_id=container.id, started_at=_stamp(container.started), exit_code=1,
                                created_at=_stamp(container.created))  # fmt: skip
        if not script.healthcheck:
            return ServiceState(service, "running", None, container_id=container.id,
                                started_at=_stamp(container.started), created_at=_stamp(container.created))  # fmt: skip
        healthy = age >= script.ready and not script.recheck_fails
        passed = container.started + script.ready
        return ServiceState(
            service,
            "running",
            "healthy" if healthy else ("unhealthy" if script.recheck_fails else "starting"),
            container_id=container.id,
            started_at=_stamp(container.started),
            passed_at=_stamp(now) if healthy else None,
            checked_at=_stamp(now),  # a check every poll, as if its interval were nil
            created_at=_stamp(container.created),
            first_passed_at=_stamp(passed) if healthy else None,
            health_output="check failed" if not healthy else None,
        )

    def states(self) -> Mapping[str, ServiceState]:
        return {name: self.state(name) for name in self.scripts}

    def recreate(self, services: Sequence[str]) -> None:
        self.log.append(("recreate", tuple(services)))
        failing = set(services) & self.recreate_fails
        if failing:
            raise EngineError(f"`compose up` failed: {', '.join(sorted(failing))} could not be created")
        now = time.time()
        with self._lock:
            for name in services:
                self._new(name, now)

    def prepare(self) -> None:
        pass

    def recreate_command(self, services: Sequence[str]) -> str:
        return f"fake-compose -p {self.project} up -d --force-recreate {' '.join(services)}"

    def _wait(self, service: str, done: object, timeout: float) -> ServiceState:
        deadline = time.monotonic() + max(timeout, 0)
        while True:
            state = self.state(service)
            if done(state) or time.monotonic() >= deadline:  # type: ignore[operator]
                return state
            time.sleep(0.002)

    def wait_healthy(self, service: str, previous: str | None, timeout: float) -> ServiceState:
        self.log.append(("wait", (service,)))
        return self._wait(
            service, lambda s: s.container_id != previous and (s.healthy or (s.failing and not s.unresolved)), timeout
        )

    def wait_rechecked(self, service: str, since: int, timeout: float) -> ServiceState:
        self.log.append(("recheck", (service,)))
        settled = lambda s: (s.failing_since(since + self.grace) and not s.unresolved) or s.healthy_since(since)  # noqa: E731
        return self._wait(service, settled, timeout)

    def logs(self, service: str, lines: int) -> str:
        return f"{service}: a log line\n"

    def execute(self, service: str, argv: Sequence[str], stdin: bytes, env: Mapping[str, str]) -> ExecResult:
        return ExecResult(0, "")

    def signal(self, service: str, name: str) -> None:
        self.log.append(("signal", (service, name)))

    def container(self, service: str) -> str:
        """The id of the service's current container."""
        return self._containers[service].id

    def started_after(self, first: str, second: str) -> bool:
        """Whether `second`'s current container started after `first`'s turned healthy."""
        a, b = self._containers[first], self._containers[second]
        return b.started >= a.started + a.script.ready


__all__ = ["FakeEngine", "Script", "instant"]

"""The small interface through which everything talks to a container engine, and its data.

`compose.ComposeEngine` implements it for Docker Compose (Docker Engine or Podman's
Docker-compatible API), `swarm.SwarmEngine` for a Docker Swarm stack. A Kubernetes backend would
be another module with the same shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from ..replacement import Footprint, Strategy

__all__ = ["CLIENT_GRACE", "Engine", "ExecResult", "Service", "ServiceState", "instant"]

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def instant(stamp: str | None) -> int | None:
    """Nanoseconds since the epoch for an engine's RFC 3339 timestamp; None if there is none.

    The engines write up to nine fractional digits and trim trailing zeros, which neither
    `datetime` nor a float holds exactly.
    """
    match = _RFC3339.fullmatch(stamp or "")
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    seconds = int(datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp())
    return seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0")[:9])


@dataclass(frozen=True, slots=True)
class Service:
    """A service as the stack defines it: its name, container name, what it depends on, and what
    decides whether it may run twice for a moment (`replacement.footprint`)."""

    name: str
    container_name: str | None = None
    depends_on: frozenset[str] = field(default_factory=frozenset)
    footprint: Footprint = field(default_factory=Footprint)


# A client's unhealthy verdict counts only from checks begun this long after the services it calls
# could serve: names of replaced containers resolve late on some engines (Podman's aardvark-dns takes
# seconds), and a client with `retries: 1` is unhealthy after one lookup that came too early.
CLIENT_GRACE = 10 * 1_000_000_000  # nanoseconds, as `instant` counts

# What a healthcheck prints when a name did not resolve (busybox wget, curl, getaddrinfo, Go, Node,
# libpq). Right after a recreate that is the engine's DNS catching up, which under load takes Podman
# longer than CLIENT_GRACE; a client that a wrong secret broke says so otherwise (401, auth failed).
_UNRESOLVED = re.compile(
    r"bad address|could not resolve host|name or service not known|temporary failure in name resolution"
    r"|no such host|could not translate host name|no address associated with hostname|ENOTFOUND|EAI_AGAIN",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What the engine reports about one service's container, read once per poll."""

    service: str
    state: str
    health: str | None = None
    restarts: int = 0
    started_at: str | None = None
    container_id: str | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    health_output: str | None = None
    passed_at: str | None = None  # when the latest passing healthcheck began, in the engine's clock
    checked_at: str | None = None  # when the latest healthcheck, passing or not, began
    created_at: str | None = None  # when this container was created: its predecessor had just stopped
    first_passed_at: str | None = None  # when the earliest passing healthcheck on record ended
    tasks: str | None = None  # Swarm: running/desired tasks, such as 2/2
    update: str | None = None  # Swarm: the service's update state (updating, completed, rollback_completed...)
    serving_since: str | None = None  # start-first: when this container became the only one serving

    @property
    def ready_at(self) -> int:
        """When this container could first serve, in the engine's clock: its first passing check (or
        its start, without a healthcheck), or for a start-first replacement the moment its
        predecessor left. A client's check begun later sees it serving."""
        moments = (self.started_at, self.first_passed_at, self.serving_since)
        return max(instant(moment) or 0 for moment in moments)

    @property
    def downtime(self) -> float | None:
        """Seconds from this container's creation (its predecessor stopped just before) to its first
        passing healthcheck, or to its start without one, in the engine's clock; none for a start-first
        replacement; None if unknown."""
        if self.serving_since is not None and self.healthy:
            return 0.0  # replaced start-first: its predecessor served until it took over
        created = instant(self.created_at)
        ready = instant(self.first_passed_at if self.health is not None else self.started_at)
        if created is None or ready is None or not self.healthy:
            return None
        return max(ready - created, 0) / 1e9

    @property
    def healthy(self) -> bool:
        """Running, and either reporting healthy or having no healthcheck at all."""
        return self.state == "running" and self.health in (None, "healthy")

    @property
    def stopped(self) -> bool:
        """Exited or dead: it will not turn healthy by waiting."""
        return self.state in ("exited", "dead")

    @property
    def failing(self) -> bool:
        """Stopped, or reporting `unhealthy`: the engine has counted its failed checks and given up, so
        waiting longer only delays the verdict (and the rollback)."""
        return self.stopped or self.health == "unhealthy"

    def failing_since(self, moment: int) -> bool:
        """Stopped, or `unhealthy` on a healthcheck begun after `moment`: a verdict on the world since
        then, not one left over from before (a client that failed while its dependency was away).
        Callers judging a client add CLIENT_GRACE to `moment`."""
        return self.stopped or (self.health == "unhealthy" and (instant(self.checked_at) or 0) > moment)

    @property
    def unresolved(self) -> bool:
        """Running but unhealthy only because a name it calls did not resolve: no verdict on the
        client yet, while the engine's DNS learns a replaced container's address."""
        return not self.stopped and self.health == "unhealthy" and bool(_UNRESOLVED.search(self.health_output or ""))

    def healthy_since(self, moment: int) -> bool:
        """Healthy, and passed a healthcheck begun after `moment` (an `instant`) if it has one."""
        return self.healthy and (self.health is None or (instant(self.passed_at) or 0) > moment)

    @property
    def summary(self) -> str:
        """`running (healthy)`, `exited (code 1)`, `missing`..."""
        if self.state == "exited" and self.exit_code is not None:
            return f"exited (code {self.exit_code})"
        return f"{self.state} ({self.health})" if self.health else self.state


@dataclass(frozen=True, slots=True)
class ExecResult:
    """The outcome of a command run inside a service's container."""

    code: int
    output: str


class Engine(Protocol):
    """The operations rotation needs from a container engine."""

    project: str

    def services(self) -> Mapping[str, Service]:
        """Every service the stack defines, by name."""
        ...

    def resolve(self, names: Sequence[str], source: str = "restart_services") -> list[str]:
        """Service names for names given as service or container names; an unknown one is an error naming `source`."""
        ...

    def state(self, service: str) -> ServiceState:
        """The state of one service."""
        ...

    def states(self) -> Mapping[str, ServiceState]:
        """The state of every service; a defined service without a container is `missing`."""
        ...

    def recreate(self, services: Sequence[str]) -> None:
        """Replace the running containers of `services` with new, started ones that read the env files now.

        A restarted container keeps the environment it was created with; only a new one applies
        a changed `.env`. Each old container serves until this call replaces it.
        """
        ...

    def strategy(self, service: str) -> Strategy:
        """How `service` is replaced, and why: start-first beside its old container where it declares
        that and can run twice, else stop-late (`recreate`); `swarm` where the engine's own update
        follows the declaration."""
        ...

    def replace(self, service: str, timeout: float) -> ServiceState:
        """Replace `service` start-first: a new container from its new configuration starts beside the
        old one, unreachable by its name until healthy; then it joins the service's names, the old
        one leaves and is removed, and the new one takes its name. Its last state.

        If the new container is not healthy within `timeout`, or the engine fails part-way, the new
        one is removed and the old one keeps serving: the state returned is not healthy, or the
        error is raised. Either way the old container never stopped serving.
        """
        ...

    def prepare(self) -> None:
        """Another recreate will follow soon: start ahead whatever it needs, so that none of it lands
        on the restart's critical path (a no-op where nothing helps)."""
        ...

    def recreate_command(self, services: Sequence[str]) -> str:
        """The shell command a person runs to recreate `services` by hand, for recovery instructions."""
        ...

    def wait_healthy(self, service: str, previous: str | None, timeout: float) -> ServiceState:
        """Wait until a container other than `previous` runs `service` and is healthy; its last state."""
        ...

    def wait_rechecked(self, service: str, since: int, timeout: float) -> ServiceState:
        """Wait until `service` passes a healthcheck begun after `since` (`instant` in the engine's clock),
        stops, or turns unhealthy on checks begun after `since`.

        For a service that was not recreated but calls one that was: its `healthy` may date from
        before the recreate, so only a later check proves it works with the new container.
        """
        ...

    def logs(self, service: str, lines: int) -> str:
        """The last `lines` lines of the service's log."""
        ...

    def execute(self, service: str, argv: Sequence[str], stdin: bytes, env: Mapping[str, str]) -> ExecResult:
        """Run `argv` in the service's container with `stdin` on its standard input and `env` set."""
        ...

    def signal(self, service: str, name: str) -> None:
        """Send signal `name` (HUP, USR1...) to the service's running container: a reload that keeps it."""
        ...

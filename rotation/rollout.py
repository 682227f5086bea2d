"""Recreate services so they read the new secrets: started in dependency order, each one proven healthy."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from .engines import Engine, ServiceState
from .errors import EngineError
from .order import Outcome, dependents, restart_graph, run_in_order
from .replacement import Strategy

__all__ = ["DEFAULT_PARALLEL", "DEFAULT_TIMEOUT", "Outcome", "Progress", "RestartResult", "present", "restart"]

DEFAULT_TIMEOUT = 180.0  # seconds for a whole restart to be healthy again
DEFAULT_PARALLEL = 4  # services replaced at once

Progress = Callable[[str, str, float], None]  # service, what it did, seconds since the restart began


@dataclass(frozen=True, slots=True)
class RestartResult:
    """Each service's outcome (ok, failed, skipped), its last state, why it failed, and how long
    each recreated service had no healthy container."""

    outcome: Mapping[str, Outcome]
    states: Mapping[str, ServiceState]
    errors: Mapping[str, str]
    order: tuple[str, ...]
    downtime: Mapping[str, float] = field(default_factory=dict)
    strategies: Mapping[str, Strategy] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every service was recreated and is healthy, and so is every healthy one that depends on them."""
        return all(v == "ok" for v in self.outcome.values())

    def failures(self) -> list[str]:
        """One line per service that did not come back, for a person."""
        lines = []
        for name, result in sorted(self.outcome.items()):
            if result == "ok":
                continue
            if result == "skipped":
                lines.append(f"{name}: left running on its old container, because a service it depends on failed")
            else:
                lines.append(f"{name}: {self.errors.get(name) or _described(self.states[name])}")
        return lines


def present(engine: Engine, names: Sequence[str], optional: Collection[str] = ()) -> tuple[list[str], list[str]]:
    """The services of `names` (service or container names) this project has, and the names it lacks.

    A run's services were checked against the stack's compose files when it was planned, and an
    unknown one was a warning then; the files changed since, so a name the engine does not know now
    is skipped (the caller says so), never a failure half-way through a restart.
    """
    services = engine.services()
    by_container = {s.container_name: s.name for s in services.values() if s.container_name}
    absent = [n for n in names if n not in services and n not in by_container]
    return engine.resolve([n for n in names if n not in absent]), [n for n in absent if n not in optional]


def _described(state: ServiceState) -> str:
    output = f"; last healthcheck: {state.health_output}" if state.health_output else ""
    return f"{state.summary}{output}"


def restart(
    engine: Engine,
    services: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    parallel: int = DEFAULT_PARALLEL,
    healthcheck: bool = True,
    healthy_before: Collection[str] | None = None,
    progress: Progress | None = None,
) -> RestartResult:
    """Recreate `services`, each only once every affected service it depends on is healthy again.

    Start first where the engine says a service may run twice (`Engine.strategy`): its new container
    starts beside the old one, which serves until the new one is healthy (`Engine.replace`). Stop
    late everywhere else: a service's old container keeps serving until everything it depends on in this
    restart is healthy; only then does compose's own recreate replace it (a new container, so
    the new environment applies). Services that are ready at the same moment share one compose
    call, up to `parallel` in progress at once, and each dependent follows the moment its last
    dependency is healthy. A service whose dependency fails keeps its old container. When all are
    back, each service that depends on them and was healthy before must pass a healthcheck begun
    after the last of them could serve, within the same deadline: its earlier verdicts say nothing
    about the new containers. A service waited for that turns unhealthy (a recreated one, or such a
    client on a check begun after that moment) ends its wait at once. "Before" is `healthy_before`
    where the caller knows an earlier state (the run's precheck), else now. `progress` hears each
    service's moves (recreated, healthy, failed, left running, rechecking) with the seconds since
    the restart began.
    """
    began = time.monotonic()

    def tell(name: str, status: str) -> None:
        if progress is not None:
            progress(name, status, time.monotonic() - began)

    defined = engine.services()
    graph = restart_graph(defined, services)
    strategies = {name: engine.strategy(name) for name in graph}
    first = {name for name, strategy in strategies.items() if strategy.order == "start-first"}
    waves = any(graph[name] & set(graph) for name in graph)  # more than one recreate call will come
    if waves:
        engine.prepare()
    deadline = time.monotonic() + timeout
    states: dict[str, ServiceState] = {}
    errors: dict[str, str] = {}
    started: list[str] = []
    before = engine.states()
    previous = {name: state.container_id for name, state in before.items() if name in graph}
    if healthy_before is None:
        healthy_before = {name for name, state in before.items() if state.healthy}

    def begin(names: list[str]) -> dict[str, bool]:
        late = [name for name in names if name not in first]
        try:
            if late:
                engine.recreate(late)
        except EngineError as exc:
            for name in late:
                errors[name] = str(exc)
                tell(name, "failed")
            started.extend(name for name in names if name in first)  # replaced on their own, beside the old
            return {name: name in first for name in names}
        started.extend(names)
        if waves and len(started) < len(graph):
            engine.prepare()  # the next wave's recreate gets ready while this one comes up
        for name in names:
            tell(name, "starting beside the old" if name in first else "recreated")
        return dict.fromkeys(names, True)

    def finish(name: str) -> bool:
        if name in first:
            return replace(name)
        if not healthcheck:
            return True
        state = engine.wait_healthy(name, previous.get(name), deadline - time.monotonic())
        states[name] = state
        if not state.healthy and not state.stopped and time.monotonic() >= deadline:
            errors[name] = f"not healthy within {timeout:g}s: {_described(state)}"
        tell(name, "healthy" if state.healthy else "failed")
        return state.healthy

    def replace(name: str) -> bool:
        try:
            state = states[name] = engine.replace(name, deadline - time.monotonic())
        except EngineError as exc:
            errors[name] = f"{exc}; its old container still serves"
            tell(name, "failed")
            return False
        if not state.healthy:
            verdict = _described(state) if state.failing else f"not healthy within {timeout:g}s: {_described(state)}"
            errors[name] = f"{verdict}; the new container was removed and the old one still serves"
        tell(name, "healthy" if state.healthy else "failed")
        return state.healthy

    def recheck(name: str, since: int) -> Outcome:
        tell(name, "rechecking")
        state = states[name] = engine.wait_rechecked(name, since, deadline - time.monotonic())
        if state.healthy_since(since):
            tell(name, "healthy")
            return "ok"
        tell(name, "failed")
        upstream = ", ".join(sorted(restart_graph(defined, [*graph, name])[name]))
        verdict = "turned unhealthy" if state.failing else f"passed no healthcheck within {timeout:g}s"
        errors[name] = (
            f"depends on {upstream}, which was recreated, and {verdict}: {_described(state)}. It was not "
            "recreated itself: it is in no restart_services (if it reads the rotated secret, add it there)"
        )
        return "failed"

    outcome = run_in_order(graph, begin, finish, parallel)
    for name, result in sorted(outcome.items()):
        if result == "skipped":
            tell(name, "left running")
    if healthcheck and graph and all(v == "ok" for v in outcome.values()):
        since = max(states[name].ready_at for name in graph)  # the moment the last of them could serve
        for name in dependents(defined, graph):
            if name in healthy_before:
                outcome[name] = recheck(name, since)
    downtime = {name: seconds for name in started if name in states and (seconds := states[name].downtime) is not None}
    return RestartResult(outcome, states, errors, tuple(started), downtime, strategies)

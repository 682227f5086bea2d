"""Recreate services so they read the new secrets: started in dependency order, each one proven healthy."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .engine import Engine, ServiceState
from .errors import EngineError
from .order import restart_graph, run_in_order

__all__ = ["RestartResult", "restart"]


@dataclass(frozen=True, slots=True)
class RestartResult:
    """Each service's outcome (ok, failed, skipped), its last state, and why it failed."""

    outcome: Mapping[str, str]
    states: Mapping[str, ServiceState]
    errors: Mapping[str, str]
    order: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether every service was recreated and is healthy."""
        return all(v == "ok" for v in self.outcome.values())

    def failures(self) -> list[str]:
        """One line per service that did not come back, for a person."""
        lines = []
        for name, result in sorted(self.outcome.items()):
            if result == "ok":
                continue
            if result == "skipped":
                lines.append(f"{name}: left stopped, because a service it depends on failed")
            elif name in self.errors:
                lines.append(f"{name}: {self.errors[name]}")
            else:
                state = self.states[name]
                output = f"; last healthcheck: {state.health_output}" if state.health_output else ""
                lines.append(f"{name}: {state.summary}{output}")
        return lines


def restart(
    engine: Engine,
    services: Sequence[str],
    *,
    timeout: float = 180.0,
    parallel: int = 4,
    healthcheck: bool = True,
) -> RestartResult:
    """Recreate `services` and start each once every affected service it depends on is healthy again.

    The new containers are all created in one compose invocation, which costs about as much as
    creating one, then each is started the moment its dependencies are healthy: the services go
    down together and come back as fast as the dependency graph allows. A service whose
    dependency fails stays stopped rather than starting against it.
    """
    graph = restart_graph(engine.services(), services)
    deadline = time.monotonic() + timeout
    states: dict[str, ServiceState] = {}
    errors: dict[str, str] = {}
    started: list[str] = []
    previous = {name: state.container_id for name, state in engine.states().items() if name in graph}
    try:
        engine.create(sorted(graph))
    except EngineError as exc:
        return RestartResult(dict.fromkeys(graph, "failed"), {}, dict.fromkeys(graph, str(exc)), ())

    def begin(names: list[str]) -> dict[str, bool]:
        begun = {}
        for name in names:
            try:
                engine.start(name)
                started.append(name)
                begun[name] = True
            except EngineError as exc:
                errors[name] = str(exc)
                begun[name] = False
        return begun

    def finish(name: str) -> bool:
        if not healthcheck:
            return True
        state = engine.wait_healthy(name, previous.get(name), deadline - time.monotonic())
        states[name] = state
        if not state.healthy and state.state not in ("exited", "dead") and time.monotonic() >= deadline:
            errors[name] = f"not healthy within {timeout:g}s: {state.summary}" + (
                f"; last healthcheck: {state.health_output}" if state.health_output else ""
            )
        return state.healthy

    outcome = run_in_order(graph, begin, finish, parallel)
    return RestartResult(outcome, states, errors, tuple(started))

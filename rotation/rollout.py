"""Recreate services so they read the new secrets: in dependency order, each one proven healthy."""

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
                lines.append(f"{name}: not recreated, because a service it depends on failed")
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
    """Recreate `services`, each once every affected service it depends on is healthy again."""
    graph = restart_graph(engine.services(), services)
    deadline = time.monotonic() + timeout
    states: dict[str, ServiceState] = {}
    errors: dict[str, str] = {}
    started: list[str] = []

    def work(name: str) -> bool:
        previous = engine.state(name).container_id
        started.append(name)
        try:
            engine.recreate([name])
        except EngineError as exc:
            errors[name] = str(exc)
            return False
        if not healthcheck:
            return True
        state = engine.wait_healthy(name, previous, deadline - time.monotonic())
        states[name] = state
        if not state.healthy and state.state not in ("exited", "dead") and time.monotonic() >= deadline:
            errors[name] = f"not healthy within {timeout:g}s: {state.summary}" + (
                f"; last healthcheck: {state.health_output}" if state.health_output else ""
            )
        return state.healthy

    outcome = run_in_order(graph, work, parallel)
    return RestartResult(outcome, states, errors, tuple(started))

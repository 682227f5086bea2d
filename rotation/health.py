"""Judge a stack's health and compare it with an earlier snapshot. Pure: plain data in and out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .engines import ServiceState
from .errors import SelectionError, StorageError
from .fsio import read_bounded, write_atomic

__all__ = ["Regression", "Snapshot", "problems", "regressions"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of every service of a project at one moment."""

    project: str
    taken: str
    states: Mapping[str, ServiceState]

    @property
    def unhealthy(self) -> tuple[ServiceState, ...]:
        """Services that are not running healthy (stopped, unhealthy, starting or missing)."""
        return tuple(s for _, s in sorted(self.states.items()) if not s.healthy)

    @property
    def healthy_services(self) -> frozenset[str]:
        """The services running healthy at that moment."""
        return frozenset(name for name, s in self.states.items() if s.healthy)

    @property
    def taken_at(self) -> float:
        """When the snapshot was taken, as a Unix time; unreadable, it is taken as the latest possible
        moment, so no recreate is excused by it."""
        try:
            return datetime.fromisoformat(self.taken).timestamp()
        except ValueError:
            return float("inf")

    @property
    def healthy(self) -> bool:
        """Whether every service is running healthy."""
        return not self.unhealthy

    def to_json(self) -> dict[str, Any]:
        """For `check --save` and the run's saved pre-rotation state."""
        return {
            "project": self.project,
            "taken": self.taken,
            "services": {name: {**asdict(s), "healthy": s.healthy} for name, s in sorted(self.states.items())},
        }

    def save(self, path: Path) -> None:
        """Write the snapshot where `check --save` was told to, whole or not at all, for `load`."""
        write_atomic(path, json.dumps(self.to_json(), indent=2, sort_keys=True).encode(), mode=0o644)

    @classmethod
    def load(cls, path: Path) -> Snapshot:
        """Read a snapshot saved with `to_json`; a bad file is an error naming it."""
        try:
            raw = json.loads(read_bounded(path, 16 << 20).decode("utf-8"))
            fields = set(ServiceState.__dataclass_fields__)
            states = {
                name: ServiceState(**{k: v for k, v in body.items() if k in fields})
                for name, body in raw["services"].items()
            }
            return cls(str(raw["project"]), str(raw["taken"]), states)
        except FileNotFoundError:
            raise SelectionError(f"{path}: no such saved state (--compare)") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, StorageError) as exc:
            raise SelectionError(f"{path}: not a state saved by check --save ({exc})") from None


@dataclass(frozen=True, slots=True)
class Regression:
    """A service that got worse between two snapshots."""

    service: str
    problem: str
    state: ServiceState | None

    def describe(self) -> str:
        """One line for a person."""
        detail = f": {self.state.summary}" if self.state else ""
        output = (
            f"; last healthcheck: {self.state.health_output.strip()}" if self.state and self.state.health_output else ""
        )
        return f"{self.service} {self.problem}{detail}{output}"


def regressions(before: Snapshot, after: Snapshot, recreated: Iterable[str] = ()) -> list[Regression]:
    """What got worse: healthy services that no longer are, that disappeared, or that restarted.

    Services in `recreated` were recreated on purpose, so a new container is not a regression for them.
    """
    expected = set(recreated)
    found = []
    for name, old in sorted(before.states.items()):
        new = after.states.get(name)
        if new is None or (new.state == "missing" and old.state != "missing"):
            found.append(Regression(name, "disappeared", new))
        elif old.healthy and not new.healthy:
            found.append(Regression(name, "is no longer healthy", new))
        elif name not in expected and (
            new.restarts > old.restarts
            or (old.container_id and new.container_id != old.container_id)
            or (old.started_at and new.started_at != old.started_at)
        ):
            found.append(Regression(name, "was restarted", new))
    for name, new in sorted(after.states.items()):
        if name not in before.states and not new.healthy:
            found.append(Regression(name, "is new and not healthy", new))
    return found


def problems(before: Snapshot | None, after: Snapshot, recreated: Iterable[str] = ()) -> list[str]:
    """One line per service that got worse since `before` or that is not healthy now.

    Without a `before` (no precheck for the run) only the services unhealthy now count.
    """
    found = regressions(before, after, recreated) if before else []
    named = {r.service for r in found}
    return [r.describe() for r in found] + [
        f"{s.service} {s.summary}" for s in after.unhealthy if s.service not in named
    ]

"""Live targets: systems that must hold a secret's new value before any file does.

A target changes in one transaction, proves the change, can be put back, and can tell which of two
values it holds now; it describes itself without values. The journal knows targets only through
`LiveTarget` and records them by `kind`: PostgreSQL (`postgres`: host and container modes, SCRAM
verifiers from `scram`) and a Swarm secret version (`swarm-secret`). A secret store holds many
keys in one versioned write, so `vault` has a change type of its own beside them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import RecoveryError
from ..generate import Secret

if TYPE_CHECKING:
    from ..backup import Run
    from ..engines import Engine
    from ..envfile import EnvFile
    from ..journal import LiveChange
    from ..plan import Plan
    from ..stack import Stack

__all__ = ["TARGETS", "LiveTarget", "planned", "prepared", "restored", "settled", "target_from_json"]


class LiveTarget(Protocol):
    """One live system a secret's value must move in before the files do."""

    kind: str

    @property
    def label(self) -> str:
        """How messages name it: where it is, never a value."""
        ...

    def to_json(self) -> dict[str, Any]:
        """Where it is, for the journal and metadata.json: never a value."""
        ...

    def check(self, current: Secret, secret: str) -> str:
        """For a dry run: what applying would do, found without changing anything; raises if it could not."""
        ...

    def apply(self, current: Secret, new: Secret, secret: str) -> None:
        """Move from `current` to `new` in one transaction and prove it; on failure it is left on `current`."""
        ...

    def revert(self, login: Secret, back_to: Secret, secret: str) -> None:
        """Reached with `login`, go back to `back_to`."""
        ...

    def which(self, candidates: Mapping[str, Secret]) -> str | None:
        """The name of the candidate it holds now, if any."""
        ...


# A target's `kind`, as the journal records it -> the module and class that implement it, imported
# on first use. Each class rebuilds itself from its entry with `from_json(raw, opener, engine)`.
TARGETS: dict[str, tuple[str, str]] = {
    "postgres": ("postgres", "PostgresLive"),
    "swarm-secret": ("swarmsecret", "SwarmSecretLive"),
}


def _kind(kind: str) -> Any:
    return importlib.import_module(f".{TARGETS[kind][0]}", __name__)


def prepared(stack: Stack, plan: Plan, files: Mapping[str, EnvFile]) -> Plan:
    """The plan as every target kind completes it (a Swarm secret adds the change of the variable
    that names its new version), before anything is checked or written."""
    for kind in TARGETS:
        plan = _kind(kind).prepared(stack, plan, files)
    return plan


def planned(stack: Stack, plan: Plan, files: Mapping[str, EnvFile]) -> list[LiveChange]:
    """Every live change the plan implies, from each target kind's planning hook, in the order the
    journal applies them (and undoes them, backwards)."""
    return [change for kind in TARGETS for change in _kind(kind).planned(stack, plan, files)]


def restored(stack: Stack, backup: Run, entry: Mapping[str, Any]) -> LiveTarget | None:
    """The target a backup's entry names, for putting the backup back; None when nothing there needs it."""
    kind = entry.get("kind", "postgres")
    if not isinstance(kind, str) or kind not in TARGETS:
        raise RecoveryError(f"a run names a live target of kind '{str(kind)[:40]}', which this version does not know")
    found: LiveTarget | None = _kind(kind).restored(stack, backup, entry)
    return found


def settled(engine: Engine, entries: Sequence[Mapping[str, Any]], outcome: str) -> list[str]:
    """What each target kind lets go once a run is `verified` or `rolled-back` (Swarm: the secret
    versions no longer used); a note for each thing kept."""
    return [note for kind in TARGETS for note in _kind(kind).settled(engine, entries, outcome)]


def target_from_json(raw: Mapping[str, Any], opener: Any, engine: Callable[[], Engine]) -> LiveTarget:
    """The target a journal or metadata entry describes (`kind` absent: PostgreSQL, as old runs wrote)."""
    kind = raw.get("kind", "postgres")
    if not isinstance(kind, str) or kind not in TARGETS:
        shown = str(kind)[:40]
        raise RecoveryError(f"a run names a live target of kind '{shown}', which this version does not know")
    made: LiveTarget = getattr(_kind(kind), TARGETS[kind][1]).from_json(raw, opener, engine)
    return made

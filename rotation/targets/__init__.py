"""Live targets: systems that must hold a secret's new value before any file does.

A target changes in one transaction, proves the change, can be put back, and can tell which of two
values it holds now; it describes itself without values. The journal knows targets only through
`LiveTarget` and records them by `kind`: PostgreSQL (`postgres`: host and container modes, SCRAM
verifiers from `scram`) and a Swarm secret version (`swarm-secret`). A secret store holds many
keys in one versioned write, so `vault` has a change type of its own beside them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import RecoveryError
from ..generate import Secret

if TYPE_CHECKING:
    from ..engines import Engine

__all__ = ["TARGETS", "LiveTarget", "target_from_json"]


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


def target_from_json(raw: Mapping[str, Any], opener: Any, engine: Callable[[], Engine]) -> LiveTarget:
    """The target a journal or metadata entry describes (`kind` absent: PostgreSQL, as old runs wrote)."""
    kind = raw.get("kind", "postgres")
    if not isinstance(kind, str) or kind not in TARGETS:
        shown = str(kind)[:40]
        raise RecoveryError(f"a run names a live target of kind '{shown}', which this version does not know")
    module, name = TARGETS[kind]
    made: LiveTarget = getattr(importlib.import_module(f".{module}", __name__), name).from_json(raw, opener, engine)
    return made

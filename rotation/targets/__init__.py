"""Live targets: systems that must hold a secret's new value before any file does.

A target changes in one transaction, proves the change, can be put back, and can tell which of two
values it holds now; it describes itself without values. The journal knows targets only through
`LiveTarget` and records them by `kind`: PostgreSQL (`postgres`: host and container modes, SCRAM
verifiers from `scram`) and a Swarm secret version (`swarm-secret`). A secret store holds many
keys in one versioned write, so `vault` has a change type of its own beside them.

Code outside this package reaches the implementations only through the functions here, which
import each module on first use: the use cases name no backend, and a command that never touches
a database, a store or a certificate never loads their clients.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import RecoveryError
from ..generate import Secret

if TYPE_CHECKING:
    from ..backup import Run
    from ..certificates import PostgresReload, SignalReload
    from ..engines import Engine
    from ..envfile import EnvFile
    from ..journal import LiveChange
    from ..plan import Plan
    from ..stack import Stack
    from .postgres import Opener as Opener
    from .vault import StoreChange as StoreChange
    from .vault import Vault as Vault

__all__ = [
    "TARGETS",
    "LiveTarget",
    "opener",
    "planned",
    "prepared",
    "reload_and_prove",
    "restored",
    "settled",
    "store",
    "store_change",
    "store_changes",
    "stores",
    "target_from_json",
]


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
    return _module(TARGETS[kind][0])


def _module(name: str) -> Any:
    return importlib.import_module(f".{name}", __name__)


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


def opener(engine: Callable[[], Engine]) -> Opener:
    """How a stack's databases are reached: in their compose containers, or directly."""
    made: Opener = _module("postgres").opener(engine)
    return made


def stores(stack: Stack, env: Mapping[str, str | None]) -> list[Vault]:
    """Every configured secret store of the stack, its `${VAR}` settings resolved from `env`."""
    vault = _module("vault")
    return [vault.Vault(spec, env, stack.root) for spec in stack.config.stores]


def store(stack: Stack, raw: Mapping[str, Any], env: Mapping[str, str | None]) -> Vault:
    """The configured store a journal or metadata entry names (any other is refused)."""
    made: Vault = _module("vault").Vault(stack.config.store(raw), env, stack.root)
    return made


def store_changes(
    stack: Stack, before: Mapping[str, str | None], after: Mapping[str, str | None], rendered: Mapping[str, bytes]
) -> list[StoreChange]:
    """A new version for each configured store whose secret would not agree with the files once
    `rendered` is written (`before` and `after`: the stack's values now and then)."""
    changes: list[StoreChange] = _module("vault").planned(stores(stack, before), stack.config, before, after, rendered)
    return changes


def store_change(
    store: Vault, version: int, keys: Mapping[str, str], old: Mapping[str, Secret], new: Mapping[str, Secret]
) -> StoreChange:
    """The change a journal recorded of `store` from `version`, rebuilt to read its state and put it back."""
    made: StoreChange = _module("vault").StoreChange(store, version, {}, keys, old, new)
    return made


def reload_and_prove(
    reloads: tuple[PostgresReload | SignalReload, ...],
    fingerprint: str,
    env: Mapping[str, str | None],
    signal: Callable[[str, str], None],
) -> list[str]:
    """Reload every server that presents a certificate, and prove each one presents `fingerprint` (see `tls`)."""
    proven: list[str] = _module("tls").reload_and_prove(reloads, fingerprint, env, signal)
    return proven

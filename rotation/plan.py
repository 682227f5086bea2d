"""Plan a rotation: which secrets change, to what, in which files, and which services must follow.

Everything here is pure: a `Plan` is computed from a configuration and the parsed files,
and turned into new file contents without touching the disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .config import Config, SecretSpec, unavailable
from .envfile import EnvFile
from .errors import DataLossRefused, SelectionError, did_you_mean
from .generate import Secret, random_value, sign_jwt
from .jwks import opaque_key, with_oct
from .validate import check_changes

__all__ = ["Change", "Plan", "current_value", "make_plan", "plan_from_values", "render_files"]


@dataclass(frozen=True, slots=True)
class Change:
    """One secret that changes, why, and its old and new values (both masked in output)."""

    spec: SecretSpec
    old: Secret | None
    new: Secret
    reason: str

    @property
    def name(self) -> str:
        """The secret's name."""
        return self.spec.name


@dataclass(frozen=True, slots=True)
class Plan:
    """A complete rotation, ready to be applied: changes in signing order, files, services."""

    changes: tuple[Change, ...]
    files: tuple[str, ...]
    services: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The rotated secrets' names, sorted, dependents included."""
        return tuple(sorted(c.name for c in self.changes))

    def change(self, name: str) -> Change | None:
        """The change for secret `name`, if it is part of this plan."""
        return next((c for c in self.changes if c.name == name), None)


def current_value(spec: SecretSpec, files: Mapping[str, EnvFile]) -> Secret | None:
    """The secret's value as the stack uses it now: from the first file that sets it."""
    for name in spec.files:
        value = files[name].get(spec.name) if name in files else None
        if value is not None:
            return Secret(value)
    return None


def _select(
    config: Config, selection: Sequence[str] | None, accept_data_loss: bool, missing: Mapping[str, str]
) -> list[str]:
    if selection is None:
        usable = [
            s
            for s in config.secrets.values()
            if s.auto_rotate and s.type not in ("static", "jwks") and s.name not in missing
        ]
        rotating = {s.name for s in usable}
        # A token whose signer the stack cannot serve has nothing to be signed with: it waits too.
        chosen = [
            s.name for s in usable if s.depends_on is None or s.depends_on in rotating or s.depends_on not in missing
        ]
    else:
        chosen = []
        for name in selection:
            spec = config.secrets.get(name)
            if spec is None:
                known = ", ".join(config.secrets)
                hint = did_you_mean(name, config.secrets)
                raise SelectionError(f"--secrets: unknown secret '{name}'{hint} (known: {known})")
            if spec.type == "static":
                raise SelectionError(
                    f"--secrets: {name} is static (user-managed) and is never generated; "
                    f"change it by hand in {', '.join(spec.files)}"
                )
            if spec.type == "jwks":
                raise SelectionError(
                    f"--secrets: {name} follows {spec.depends_on}, whose oct key it carries: rotate {spec.depends_on}. "
                    "Its EC signing key is not rotated by this tool yet"
                )
            if name in missing:
                raise SelectionError(f"--secrets: {name} cannot be rotated in this stack: {missing[name]}")
            if name not in chosen:
                chosen.append(name)
    _refuse_data_loss(config, chosen, accept_data_loss)
    return chosen


def _refuse_data_loss(config: Config, chosen: Sequence[str], accept_data_loss: bool) -> None:
    refused = [n for n in chosen if config.secrets[n].encrypts_data]
    if refused and not accept_data_loss:
        names = ", ".join(refused)
        raise DataLossRefused(
            f"{names} encrypt{'s' if len(refused) == 1 else ''} stored data: rotating "
            f"{'it' if len(refused) == 1 else 'them'} makes everything encrypted with the old key "
            "unreadable (for N8N_ENCRYPTION_KEY: every saved n8n credential). "
            "Pass --accept-data-loss to rotate anyway, or leave it out of --secrets / set auto_rotate: false",
            key=refused[0],
        )


def make_plan(
    config: Config,
    files: Mapping[str, EnvFile],
    selection: Sequence[str] | None = None,
    accept_data_loss: bool = False,
    now: float | None = None,
) -> Plan:
    """Decide every change for `selection` (None: every auto_rotate secret), JWT dependents included."""
    issued = time.time() if now is None else now
    missing = unavailable(config, files)
    chosen = set(_select(config, selection, accept_data_loss, missing))
    reasons = {name: "selected" if selection is not None else "auto" for name in chosen}
    dependents = set(config.dependents(chosen))

    def worth_saying(name: str) -> bool:
        """A missing secret is worth a warning when a rotation would rotate it unasked, or with what
        was asked; a key set or a static key the stack has not opted in to is not."""
        spec = config.secrets[name]
        if spec.type == "jwks":
            return False
        return (spec.auto_rotate and spec.type != "static") or name in dependents

    left_alone = {n: why for n, why in missing.items() if n not in (selection or ()) and worth_saying(n)}
    if selection is None:  # auto tokens whose signer the stack cannot serve wait with it
        for spec in config.secrets.values():
            if spec.auto_rotate and spec.name not in chosen and spec.name not in missing and spec.depends_on in missing:
                left_alone[spec.name] = f"it is signed by {spec.depends_on}, and {missing[spec.depends_on]}"
    for dependent in config.dependents(chosen):
        if dependent in missing:
            continue  # it is said below: the stack has nothing to re-sign there
        chosen.add(dependent)
        reasons[dependent] = f"signed by {config.secrets[dependent].depends_on}"
    changes: dict[str, Change] = {}
    for spec in config.secrets.values():
        if spec.name not in chosen:
            continue
        if spec.type == "jwt-token":
            assert spec.depends_on is not None and spec.role is not None
            parent = changes.get(spec.depends_on)
            key = parent.new if parent else current_value(config.secrets[spec.depends_on], files)
            if key is None:
                why = missing.get(spec.depends_on, f"no value in {', '.join(config.secrets[spec.depends_on].files)}")
                raise SelectionError(f"cannot re-sign {spec.name}: {spec.depends_on} is not usable here: {why}")
            new = sign_jwt(key, spec.role, spec.issuer, spec.expires_in, issued)
        elif spec.type == "jwks":
            signer, carried = changes[spec.depends_on or ""], current_value(spec, files)
            assert signer.old is not None and carried is not None, "only a dependent of a present signer gets here"
            new = with_oct(spec.name, carried.reveal(), signer.old, signer.new)
        elif spec.type == "opaque-key":
            new = opaque_key(spec.prefix or "")
        else:
            new = random_value(spec.length, spec.alphabet)
        changes[spec.name] = Change(spec, current_value(spec, files), new, reasons[spec.name])
    _check(config, changes.values(), files)
    return Plan(
        changes=tuple(changes.values()),
        files=tuple(sorted({f for c in changes.values() for f in c.spec.files})),
        services=tuple(sorted({s for c in changes.values() for s in c.spec.restart_services})),
        warnings=tuple(
            [f"{name} is left alone: {why}" for name, why in left_alone.items()] + _warnings(changes.values(), files)
        ),
    )


def plan_from_values(
    config: Config,
    files: Mapping[str, EnvFile],
    values: Mapping[str, Secret],
    reason: str,
    accept_data_loss: bool = False,
) -> Plan:
    """The changes that bring the files to `values` (a secret store's version, for `pull`): only the
    secrets whose value differs in some file; a key that encrypts data is refused as for a rotation."""
    missing = unavailable(config, files)
    changes = []
    for spec in config.secrets.values():
        new = values.get(spec.name)
        if new is None or spec.name in missing:
            continue
        if all(files[name].get(spec.name) == new.reveal() for name in spec.files):
            continue
        changes.append(Change(spec, current_value(spec, files), new, reason))
    _refuse_data_loss(config, [c.name for c in changes], accept_data_loss)
    _check(config, changes, files)
    return Plan(
        changes=tuple(changes),
        files=tuple(sorted({f for c in changes for f in c.spec.files})),
        services=tuple(sorted({s for c in changes for s in c.spec.restart_services})),
        warnings=tuple(
            [f"{n} is left alone: {why}" for n, why in missing.items() if n in values] + _warnings(changes, files)
        ),
    )


def _check(config: Config, changes: Iterable[Change], files: Mapping[str, EnvFile]) -> None:
    """Every new value checked by its spec before anything is written: generated, or from a store."""
    new = {c.name: (c.new, f"({c.reason})" if c.reason.startswith("from ") else "(generated)") for c in changes}
    current = {s.name: v.reveal() for s in config.secrets.values() if (v := current_value(s, files)) is not None}
    check_changes(config, new, files, current)


def _warnings(changes: Iterable[Change], files: Mapping[str, EnvFile]) -> list[str]:
    found = []
    for change in changes:
        values = set()
        for name in change.spec.files:
            count = files[name].count(change.name)
            if count > 1:
                found.append(f"{change.name} is set {count} times in {name}; every occurrence is updated")
            values.add(files[name].get(change.name))
        if len(values) > 1:
            found.append(f"{change.name} differs between {', '.join(change.spec.files)}; all get the new value")
    return found


def render_files(plan: Plan, files: Mapping[str, EnvFile], same: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """The new bytes of every file the plan touches; every other byte stays as it was.

    `same` maps each name to the first name of the same real file (a symbolic link and its
    target): such names get one rendering with every change meant for any of them.
    """
    canonical = same or {}
    out = {}
    for name in plan.files:
        real = canonical.get(name, name)
        values = {c.name: c.new.reveal() for c in plan.changes if real in {canonical.get(f, f) for f in c.spec.files}}
        out[name] = files[name].rendered(values)
    return out

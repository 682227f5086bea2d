"""Plan a rotation: which secrets change, to what, in which files, and which services must follow.

Everything here is pure: a `Plan` is computed from a configuration and the parsed files,
and turned into new file contents without touching the disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .certificates import CertificateSpec, Described, Issued
from .composefiles import Readers
from .config import Config, SecretSpec, unavailable
from .envfile import EnvFile
from .errors import ConfigError, DataLossRefused, SelectionError, did_you_mean
from .generate import Secret, random_value, sign_jwt
from .jwks import opaque_key, with_oct
from .replacement import Strategy
from .signingkeys import Step, key_state, next_step, sign_es256
from .validate import check_changes

__all__ = [
    "Change",
    "KeyPhase",
    "Plan",
    "affected",
    "current_value",
    "extended",
    "key_phases",
    "make_plan",
    "plan_from_values",
    "render_files",
]


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
    """A complete rotation, ready to be applied: changes in signing order, files, services, and for
    each service the changed secrets that make it follow."""

    changes: tuple[Change, ...]
    files: tuple[str, ...]
    services: tuple[str, ...]
    warnings: tuple[str, ...]
    because: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    phases: Mapping[str, str] = field(default_factory=dict)  # a signing key set -> the phase this run moves it to
    certificates: tuple[CertificateChange, ...] = ()
    strategies: Mapping[str, Strategy] = field(default_factory=dict)  # how a restart replaces each service

    @property
    def names(self) -> tuple[str, ...]:
        """The rotated secrets' names, sorted, dependents and certificates included."""
        return tuple(sorted([c.name for c in self.changes] + [c.spec.name for c in self.certificates]))

    def written(self) -> dict[str, bytes]:
        """The certificate and key files the plan writes, with their new bytes (env files are rendered)."""
        return {name: data for c in self.certificates for name, data in c.files().items()}

    def change(self, name: str) -> Change | None:
        """The change for secret `name`, if it is part of this plan."""
        return next((c for c in self.changes if c.name == name), None)


@dataclass(frozen=True, slots=True)
class CertificateChange:
    """A certificate and key replaced by a newly issued pair; described, never shown."""

    spec: CertificateSpec
    old: Described | None
    new: Issued
    reason: str

    def files(self) -> dict[str, bytes]:
        return {self.spec.cert: self.new.cert_pem, self.spec.key: self.new.key_pem}


def extended(plan: Plan, files: Iterable[str], followers: Iterable[tuple[str, str]], **fields: Any) -> Plan:
    """`plan` with more `files` written and more services following, each (service, secret that
    makes it follow), and `fields` replaced: how a target kind or a certificate adds to a plan."""
    because = {s: set(names) for s, names in plan.because.items()}
    for service, name in followers:
        because.setdefault(service, set()).add(name)
    return replace(
        plan,
        files=tuple(sorted({*plan.files, *files})),
        services=tuple(sorted(because)),
        because={s: tuple(sorted(names)) for s, names in sorted(because.items())},
        **fields,
    )


def with_certificates(plan: Plan, changes: Sequence[CertificateChange]) -> Plan:
    """`plan` with certificate changes: their files written, their restart_services recreated."""
    if not changes:
        return plan
    return extended(
        plan,
        (name for change in changes for name in change.spec.files),
        ((service, change.spec.name) for change in changes for service in change.spec.restart_services),
        certificates=tuple(changes),
    )


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
                raise SelectionError(
                    f"--secrets: unknown secret '{name}'{hint} (known: {known})", hint=f"known: {known}"
                )
            if spec.type == "static":
                raise SelectionError(
                    f"--secrets: {name} is static (user-managed) and is never generated; "
                    f"change it by hand in {', '.join(spec.files)}"
                )
            if spec.type == "jwks" and spec.public is None:
                owner = next((s.name for s in config.secrets.values() if s.public == name), None)
                moved = f"; its EC keys move with {owner}: rotate {owner}" if owner else ""
                raise SelectionError(
                    f"--secrets: {name} follows {spec.depends_on}, whose oct key it carries: rotate "
                    f"{spec.depends_on}{moved}"
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


def affected(
    config: Config, changes: Iterable[Change], readers: Readers | None
) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Each service the changes make follow, with the secrets that do, and a warning for each
    configured name the stack does not have.

    A secret without `restart_services` is followed by every service whose compose definition
    reads it (`readers`, from the stack's own files), less its `keep_running`; when no compose file
    could be read, that is a `ConfigError` (a rotation that recreated nothing would leave the stack
    on its old values). A configured name the files do not define is skipped with a warning now,
    so that no restart fails on it after the files changed. Without compose files to read,
    configured names stand as written.
    """
    known = readers if readers is not None and readers.files else None
    because: dict[str, set[str]] = {}
    warnings: list[str] = list(readers.warnings) if readers is not None else []
    for change in changes:
        spec = change.spec
        if spec.restart_services is None and readers is not None and known is None:
            why = "; ".join(readers.warnings) or "no compose file"
            raise ConfigError(
                f"{config.path}: secrets.{spec.name}: which services read it comes from the stack's compose "
                f"files, and none could be read ({why}): name them in compose.files, or list "
                f"secrets.{spec.name}.restart_services",
                config.path,
                f"secrets.{spec.name}.restart_services",
            )
        if spec.restart_services is None:
            kept = {(known.service(n) if known else None) or n for n in spec.keep_running}
            names = [s for s in known.of(spec.name) if s not in kept] if known else []
        else:
            names = []
            for name in spec.restart_services:
                service = known.service(name) if known else name
                if service is not None:
                    names.append(service)
                elif name not in config.optional_services:
                    assert known is not None
                    hint = did_you_mean(name, [*known.reads, *known.containers])
                    warnings.append(
                        f"secrets.{spec.name}.restart_services: '{name}' is not a service or container_name in "
                        f"{', '.join(known.files)}{hint}; skipped"
                    )
        for service in names:
            because.setdefault(service, set()).add(spec.name)
    return {service: tuple(sorted(names)) for service, names in sorted(because.items())}, warnings


def make_plan(
    config: Config,
    files: Mapping[str, EnvFile],
    selection: Sequence[str] | None = None,
    accept_data_loss: bool = False,
    now: float | None = None,
    readers: Readers | None = None,
    key_moved: Mapping[str, float] | None = None,
) -> Plan:
    """Decide every change for `selection` (None: every auto_rotate secret), JWT dependents included.

    A signing key set (a jwks with `public`) moves one phase; `key_moved` says when each one's rotate
    phase last recreated its readers, from the run history, for the revoke's wait."""
    issued = time.time() if now is None else now
    missing = unavailable(config, files)
    chosen = set(_select(config, selection, accept_data_loss, missing))
    steps = {
        name: _key_step(config, config.secrets[name], files, (key_moved or {}).get(name), issued)
        for name in chosen
        if config.secrets[name].type == "jwks"
    }
    if steps and len(chosen) > len(steps):
        raise SelectionError(
            f"--secrets: {', '.join(steps)} moves its signing key one phase per run; rotate it in a run of its own"
        )
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
        step = steps.get(config.secrets[dependent].depends_on or "")
        if step is not None and not step.resign:
            continue  # the key that signs it stays the same in this phase
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
            if config.secrets[spec.depends_on].type == "jwks":
                new = sign_es256(key, spec.role, spec.issuer, spec.expires_in, int(issued))
            else:
                new = sign_jwt(key, spec.role, spec.issuer, spec.expires_in, issued)
        elif spec.name in steps:
            step = steps[spec.name]
            new, reasons[spec.name] = step.private, f"{step.phase} phase"
            public = config.secrets[spec.public or ""]
            if current_value(public, files) != step.public:
                changes[public.name] = Change(public, current_value(public, files), step.public, f"{step.phase} phase")
        elif spec.type == "jwks":
            signer, carried = changes[spec.depends_on or ""], current_value(spec, files)
            assert signer.old is not None and carried is not None, "only a dependent of a present signer gets here"
            new = with_oct(spec.name, carried.reveal(), signer.old, signer.new)
        elif spec.type == "opaque-key":
            new = opaque_key(spec.prefix or "")
        else:
            new = random_value(spec.length, spec.alphabet)
        changes[spec.name] = Change(spec, current_value(spec, files), new, reasons[spec.name])
    ordered = [changes[s.name] for s in config.secrets.values() if s.name in changes]  # a public set joins in order
    _check(config, ordered, files)
    because, unknown = affected(config, ordered, readers)
    return Plan(
        changes=tuple(ordered),
        files=tuple(sorted({f for c in changes.values() for f in c.spec.files})),
        services=tuple(because),
        warnings=tuple(
            [f"{name} is left alone: {why}" for name, why in left_alone.items()]
            + _warnings(changes.values(), files)
            + unknown
        ),
        because=because,
        phases={name: step.phase for name, step in steps.items()},
    )


@dataclass(frozen=True, slots=True)
class KeyPhase:
    """A signing key set between phases, for `due`: where it stands, the phase its next run moves it
    to, and from when that may run (None: now)."""

    name: str
    state: str
    next: str
    ready_at: float | None


def key_phases(config: Config, files: Mapping[str, EnvFile], key_moved: Mapping[str, float]) -> list[KeyPhase]:
    """Every signing key set of the stack that stands in standby or rotated (its old key not yet revoked)."""
    found = []
    for spec in config.secrets.values():
        value = current_value(spec, files) if spec.public else None
        if value is None:
            continue
        try:
            state = key_state(value.reveal())
        except ValueError:
            continue  # rotate says what is wrong with it
        if state.state != "single":
            ready = _revoke_from(config, spec, files, key_moved.get(spec.name)) if state.state == "rotated" else None
            found.append(KeyPhase(spec.name, state.state, state.next, ready))
    return found


def _key_step(config: Config, spec: SecretSpec, files: Mapping[str, EnvFile], moved: float | None, now: float) -> Step:
    """The next phase of a signing key set, or a one-line `SelectionError` saying why it cannot run (yet)."""
    private, public = current_value(spec, files), current_value(config.secrets[spec.public or ""], files)
    if private is None or public is None:
        raise SelectionError(
            f"--secrets: {spec.name}: the stack has no {spec.name if private is None else spec.public}"
        )
    try:
        step = next_step(private.reveal(), public.reveal())
    except (ValueError, KeyError, TypeError) as exc:
        raise SelectionError(
            f"--secrets: {spec.name} cannot move to its next phase: {exc}; nothing was changed"
        ) from None
    if step.phase != "revoke":
        return step
    ready = _revoke_from(config, spec, files, moved)
    if ready is None:
        raise SelectionError(
            f"--secrets: {spec.name}: revoke refused: when its signing key moved is unknown (no run of this tool "
            "recreated its readers, and no token it signs carries an iat)"
        )
    if now < ready:
        lifetime = _session_lifetime(spec, files)
        raise SelectionError(
            f"--secrets: {spec.name}: revoke refused for {_span(ready - now)} more: session tokens signed by the old "
            f"key live {spec.session_expiry}={lifetime}s after the rotate phase ({_clock(ready - lifetime)})"
        )
    return step


def _revoke_from(config: Config, spec: SecretSpec, files: Mapping[str, EnvFile], moved: float | None) -> float | None:
    """When the old key may go: the session tokens it signed expire `session_expiry` (JWT_EXPIRY) after
    the rotate phase recreated its readers (`moved`, from the run history), or after the tokens the
    new key signed were issued where the history has no such run; None when neither is known."""
    signed = [
        _issued_at(value)
        for s in config.secrets.values()
        if s.depends_on == spec.name and (value := current_value(s, files))
    ]
    since = moved if moved is not None else max([m for m in signed if m is not None], default=None)
    return None if since is None else since + _session_lifetime(spec, files)


def _issued_at(token: Secret) -> float | None:
    import jwt  # deferred with its cryptography backend

    try:
        issued = jwt.decode(token.reveal(), options={"verify_signature": False}).get("iat")
    except jwt.InvalidTokenError:
        return None
    return float(issued) if isinstance(issued, (int, float)) and not isinstance(issued, bool) else None


def _session_lifetime(spec: SecretSpec, files: Mapping[str, EnvFile]) -> int:
    """Seconds a session token lives: the stack's JWT_EXPIRY (Supabase's .env.example: 3600)."""
    for name in spec.files:
        value = files[name].get(spec.session_expiry) if name in files else None
        if value is not None:
            if not value.strip().isdigit():
                raise SelectionError(
                    f"--secrets: {spec.name}: {spec.session_expiry} in {name} is not a number of seconds"
                )
            return int(value)
    return 3600


def _clock(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(moment))


def _span(seconds: float) -> str:
    minutes = int(seconds // 60) + 1
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def plan_from_values(
    config: Config,
    files: Mapping[str, EnvFile],
    values: Mapping[str, Secret],
    reason: str,
    accept_data_loss: bool = False,
    readers: Readers | None = None,
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
    because, unknown = affected(config, changes, readers)
    return Plan(
        changes=tuple(changes),
        files=tuple(sorted({f for c in changes for f in c.spec.files})),
        services=tuple(because),
        warnings=tuple(
            [f"{n} is left alone: {why}" for n, why in missing.items() if n in values]
            + _warnings(changes, files)
            + unknown
        ),
        because=because,
    )


def _check(config: Config, changes: Iterable[Change], files: Mapping[str, EnvFile]) -> None:
    """Every new value checked by its spec before anything is written: generated, or from a store."""
    new = {c.name: (c.new, f"({c.reason})" if c.reason.startswith("from ") else "(generated)") for c in changes}
    current = {s.name: v.reveal() for s in config.secrets.values() if (v := current_value(s, files)) is not None}
    check_changes(config, new, files, current)


def _warnings(changes: Iterable[Change], files: Mapping[str, EnvFile]) -> list[str]:
    found = []
    for change in changes:
        for place in change.spec.copied_into:  # verify sees the stack, not what an application keeps
            found.append(f"{change.name} is also copied into {place}: update it there, or what uses it fails")
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
    out = plan.written()
    for name in plan.files:
        if name in out:
            continue  # a certificate or key: written whole
        real = canonical.get(name, name)
        values = {c.name: c.new.reveal() for c in plan.changes if real in {canonical.get(f, f) for f in c.spec.files}}
        out[name] = files[name].rendered(values)
    return out

"""Verification probes: prove that the new secrets work, beyond containers reporting healthy.

A probe's output names what it checked and how it went, never a value: URLs and headers are
shown as written in the configuration, before `${...}` is filled in.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import Config, HttpProbe, JwtProbe, PostgresProbe
from .errors import DatabaseError, StoreError
from .generate import Secret, verify_jwt
from .interpolation import NAME

if TYPE_CHECKING:
    from .targets import Opener, Vault

__all__ = ["ProbeResult", "run_probes"]

_REFERENCE = re.compile(rf"\$\{{(?:(previous):)?({NAME})\}}")  # ${VAR}, or ${previous:VAR} for the value before the run


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's verdict and a line for a person."""

    name: str
    ok: bool
    detail: str


class _Missing(Exception):
    """A `${NAME}` in a probe that has no value."""


def _fill(text: str, current: Mapping[str, str | None], previous: Mapping[str, str | None]) -> str:
    def value(match: re.Match[str]) -> str:
        source = previous if match[1] else current
        found = source.get(match[2])
        if found is None:
            raise _Missing(f"{match[0]} has no value{' (no previous run)' if match[1] else ''}")
        return found

    return _REFERENCE.sub(value, text)


def _http(probe: HttpProbe, current: Mapping[str, str | None], previous: Mapping[str, str | None]) -> ProbeResult:
    shown = f"{probe.method} {probe.url}"
    stale = {m[2] for text in (probe.url, *probe.headers.values()) for m in _REFERENCE.finditer(text) if m[1]}
    unchanged = sorted(name for name in stale if previous.get(name) == current.get(name))
    if unchanged:
        return ProbeResult(probe.name, True, f"skipped: {', '.join(unchanged)} not rotated in this run")
    request = urllib.request.Request(
        _fill(probe.url, current, previous),
        method=probe.method,
        headers={name: _fill(value, current, previous) for name, value in probe.headers.items()},
    )
    try:
        with urllib.request.urlopen(request, timeout=probe.timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return ProbeResult(probe.name, False, f"{shown}: unreachable ({reason})")
    return ProbeResult(probe.name, status == probe.expect, f"{shown} -> {status} (expected {probe.expect})")


def _postgres(probe: PostgresProbe, current: Mapping[str, str | None], connect: Opener) -> ProbeResult:
    password = current.get(probe.secret)
    if password is None:
        return ProbeResult(probe.name, False, f"{probe.secret} has no value in the stack's env files")
    point, role = probe.target, probe.target.roles[0]
    try:
        connect(point).prove([role], Secret(password))
    except DatabaseError as exc:
        return ProbeResult(probe.name, False, str(exc).replace("the new password", f"the current {probe.secret}"))
    return ProbeResult(probe.name, True, f"{point.label}: {role} logs in with the current {probe.secret}")


def _jwt(probe: JwtProbe, config: Config, current: Mapping[str, str | None]) -> list[ProbeResult]:
    import jwt  # deferred with its cryptography backend

    results = []
    for spec in config.secrets.values():
        if spec.type != "jwt-token" or spec.depends_on is None:
            continue
        token, key = current.get(spec.name), current.get(spec.depends_on)
        if token is None or key is None:
            results.append(ProbeResult(f"{probe.name}: {spec.name}", False, f"{spec.name} or {spec.depends_on} unset"))
            continue
        try:
            claims = verify_jwt(Secret(token), Secret(key))
        except jwt.InvalidTokenError as exc:
            detail = f"{spec.name} does not verify against {spec.depends_on}: {exc}"
            results.append(ProbeResult(f"{probe.name}: {spec.name}", False, detail))
            continue
        ok = claims.get("role") == spec.role
        detail = f"{spec.name} verifies against {spec.depends_on}, role {claims.get('role')}"
        results.append(
            ProbeResult(f"{probe.name}: {spec.name}", ok, detail + ("" if ok else f", expected {spec.role}"))
        )
    return results


def _store(vault: Vault, current: Mapping[str, str | None]) -> ProbeResult:
    """The store's current version holds the values the files hold, for every secret it lists."""
    name = f"store {vault.label}"
    try:
        stored = vault.read()
    except StoreError as exc:
        return ProbeResult(name, False, str(exc))
    differ = [k for k in vault.spec.secrets if current.get(k) is not None and stored.data.get(k) != current.get(k)]
    if differ:
        return ProbeResult(name, False, f"version {stored.version} differs from the files in {', '.join(differ)}")
    return ProbeResult(name, True, f"version {stored.version} holds the files' values")


def run_probes(
    config: Config,
    current: Mapping[str, str | None],
    previous: Mapping[str, str | None],
    connect: Opener,
    stores: Sequence[Vault] = (),
) -> list[ProbeResult]:
    """Run every probe of the configuration against the stack's current (and previous) values, and
    check that each configured secret store agrees with the files."""
    results: list[ProbeResult] = [_store(vault, current) for vault in stores]
    for probe in config.verify:
        try:
            if isinstance(probe, HttpProbe):
                results.append(_http(probe, current, previous))
            elif isinstance(probe, PostgresProbe):
                results.append(_postgres(probe, current, connect))
            else:
                results.extend(_jwt(probe, config, current))
        except _Missing as missing:
            results.append(ProbeResult(probe.name, False, str(missing)))
    return results

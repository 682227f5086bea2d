"""Change a password in a live PostgreSQL before any file changes, and prove that it logs in.

Passwords are sent as SCRAM verifiers computed by libpq (`PQencryptPasswordConn`), so the
plain value never reaches the server's statement log or `pg_stat_activity`. Statements are
built with psycopg's `sql` composition; nothing here logs or raises with a value in it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from .config import PostgresTarget, interpolate
from .errors import DatabaseError
from .generate import Secret

__all__ = ["Endpoint", "apply_password", "endpoint", "probe", "revert_password", "which_password"]

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A target with `${VAR}` references resolved: everything needed to connect but the password."""

    host: str
    port: str
    dbname: str
    user: str
    roles: tuple[str, ...]
    after: tuple[str, ...]

    @property
    def label(self) -> str:
        """How messages name this database."""
        return f"postgres {self.host}:{self.port}/{self.dbname}"

    def to_json(self) -> dict[str, object]:
        """A plain mapping for metadata and the journal; it holds no secret."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Endpoint:
        """The inverse of `to_json`."""
        return cls(
            host=str(raw["host"]),
            port=str(raw["port"]),
            dbname=str(raw["dbname"]),
            user=str(raw["user"]),
            roles=tuple(raw["roles"]),
            after=tuple(raw.get("after") or ()),
        )


def endpoint(target: PostgresTarget, env: Mapping[str, str | None]) -> Endpoint:
    """Resolve `${VAR}` in the target's connection settings from the stack's env files."""
    return Endpoint(
        host=interpolate(target.host, env),
        port=interpolate(target.port, env),
        dbname=interpolate(target.dbname, env),
        user=interpolate(target.user, env),
        roles=target.roles,
        after=target.after,
    )


def _reason(exc: psycopg.Error) -> str:
    primary = exc.diag.message_primary if exc.diag is not None else None
    if primary:
        return primary
    lines = str(exc).strip().splitlines()
    return lines[0].split("FATAL:")[-1].strip() if lines else type(exc).__name__


def _connect(point: Endpoint, user: str, password: Secret) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=point.host,
        port=point.port,
        dbname=point.dbname,
        user=user,
        password=password.reveal(),
        connect_timeout=CONNECT_TIMEOUT,
        application_name="rotation",
    )


def _login_roles(conn: psycopg.Connection[tuple[object, ...]], point: Endpoint) -> list[str]:
    rows = conn.execute(
        "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)", [list(point.roles)]
    ).fetchall()
    present = {str(name): bool(login) for name, login in rows}
    missing = [r for r in point.roles if r not in present]
    if missing:
        raise DatabaseError(
            f"{point.label}: role{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            "not found; fix 'roles' in the configuration. Nothing was changed"
        )
    return [r for r in point.roles if present[r]]


def _set(conn: psycopg.Connection[tuple[object, ...]], point: Endpoint, password: Secret) -> None:
    verifiers = [
        conn.pgconn.encrypt_password(password.reveal().encode(), role.encode()).decode() for role in point.roles
    ]
    with conn.transaction():
        for role, verifier in zip(point.roles, verifiers, strict=True):
            conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))
        for statement in point.after:
            conn.execute(sql.SQL(statement))


def _check_logins(point: Endpoint, roles: Sequence[str], password: Secret) -> None:
    for role in roles:
        try:
            with _connect(point, role, password):
                pass
        except psycopg.Error as exc:
            raise DatabaseError(
                f"{point.label}: login as {role} with the new password failed: {_reason(exc)}"
            ) from None


def apply_password(point: Endpoint, current: Secret, new: Secret, secret: str) -> None:
    """Move every role of `point` from `current` to `new` in one transaction, then prove each login.

    If anything fails the database is left on `current`: the transaction rolls back, or the
    roles are altered back when the failure comes after the commit.
    """
    try:
        with _connect(point, point.user, current) as conn:
            roles = _login_roles(conn, point)
            _set(conn, point, new)
    except psycopg.Error as exc:
        raise DatabaseError(
            f"{point.label}: could not change {secret} as {point.user}: {_reason(exc)}. Nothing was changed"
        ) from None
    log.info("%s: %d roles altered, checking logins", point.label, len(point.roles))
    try:
        _check_logins(point, roles, new)
    except DatabaseError as failure:
        revert_password(point, new, current, secret)
        raise DatabaseError(f"{failure}; the old password was put back") from None


def revert_password(point: Endpoint, login: Secret, back_to: Secret, secret: str) -> None:
    """Log in with `login` and set every role of `point` back to `back_to`."""
    try:
        with _connect(point, point.user, login) as conn:
            _set(conn, point, back_to)
    except psycopg.Error as exc:
        raise DatabaseError(
            f"{point.label}: could not put {secret} back: {_reason(exc)}. "
            "The database may be on the new password while the files hold the old one"
        ) from None


def probe(point: Endpoint, current: Secret, secret: str) -> str:
    """What a rotation of `point` would do, found without changing anything; raises if it could not apply."""
    try:
        with _connect(point, point.user, current) as conn:
            roles = _login_roles(conn, point)
            row = conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
    except psycopg.Error as exc:
        raise DatabaseError(
            f"{point.label}: cannot log in as {point.user} with the current {secret}: {_reason(exc)}"
        ) from None
    if not row or not row[0]:
        raise DatabaseError(f"{point.label}: {point.user} may not alter roles (needs SUPERUSER or CREATEROLE)")
    return f"{point.label}: can alter {len(point.roles)} roles as {point.user}; {len(roles)} can log in"


def which_password(point: Endpoint, candidates: Mapping[str, Secret]) -> str | None:
    """The name of the candidate password that `point.user` logs in with now, if any."""
    for name, password in candidates.items():
        try:
            with _connect(point, point.user, password):
                return name
        except psycopg.OperationalError:
            continue
    return None

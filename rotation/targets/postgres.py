"""Change a password in a live PostgreSQL before any file changes, and prove that it logs in.

Two ways in: a direct connection with psycopg (`host`/`port`), or `psql` run inside the
database container over its local socket (`container`), for stacks that publish no port.
Either way the server only ever receives SCRAM verifiers, never the plain new password, and
statements are built with psycopg's `sql` composition. Nothing here logs or raises with a value.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from ..config import PASSWORD_PLACEHOLDER, AfterStatement, PostgresTarget, interpolate
from ..engines import Engine
from ..errors import DatabaseError, RecoveryError, RotationError, SelectionError
from ..generate import Secret
from ..validate import unsafe_password
from . import scram

if TYPE_CHECKING:  # psycopg is imported where it is used: commands that never connect start faster
    import psycopg
    from psycopg import sql

    from ..backup import Run
    from ..envfile import EnvFile
    from ..journal import LiveChange
    from ..plan import Plan
    from ..stack import Stack
    from . import LiveTarget

__all__ = [
    "ContainerDatabase",
    "Database",
    "DirectDatabase",
    "Opener",
    "PostgresLive",
    "apply_password",
    "opener",
    "planned",
    "prepared",
    "probe",
    "resolved",
    "restored",
    "revert_password",
    "settled",
]

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5


def resolved(target: PostgresTarget, env: Mapping[str, str | None]) -> PostgresTarget:
    """The target with `${VAR}` in its connection settings resolved from the stack's env files:
    everything needed to connect but the password."""
    return replace(
        target,
        host=interpolate(target.host, env),
        port=interpolate(target.port, env),
        dbname=interpolate(target.dbname, env),
        user=interpolate(target.user, env),
        after=tuple(_templated(statement, env) for statement in target.after),
    )


def _templated(statement: AfterStatement, env: Mapping[str, str | None]) -> AfterStatement:
    """`${VAR}` in the parameter templates resolved from the env files; `${password}` stays for later."""

    def resolve(template: str) -> str:
        parts = template.split(PASSWORD_PLACEHOLDER)
        return PASSWORD_PLACEHOLDER.join(interpolate(part, env) for part in parts)

    return replace(statement, params={name: resolve(t) for name, t in statement.params.items()})


def _params(statement: AfterStatement, password: Secret) -> dict[str, str]:
    return {name: t.replace(PASSWORD_PLACEHOLDER, password.reveal()) for name, t in statement.params.items()}


class Database(Protocol):
    """The few operations a password rotation needs from one PostgreSQL."""

    @property
    def point(self) -> PostgresTarget:
        """Where the database is and which roles follow the secret."""
        ...

    def login_roles(self, login: Secret) -> list[str]:
        """The listed roles that can log in; a missing role is a `DatabaseError` naming it."""
        ...

    def set_password(self, login: Secret, password: Secret) -> None:
        """In one transaction: every listed role to `password`, then the `after` statements."""
        ...

    def prove(self, roles: Sequence[str], password: Secret) -> None:
        """Raise a `DatabaseError` unless every role in `roles` authenticates with `password`."""
        ...

    def which(self, candidates: Mapping[str, Secret]) -> str | None:
        """The name of the candidate that `point.user` authenticates with now, if any."""
        ...

    def can_alter(self, login: Secret) -> bool:
        """Whether `point.user` may alter the listed roles (superuser or CREATEROLE)."""
        ...


def _reason(exc: psycopg.Error) -> str:
    primary = exc.diag.message_primary if exc.diag is not None else None
    if primary:
        return primary
    lines = str(exc).strip().splitlines()
    return lines[0].split("FATAL:")[-1].strip() if lines else type(exc).__name__


def _missing(point: PostgresTarget, present: Mapping[str, bool]) -> list[str]:
    missing = [r for r in point.roles if r not in present]
    if missing:
        raise DatabaseError(
            f"{point.label}: role{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            "not found; fix 'roles' in the configuration"
        )
    return [r for r in point.roles if present[r]]


def _alters(point: PostgresTarget, password: Secret) -> list[sql.Composed]:
    """ALTER ROLE for each role with a fresh SCRAM verifier: the server never sees the password."""
    from psycopg import sql

    return [
        sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(scram.verifier(password.reveal()))
        )
        for role in point.roles
    ]


def _setting(name: str) -> str:
    """The session setting that carries parameter `name` into psql, read back with current_setting()."""
    return f"rotation.p_{name}"


def _pgoptions(values: Mapping[str, str]) -> str:
    """PGOPTIONS for psql: `-c rotation.p_NAME=value` each, spaces and backslashes escaped as libpq wants."""
    escaped = {n: v.replace("\\", "\\\\").replace(" ", "\\ ") for n, v in values.items()}
    return " ".join(f"-c {_setting(n)}={v}" for n, v in escaped.items())


_ROLES = "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY({})"
_VERIFIERS = "SELECT rolname, coalesce(rolpassword, '') FROM pg_authid WHERE rolname = ANY({})"
_CAN_ALTER = "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"


@dataclass(frozen=True, slots=True)
class DirectDatabase:
    """A PostgreSQL reached over the network with psycopg; logins prove the passwords."""

    point: PostgresTarget

    def _connect(self, user: str, password: Secret) -> psycopg.Connection[tuple[Any, ...]]:
        """A login that sends the password only inside SCRAM (libpq's `require_auth`), never in clear,
        unless the configuration explicitly allows a server that asks for it in clear."""
        import psycopg

        auth: dict[str, Any] = {} if self.point.allow_cleartext_password else {"require_auth": "scram-sha-256"}
        try:
            return psycopg.connect(
                host=self.point.host,
                port=self.point.port,
                dbname=self.point.dbname,
                user=user,
                password=password.reveal(),
                connect_timeout=CONNECT_TIMEOUT,
                application_name="rotation",
                **auth,
            )
        except UnicodeError:
            raise DatabaseError(
                f"{self.point.label}: the password for {user} is not valid UTF-8 text; fix it in the stack's .env"
            ) from None
        except psycopg.OperationalError as exc:
            if "requirement" in _reason(exc) and "scram-sha-256" in _reason(exc):
                raise DatabaseError(
                    f"{self.point.label}: the server does not use SCRAM for {user} from this host (pg_hba.conf "
                    "'password' or 'trust'), so a password would travel in clear or prove nothing; refusing. "
                    "Use scram-sha-256 in pg_hba.conf, or set allow_cleartext_password: true on this target"
                ) from None
            raise

    def _fail(self, doing: str, exc: psycopg.Error) -> DatabaseError:
        reason = _reason(exc)
        if "password authentication failed" in reason:
            doing = "cannot log in with the current password"
        return DatabaseError(f"{self.point.label}: {doing} as {self.point.user}: {reason}")

    def login_roles(self, login: Secret) -> list[str]:
        import psycopg
        from psycopg import sql

        try:
            with self._connect(self.point.user, login) as conn:
                rows = conn.execute(sql.SQL(_ROLES).format(sql.Literal(list(self.point.roles)))).fetchall()
        except psycopg.Error as exc:
            raise self._fail("cannot connect", exc) from None
        return _missing(self.point, {str(name): bool(can) for name, can in rows})

    def set_password(self, login: Secret, password: Secret) -> None:
        import psycopg
        from psycopg import sql

        try:
            with self._connect(self.point.user, login) as conn, conn.transaction():
                for alter in _alters(self.point, password):
                    conn.execute(alter)
                for statement in self.point.after:
                    if statement.if_table:
                        row = conn.execute("SELECT to_regclass(%s)", [statement.if_table]).fetchone()
                        if row is None or row[0] is None:
                            continue
                    params = _params(statement, password)
                    conn.execute(sql.SQL(statement.sql), params or None)
        except psycopg.Error as exc:
            raise self._fail("could not change the password", exc) from None

    def prove(self, roles: Sequence[str], password: Secret) -> None:
        import psycopg

        for role in roles:
            try:
                with self._connect(role, password):
                    pass
            except psycopg.Error as exc:
                raise DatabaseError(
                    f"{self.point.label}: login as {role} with the new password failed: {_reason(exc)}"
                ) from None

    def which(self, candidates: Mapping[str, Secret]) -> str | None:
        import psycopg

        for name, password in candidates.items():
            try:
                with self._connect(self.point.user, password):
                    return name
            except psycopg.OperationalError as exc:
                if "password authentication failed" not in _reason(exc):  # down, not a wrong password
                    raise DatabaseError(
                        f"{self.point.label}: cannot connect as {self.point.user} to tell which password it has: "
                        f"{_reason(exc)}"
                    ) from None
        return None

    def can_alter(self, login: Secret) -> bool:
        import psycopg

        try:
            with self._connect(self.point.user, login) as conn:
                row = conn.execute(_CAN_ALTER).fetchone()
        except psycopg.Error as exc:
            raise self._fail("cannot connect", exc) from None
        return bool(row and row[0])


@dataclass(frozen=True, slots=True)
class ContainerDatabase:
    """A PostgreSQL reached by `psql` inside its container, over the container's local socket.

    Statements travel on psql's standard input. The current password, needed only if the
    container's pg_hba asks for one on the socket, is in the exec's environment as PGPASSWORD;
    the new one travels only as a SCRAM verifier and is proven against `pg_authid`.
    """

    point: PostgresTarget
    engine: Engine

    def _psql(
        self, script: str, login: Secret | None = None, options: Mapping[str, str] | None = None
    ) -> list[list[str]]:
        service = self.engine.resolve([self.point.container or ""], "apply.postgres.container")[0]
        argv = ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
        argv += ["-p", self.point.port, "-U", self.point.user, "-d", self.point.dbname]
        env = {"PGPASSWORD": login.reveal()} if login else {}
        if options:
            env["PGOPTIONS"] = _pgoptions(options)
        result = self.engine.execute(service, argv, script.encode(), env)
        if result.code != 0:
            lines = result.output.strip().splitlines()
            reason = next((line for line in lines if "error" in line.lower() or "FATAL" in line), "")
            reason = re.split(r"ERROR:|FATAL:|error:", reason)[-1].strip() or f"psql exited with {result.code}"
            raise DatabaseError(f"{self.point.label}: psql as {self.point.user} failed: {reason}")
        return [line.split("\t") for line in result.output.splitlines() if line.strip()]

    def _query(self, template: str, login: Secret | None = None) -> list[list[str]]:
        from psycopg import sql

        statement = sql.SQL(template).format(sql.Literal(list(self.point.roles)))
        return self._psql(statement.as_string(None) + ";\n", login)

    def login_roles(self, login: Secret) -> list[str]:
        rows = self._query(_ROLES, login)
        return _missing(self.point, {row[0]: row[1] == "t" for row in rows})

    def set_password(self, login: Secret, password: Secret) -> None:
        """One psql transaction. A bound parameter travels as a session setting in the exec's
        PGOPTIONS and is read with current_setting(): never in the SQL text psql sends."""
        from psycopg import sql

        lines = ["BEGIN;", *(f"{a.as_string(None)};" for a in _alters(self.point, password))]
        options: dict[str, str] = {}
        for number, statement in enumerate(self.point.after):
            text = statement.sql
            for name, value in _params(statement, password).items():
                key = f"{number}_{name}"
                options[key] = value
                text = text.replace(f"%({name})s", f"current_setting({sql.Literal(_setting(key)).as_string(None)})")
            if statement.if_table:
                table = sql.Literal(statement.if_table).as_string(None)
                lines += [f"SELECT to_regclass({table}) IS NOT NULL AS present \\gset", "\\if :present"]
                lines += [f"{text};", "\\endif"]
            else:
                lines.append(f"{text};")
        lines.append("COMMIT;")
        self._psql("\n".join(lines) + "\n", login, options)

    def _verifiers(self, login: Secret | None = None) -> dict[str, str]:
        return {row[0]: row[1] if len(row) > 1 else "" for row in self._query(_VERIFIERS, login)}

    def prove(self, roles: Sequence[str], password: Secret) -> None:
        stored = self._verifiers(password)
        for role in roles:
            if not scram.matches(stored.get(role, ""), password.reveal()):
                raise DatabaseError(f"{self.point.label}: {role} does not accept the new password")

    def which(self, candidates: Mapping[str, Secret]) -> str | None:
        for login in candidates.values():  # whichever one the socket accepts, if it asks for one
            try:
                stored = self._verifiers(login).get(self.point.user, "")
            except DatabaseError:
                continue
            return next((name for name, pw in candidates.items() if scram.matches(stored, pw.reveal())), None)
        return None

    def can_alter(self, login: Secret) -> bool:
        rows = self._psql(_CAN_ALTER + ";\n", login)
        return bool(rows) and rows[0][0] == "t"


Opener = Callable[[PostgresTarget], Database]


def opener(engine: Callable[[], Engine]) -> Opener:
    """Open each endpoint the way its configuration says: in its container, or directly."""

    def open_(point: PostgresTarget) -> Database:
        return ContainerDatabase(point, engine()) if point.container else DirectDatabase(point)

    return open_


def apply_password(db: Database, current: Secret, new: Secret, secret: str) -> None:
    """Move every role from `current` to `new` in one transaction, then prove each login.

    If anything fails the database is left on `current`: the transaction rolls back, or the
    roles are altered back when the failure comes after the commit.
    """
    point = db.point
    problem = unsafe_password(new.reveal())
    if problem is not None:  # PostgreSQL takes an empty password as "no password": nothing could log in
        raise DatabaseError(f"{point.label}: the new {secret} {problem}; nothing was changed", unchanged=True)
    try:
        roles = db.login_roles(current)
    except DatabaseError as exc:
        raise DatabaseError(f"{exc}. Nothing was changed", unchanged=True) from None
    except RotationError as exc:
        exc.unchanged = True  # the engine failed before anything was asked of the database
        raise
    try:
        db.set_password(current, new)
    except DatabaseError as exc:
        raise DatabaseError(f"{exc}. Nothing was changed", unchanged=True) from None
    log.info("%s: %d roles altered for %s, proving the new password", point.label, len(point.roles), secret)
    try:
        db.prove(roles, new)
    except RotationError as failure:  # a refused login, or an engine gone while proving
        revert_password(db, new, current, secret)
        raise DatabaseError(f"{failure}; the old password was put back", unchanged=True) from None


def revert_password(db: Database, login: Secret, back_to: Secret, secret: str) -> None:
    """Log in with `login` and set every role back to `back_to`."""
    problem = unsafe_password(back_to.reveal())
    if problem is not None:
        raise RecoveryError(
            f"{db.point.label}: the value of {secret} to put back {problem}; refusing to set it, which would "
            "lock the database. Set the password by hand to the one the stack's files hold"
        )
    try:
        db.set_password(login, back_to)
    except DatabaseError as exc:
        raise DatabaseError(
            f"{exc}; could not put {secret} back: the database may be on the new password "
            "while the files hold the old one"
        ) from None


def probe(db: Database, current: Secret, secret: str) -> str:
    """What a rotation would do to `db`, found without changing anything; raises if it could not apply."""
    roles = db.login_roles(current)
    if not db.can_alter(current):
        raise DatabaseError(f"{db.point.label}: {db.point.user} may not alter roles (needs SUPERUSER or CREATEROLE)")
    return f"{db.point.label}: can alter {len(db.point.roles)} roles as {db.point.user}; {len(roles)} can log in"


class PostgresLive:
    """A PostgreSQL as a `LiveTarget`: the roles of `point` follow a secret."""

    kind = "postgres"

    def __init__(self, point: PostgresTarget, opener: Opener) -> None:
        self.point = point
        self._open = opener

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], opener: Opener, engine: object) -> PostgresLive:
        """The target a journal entry describes; it reaches its database through `opener`, not an engine."""
        return cls(PostgresTarget.from_json(raw["endpoint"]), opener)

    @property
    def label(self) -> str:
        return self.point.label

    def to_json(self) -> dict[str, Any]:
        return self.point.to_json()

    def check(self, current: Secret, secret: str) -> str:
        return probe(self._open(self.point), current, secret)

    def apply(self, current: Secret, new: Secret, secret: str) -> None:
        apply_password(self._open(self.point), current, new, secret)

    def revert(self, login: Secret, back_to: Secret, secret: str) -> None:
        revert_password(self._open(self.point), login, back_to, secret)

    def which(self, candidates: Mapping[str, Secret]) -> str | None:
        return self._open(self.point).which(candidates)


# The planning hooks every target kind provides (see `targets.planned`): what a rotation's plan
# asks of PostgreSQL, and what a backup puts back.


def prepared(stack: Stack, plan: Plan, files: Mapping[str, EnvFile]) -> Plan:
    """A database asks nothing more of the plan."""
    return plan


def planned(stack: Stack, plan: Plan, files: Mapping[str, EnvFile]) -> list[LiveChange]:
    """For each changed secret with `apply:`, the change of every database that must follow it; an
    optional database whose container the stack lacks is skipped with a warning."""
    from ..journal import LiveChange
    from ..stack import merged_env

    env = merged_env(files)
    changes = []
    for change in plan.changes:
        for target in change.spec.apply:
            if change.old is None:
                raise SelectionError(f"{change.name}: no current value in {change.spec.files[0]} to log in with")
            if target.optional and target.container and not stack.has_service(target.container):
                log.warning("%s: no service %s in this stack; that database is skipped", change.name, target.container)
                continue
            live = PostgresLive(resolved(target, env), stack.databases)
            changes.append(LiveChange(change.name, change.spec.files[0], live, change.old, change.new))
    return changes


def restored(stack: Stack, backup: Run, entry: Mapping[str, Any]) -> LiveTarget | None:
    """The database a backup's entry names, to be put back on the backed-up password."""
    return stack.target(entry)


def settled(engine: Engine, entries: Sequence[Mapping[str, Any]], outcome: str) -> list[str]:
    """A database keeps nothing for a run once it is verified or rolled back."""
    return []

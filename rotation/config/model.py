"""What a configuration is: the secrets, where they live, the probes and stores, as frozen
dataclasses, and the constants upstream decides (alphabets, lengths, lifetimes)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..certificates import CertificateSpec


ALPHABETS = {
    "alnum": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    "hex": "0123456789abcdef",
    "base64url": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
}


TYPES = ("random", "jwt-token", "jwks", "opaque-key", "static")


MIN_RANDOM_LENGTH = 16


MAX_RANDOM_LENGTH = 4096


DEFAULT_JWT_LIFETIME = 5 * 366 * 86400


@dataclass(frozen=True, slots=True)
class AfterStatement:
    """SQL run in the password's transaction, after the ALTERs, on the way there and back.

    `params` are bound, never spliced into the SQL: `%(name)s` in `sql` takes the value of the
    template `params[name]`, whose `${password}` is the password being set and whose other
    `${VAR}` come from the stack's env files. With `if_table`, it runs only when that table exists.
    """

    sql: str
    params: Mapping[str, str] = field(default_factory=dict)
    if_table: str | None = None

    def to_json(self) -> str | dict[str, Any]:
        """A plain string when it is one, as old metadata has it; templates only, never a value."""
        if not self.params and self.if_table is None:
            return self.sql
        return {"sql": self.sql, "params": dict(self.params), "if_table": self.if_table}

    @classmethod
    def from_json(cls, raw: object) -> AfterStatement:
        """The inverse of `to_json`."""
        if isinstance(raw, str):
            return cls(raw)
        if not isinstance(raw, dict) or not isinstance(raw.get("sql"), str):
            raise ConfigError(f"an 'after' statement must be SQL text or {{sql, params, if_table}}, not {raw!r:.60}")
        unknown = sorted(str(key) for key in set(raw) - {"sql", "params", "if_table"})
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown setting of an 'after' statement (known: if_table, params, sql)")
        params = raw.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError("params: expected a mapping of names to values (%(name)s in sql)")
        table = raw.get("if_table")
        return cls(raw["sql"], {str(k): str(v) for k, v in params.items()}, str(table) if table else None)


PASSWORD_PLACEHOLDER = "${password}"


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """A PostgreSQL and the roles that follow a password secret: the one location type, as the
    configuration writes it (`${VAR}` in its settings) and, resolved, as the journal records it."""

    roles: tuple[str, ...]
    host: str = "localhost"
    port: str = "5432"
    dbname: str = "postgres"
    user: str = "postgres"
    after: tuple[AfterStatement, ...] = ()
    container: str | None = None
    allow_cleartext_password: bool = False
    optional: bool = False

    @property
    def label(self) -> str:
        """How messages name this database: its container, or host and port."""
        where = f"container {self.container}" if self.container else f"{self.host}:{self.port}"
        return f"postgres {where}/{self.dbname}"

    def to_json(self) -> dict[str, Any]:
        """A plain mapping for metadata and the journal: no secret (`after` keeps its templates)."""
        return {**asdict(self), "roles": list(self.roles), "after": [s.to_json() for s in self.after]}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PostgresTarget:
        """The inverse of `to_json`; metadata from older versions loads too."""
        return cls(
            roles=tuple(raw["roles"]),
            host=str(raw["host"]),
            port=str(raw["port"]),
            dbname=str(raw["dbname"]),
            user=str(raw["user"]),
            after=tuple(AfterStatement.from_json(item) for item in raw.get("after") or ()),
            container=raw.get("container"),
            allow_cleartext_password=raw.get("allow_cleartext_password") is True,
            optional=raw.get("optional") is True,
        )


@dataclass(frozen=True, slots=True)
class VaultAuth:
    """How to log in to a Vault or OpenBao: a token from VAULT_TOKEN or BAO_TOKEN, or an AppRole whose
    role_id and secret_id come from `${VAR}` templates or a file (never written in the config)."""

    method: str = "token"  # or "approle"
    role_id: str | None = None
    role_id_file: str | None = None
    secret_id: str | None = None
    secret_id_file: str | None = None
    mount: str = "approle"


@dataclass(frozen=True, slots=True)
class VaultSpec:
    """One KV version 2 secret in a Vault or OpenBao that holds `secrets`, versioned on every change.

    `address` and `ca_cert` may hold `${VAR}` (from the environment or the stack's env files).
    """

    address: str
    path: str
    secrets: tuple[str, ...]
    mount: str = "secret"
    auth: VaultAuth = field(default_factory=VaultAuth)
    ca_cert: str | None = None

    @property
    def label(self) -> str:
        """How messages name it: the KV path, never the token or a value."""
        return f"vault {self.mount}/{self.path}"

    def to_json(self) -> dict[str, Any]:
        """Where it is, for the journal and metadata: the templates, no token, no value."""
        return {"address": self.address, "mount": self.mount, "path": self.path}


@dataclass(frozen=True, slots=True)
class SecretSpec:
    """One secret as the configuration describes it."""

    name: str
    type: str
    files: tuple[str, ...]
    length: int = 32
    alphabet: str = "alnum"
    role: str | None = None
    depends_on: str | None = None
    issuer: str = "supabase"
    expires_in: int = DEFAULT_JWT_LIFETIME
    auto_rotate: bool = True
    description: str = ""
    restart_services: tuple[str, ...] | None = None  # None: every service whose compose definition reads it
    keep_running: tuple[str, ...] = ()  # derived readers that need no recreate for it
    encrypts_data: bool = False
    apply: tuple[PostgresTarget, ...] = ()
    rotation_period: int | None = None
    swarm_secret: str | None = None  # the stack file's secret (its top-level `secrets:` key) that carries it
    secret: bool = True  # false: the value is no secret by itself (a user name, an access key id); guard skips it
    prefix: str | None = None  # opaque-key: sb_publishable_ or sb_secret_
    public: str | None = None  # jwks: the public set whose EC keys follow this set's (JWT_KEYS -> JWT_JWKS)
    session_expiry: str = "JWT_EXPIRY"  # jwks with `public`: the variable holding the session lifetime (s)
    copied_into: tuple[str, ...] = ()  # applications that keep a copy of the value (an n8n credential), for the plan


@dataclass(frozen=True, slots=True)
class BackupSpec:
    """Where backups live, relative to the stack root, and how long they are kept."""

    directory: str = "backups/secrets"
    retention_days: int = 90


@dataclass(frozen=True, slots=True)
class ComposeSpec:
    """How to reach the stack's compose project."""

    command: str | None = None
    project: str | None = None
    files: tuple[str, ...] = ()
    single_writer: tuple[str, ...] = ()  # volumes and paths only one container may write: no start-first


@dataclass(frozen=True, slots=True)
class SwarmSpec:
    """A Docker Swarm stack (`docker stack deploy -c FILE... STACK`): its name and stack files."""

    stack: str
    files: tuple[str, ...] = ()  # default: the compose files (compose.files, else compose's default names)


@dataclass(frozen=True, slots=True)
class HttpProbe:
    """An HTTP request whose status proves the new secrets work (or that stale ones are refused)."""

    name: str
    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    expect: int = 200
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class PostgresProbe:
    """A login as `target`'s one role with the current value of `secret` (in a container: checked
    as `target.user`)."""

    name: str
    target: PostgresTarget
    secret: str = "POSTGRES_PASSWORD"


@dataclass(frozen=True, slots=True)
class JwtProbe:
    """Every jwt-token secret verifies against the secret that signs it, with its role."""

    name: str = "jwt"


Probe = HttpProbe | PostgresProbe | JwtProbe


@dataclass(frozen=True, slots=True)
class Config:
    """A validated configuration: secrets in dependency order, backups, compose, probes, webhooks."""

    path: Path
    secrets: Mapping[str, SecretSpec]
    backup: BackupSpec = field(default_factory=BackupSpec)
    compose: ComposeSpec = field(default_factory=ComposeSpec)
    verify: tuple[Probe, ...] = ()
    notify: tuple[str, ...] = ()
    optional_services: tuple[str, ...] = ()  # named in restart_services, but a stack may not have them
    stores: tuple[VaultSpec, ...] = ()
    engine: str = "compose"
    swarm: SwarmSpec | None = None
    certificates: Mapping[str, CertificateSpec] = field(default_factory=dict)  # `type: tls-certificate` entries

    def store(self, raw: Mapping[str, Any]) -> VaultSpec:
        """The configured store a journal or metadata entry names; one it does not name is refused,
        since those entries are read from disk and a store is only ever reached as configured."""
        for spec in self.stores:
            if spec.to_json() == {k: raw.get(k) for k in ("address", "mount", "path")}:
                return spec
        where = f"{raw.get('mount')}/{raw.get('path')}"[:80]
        raise ConfigError(f"{self.path}: a run names the store {where}, which 'stores' does not configure", self.path)

    def dependents(self, names: Iterable[str]) -> tuple[str, ...]:
        """Every `jwt-token` signed, directly or not, by one of `names`, and every key set carrying one
        of them, in signing order (one pass)."""
        signers = set(names)
        found: list[str] = []
        for spec in self.secrets.values():
            if spec.depends_on in signers and spec.name not in signers:
                found.append(spec.name)
                if spec.type != "jwks":  # a set follows its HS256 secret in its oct key; its EC key signs, unchanged
                    signers.add(spec.name)
        return tuple(found)

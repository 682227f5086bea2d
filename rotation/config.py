"""Load and validate `secrets-config.yaml`, the contract with existing users.

`load` checks the file on its own; `check_stack` checks it against a stack's files.
Both raise `ConfigError` with one line naming the file and the key at fault.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml

from . import envfile
from .errors import ConfigError, did_you_mean
from .interpolation import NAME, REFERENCE, references

if TYPE_CHECKING:
    from .certificates import CertificateSpec

__all__ = [
    "ALPHABETS",
    "PASSWORD_PLACEHOLDER",
    "AfterStatement",
    "BackupSpec",
    "ComposeSpec",
    "Config",
    "HttpProbe",
    "JwtProbe",
    "PostgresProbe",
    "Probe",
    "PostgresTarget",
    "SecretSpec",
    "SwarmSpec",
    "VaultAuth",
    "VaultSpec",
    "check_stack",
    "unavailable",
    "find_config",
    "interpolate",
    "load",
    "parse_duration",
]

ALPHABETS = {
    "alnum": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    "hex": "0123456789abcdef",
    "base64url": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
}
TYPES = ("random", "jwt-token", "jwks", "opaque-key", "static")
_OPAQUE_PREFIX = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*_$")  # sb_publishable_, sb_secret_
MIN_RANDOM_LENGTH = 16
MAX_RANDOM_LENGTH = 4096
MAX_CONFIG_BYTES = 1 << 20
TOP_LEVEL_KEYS = frozenset(
    {"secrets", "backup", "compose", "engine", "swarm", "verify", "notify", "optional_services", "stores"}
)
ENGINES = ("compose", "swarm")
_SWARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a stack or Swarm secret name
DEFAULT_JWT_LIFETIME = 5 * 366 * 86400
Fail = Callable[[str, str], ConfigError]  # (key, message) -> the error naming file and key
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's when the wheel has it
_DURATION = re.compile(r"^(\d+)\s*([smhdwy]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 366 * 86400}
_SECRET_KEYS = {
    "type",
    "length",
    "alphabet",
    "role",
    "depends_on",
    "issuer",
    "expires_in",
    "files",
    "auto_rotate",
    "description",
    "restart_services",
    "keep_running",
    "encrypts_data",
    "apply",
    "rotation_period",
    "swarm_secret",
    "secret",
    "prefix",
    "public",
    "session_expiry",
    "copied_into",
}
_POSTGRES_KEYS = {
    "host",
    "port",
    "dbname",
    "user",
    "roles",
    "after",
    "container",
    "allow_cleartext_password",
    "optional",
}


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
        params = raw.get("params") or {}
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


def parse_duration(value: object, where: str) -> int:
    """Seconds in `30d`, `12h`, `5y` or a plain number of seconds."""
    match = _DURATION.match(str(value).strip())
    if isinstance(value, bool) or match is None:
        raise ConfigError(f"{where}: '{value}' is not a duration such as 3600, 12h, 30d or 5y")
    return int(match[1]) * _UNITS[match[2]]


def find_config(root: Path, explicit: str | None) -> Path | None:
    """The configuration to use: `--config`, else the stack's own (root, then `scripts/`), else None."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if not path.is_file():
            raise ConfigError(f"{explicit}: no such configuration file (--config)")
        return path
    for candidate in (root / "secrets-config.yaml", root / "scripts" / "secrets-config.yaml"):
        if candidate.is_file():
            return candidate
    return None


def load(path: Path) -> Config:
    """Read and validate `path`; every problem is a `ConfigError` naming the file and key."""
    try:
        data = path.read_bytes()
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {len(data)} bytes is too large for a configuration", path)
        text = data.decode("utf-8")
        _check_nodes(path, yaml.compose(text, Loader=_LOADER))
        raw = yaml.load(text, Loader=_LOADER)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})", path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: YAML syntax error: {problem}", path) from None
    return _build(path, raw)


def _check_nodes(path: Path, root: yaml.Node | None) -> None:
    """Refuse what YAML allows but a configuration must not have: aliases (an alias bomb makes a
    1 KB file expand for minutes) and duplicate keys (silently last-wins: a second JWT_SECRET
    would replace the first)."""
    seen: set[int] = set()
    pending = [root] if root is not None else []
    while pending:
        node = pending.pop()
        if id(node) in seen:
            line = node.start_mark.line + 1
            raise ConfigError(f"{path}: line {line}: YAML anchors and aliases are not supported here", path)
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys:
                        line = key.start_mark.line + 1
                        raise ConfigError(f"{path}: line {line}: duplicate key '{key.value}'", path, key.value)
                    keys.add(key.value)
                pending += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            pending += node.value


def _build(path: Path, raw: Any) -> Config:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {message}", path, key)

    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'secrets' section", path)
    unknown = sorted(str(k) for k in set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown setting{did_you_mean(unknown[0], TOP_LEVEL_KEYS)}")
    secrets_raw = raw.get("secrets")
    if not isinstance(secrets_raw, dict) or not secrets_raw:
        raise fail("secrets", "expected a non-empty mapping of secret names")
    from .certificates import parse as certificate  # deferred: only a stack with certificates needs it

    secrets = {
        str(name): _secret(str(name), body, _within(fail, f"secrets.{name}"))
        for name, body in secrets_raw.items()
        if not (isinstance(body, dict) and body.get("type") == "tls-certificate")
    }
    certificates = {
        str(name): certificate(str(name), body, _within(fail, f"secrets.{name}"), parse_duration)
        for name, body in secrets_raw.items()
        if isinstance(body, dict) and body.get("type") == "tls-certificate"
    }
    for spec in secrets.values():
        if spec.type in ("jwt-token", "jwks") and spec.depends_on not in secrets:
            raise fail(
                f"secrets.{spec.name}.depends_on",
                f"'{spec.depends_on}' is not a secret in this file",
            )
        _check_key_set(spec, secrets, fail)
    ordered = _signing_order(secrets, fail)
    backup = _backup(raw.get("backup") or {}, fail)
    _no_secrets_in_locations(secrets, fail)
    for spec in secrets.values():
        for name in spec.files:
            if (
                PurePosixPath(name) == PurePosixPath(backup.directory)
                or PurePosixPath(backup.directory) in PurePosixPath(name).parents
            ):
                raise fail("backup.directory", f"'{backup.directory}' would hold {name}, a file of secrets.{spec.name}")
    for pair in certificates.values():
        for name in pair.files:
            if any(name in other.files for other in secrets.values()):
                raise fail(f"secrets.{pair.name}", f"'{name}' is also an env file of another secret")
        for index, target in enumerate(pair.reload):
            for setting in ("host", "port", "dbname", "user"):
                for ref in references(getattr(target, setting, "")):
                    if ref in secrets:  # these are shown in messages; only `password` may carry a secret
                        key = f"secrets.{pair.name}.reload[{index}].postgres.{setting}"
                        raise fail(key, f"may not use ${{{ref}}}: a secret's value would be shown wherever this is")
    return Config(
        path=path,
        secrets={name: secrets[name] for name in ordered},
        certificates=certificates,
        backup=backup,
        compose=_compose(raw.get("compose") or {}, fail),
        verify=tuple(_probe(index, item, fail) for index, item in enumerate(raw.get("verify") or [])),
        notify=_notify(raw.get("notify") or [], fail),
        optional_services=_names(raw.get("optional_services") or [], "optional_services", fail),
        stores=_stores(raw.get("stores") or [], secrets, fail),
        **_engine(raw, secrets, fail),
    )


def _engine(raw: Mapping[str, Any], secrets: Mapping[str, SecretSpec], fail: Fail) -> dict[str, Any]:
    """`engine:` and, for Swarm, `swarm: {stack, files}`; `swarm_secret` only makes sense there."""
    engine = raw.get("engine", "compose")
    if engine not in ENGINES:
        raise fail("engine", f"'{engine}' is not compose or swarm")
    body = raw.get("swarm")
    if engine == "compose":
        if body is not None:
            raise fail("swarm", "only applies with engine: swarm")
        for spec in secrets.values():
            if spec.swarm_secret:
                raise fail(f"secrets.{spec.name}.swarm_secret", "only applies with engine: swarm")
        return {}
    if not isinstance(body, dict) or not isinstance(body.get("stack"), str):
        raise fail("swarm.stack", "engine: swarm needs swarm: {stack: NAME} (the name given to docker stack deploy)")
    unknown = sorted(str(k) for k in set(body) - {"stack", "files"})
    if unknown:
        raise fail(f"swarm.{unknown[0]}", "unknown setting (swarm takes stack and files)")
    if not _SWARM_NAME.match(body["stack"]):
        raise fail("swarm.stack", f"'{body['stack']}' is not a stack name")
    files = body.get("files") or []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise fail("swarm.files", "expected a list of stack file paths")
    for name in files:
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise fail("swarm.files", f"'{name}' leaves the stack root; use a path relative to it")
    return {"engine": "swarm", "swarm": SwarmSpec(stack=body["stack"], files=tuple(files))}


def _check_key_set(spec: SecretSpec, secrets: Mapping[str, SecretSpec], fail: Fail) -> None:
    """A signing set's `public` is another jwks of the same HS256 secret, and a token signed by a key
    set is signed by a signing set (one with `public`), whose EC key signs it (ES256)."""
    if spec.public is not None:
        public = secrets.get(spec.public)
        if public is None or public.type != "jwks" or public.depends_on != spec.depends_on or public.public:
            raise fail(
                f"secrets.{spec.name}.public",
                f"'{spec.public}' must be a jwks secret of this file carrying {spec.depends_on} (and no `public`)",
            )
    signer = secrets.get(spec.depends_on or "")
    if spec.type == "jwt-token" and signer is not None and signer.type == "jwks" and signer.public is None:
        raise fail(
            f"secrets.{spec.name}.depends_on",
            f"'{signer.name}' is a public key set; a token is signed by the set with the private key (and `public`)",
        )


def _secret(name: str, body: Any, fail: Fail) -> SecretSpec:
    if not isinstance(body, dict):
        raise fail("type", "expected a mapping with at least 'type' and 'files'")
    unknown = sorted(set(body) - _SECRET_KEYS)
    if unknown:
        raise fail(unknown[0], "unknown setting")
    kind = body.get("type")
    if kind not in TYPES:
        raise fail("type", f"unknown type '{kind}' (expected {', '.join(TYPES)} or tls-certificate)")
    files = body.get("files")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise fail("files", "expected a non-empty list of paths relative to the stack root")
    for name_ in files:
        posix = PurePosixPath(name_)
        if posix.is_absolute() or ".." in posix.parts or name_.startswith("~"):
            raise fail("files", f"'{name_}' leaves the stack root; use a path relative to it")
    length = body.get("length", 32)
    if isinstance(length, bool) or not isinstance(length, int):
        raise fail("length", f"'{length}' is not a whole number")
    alphabet = body.get("alphabet", "alnum")
    if alphabet not in ALPHABETS:
        raise fail("alphabet", f"unknown alphabet '{alphabet}' (expected {', '.join(ALPHABETS)})")
    if kind == "random" and length < MIN_RANDOM_LENGTH:
        raise fail("length", f"{length} is too short; random secrets need at least {MIN_RANDOM_LENGTH}")
    if length > MAX_RANDOM_LENGTH:
        raise fail("length", f"{length} is too long; at most {MAX_RANDOM_LENGTH}")
    if kind == "jwt-token" and not body.get("depends_on"):
        raise fail("depends_on", "a jwt-token needs the secret that signs it")
    if kind == "jwt-token" and not body.get("role"):
        raise fail("role", "a jwt-token needs the JWT 'role' claim")
    if kind == "jwks" and not body.get("depends_on"):
        raise fail("depends_on", "a jwks needs the HS256 secret whose oct key it carries")
    copied = body.get("copied_into") or []
    if not isinstance(copied, list) or not all(isinstance(c, str) and c.strip() and "\n" not in c for c in copied):
        raise fail("copied_into", "expected a list of one-line descriptions (where a copy of the value is kept)")
    for key in ("public", "session_expiry"):
        if key in body and (kind != "jwks" or not isinstance(body[key], str) or not re.fullmatch(NAME, body[key])):
            raise fail(key, "only a jwks takes it, and it names a variable of the stack's env files")
    prefix = body.get("prefix")
    if (kind == "opaque-key") != (prefix is not None) or (prefix is not None and not _OPAQUE_PREFIX.match(str(prefix))):
        raise fail("prefix", "an opaque-key needs a prefix such as sb_publishable_ (and only it takes one)")
    services = body.get("restart_services")
    for key in ("restart_services", "keep_running"):
        listed = body.get(key)
        if listed is not None and (not isinstance(listed, list) or not all(isinstance(s, str) for s in listed)):
            raise fail(key, "expected a list of compose service or container names")
    for flag in ("auto_rotate", "encrypts_data", "secret"):
        if flag in body and not isinstance(body[flag], bool):
            raise fail(flag, f"expected true or false, not '{body[flag]}'")
    swarm_secret = body.get("swarm_secret")
    if swarm_secret is not None and (not isinstance(swarm_secret, str) or not _SWARM_NAME.match(swarm_secret)):
        raise fail("swarm_secret", f"'{swarm_secret}' is not the name of a secret in the stack file")
    return SecretSpec(
        name=name,
        type=kind,
        files=tuple(files),
        length=length,
        alphabet=alphabet,
        role=body.get("role"),
        depends_on=body.get("depends_on"),
        issuer=str(body.get("issuer", "supabase")),
        expires_in=parse_duration(body.get("expires_in", DEFAULT_JWT_LIFETIME), f"secrets.{name}.expires_in")
        if "expires_in" in body
        else DEFAULT_JWT_LIFETIME,
        auto_rotate=body.get("auto_rotate", kind not in ("static", "jwks")),
        description=str(body.get("description", "")),
        restart_services=None if services is None else tuple(services),
        keep_running=tuple(body.get("keep_running") or ()),
        encrypts_data=body.get("encrypts_data", False),
        apply=_apply(body.get("apply"), kind, fail),
        rotation_period=parse_duration(body["rotation_period"], f"secrets.{name}.rotation_period")
        if body.get("rotation_period") is not None
        else None,
        swarm_secret=swarm_secret,
        secret=body.get("secret", True),
        prefix=prefix,
        public=body.get("public"),
        session_expiry=body.get("session_expiry", "JWT_EXPIRY"),
        copied_into=tuple(copied),
    )


def _apply(raw: Any, kind: str, fail: Fail) -> tuple[PostgresTarget, ...]:
    if raw is None:
        return ()
    if kind != "random":
        raise fail("apply", "only random secrets can be applied to a live database")
    items = raw if isinstance(raw, list) else [raw]
    targets = []
    for index, item in enumerate(items):
        key = "apply" if len(items) == 1 else f"apply[{index}]"
        if not isinstance(item, dict) or set(item) != {"postgres"} or not isinstance(item["postgres"], dict):
            raise fail(key, "expected 'postgres:' with connection settings and 'roles'")
        body = item["postgres"]
        unknown = sorted(set(body) - _POSTGRES_KEYS)
        if unknown:
            raise fail(f"{key}.postgres.{unknown[0]}", "unknown setting")
        roles = body.get("roles")
        if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
            raise fail(f"{key}.postgres.roles", "expected a non-empty list of role names")
        after = _after(body.get("after") or [], f"{key}.postgres.after", fail)
        targets.append(
            PostgresTarget(
                roles=tuple(roles),
                host=str(body.get("host", "localhost")),
                port=str(body.get("port", "5432")),
                dbname=str(body.get("dbname", "postgres")),
                user=str(body.get("user", "postgres")),
                after=tuple(after),
                container=body.get("container"),
                allow_cleartext_password=_flag(body, "allow_cleartext_password", f"{key}.postgres", fail),
                optional=_flag(body, "optional", f"{key}.postgres", fail),
            )
        )
    return tuple(targets)


def _after(raw: Any, where: str, fail: Fail) -> tuple[AfterStatement, ...]:
    if not isinstance(raw, list):
        raise fail(where, "expected a list of SQL statements")
    statements = []
    for index, item in enumerate(raw):
        try:
            statement = AfterStatement.from_json(item)
        except ConfigError as exc:
            raise fail(f"{where}[{index}]", str(exc)) from None
        for name in statement.params:
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or f"%({name})s" not in statement.sql:
                raise fail(f"{where}[{index}].params.{name}", "needs a lower-case name used as %(name)s in sql")
        statements.append(statement)
    return tuple(statements)


def _flag(body: Mapping[str, Any], name: str, where: str, fail: Fail) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise fail(f"{where}.{name}", f"expected true or false, not '{value}'")
    return value


def _within(fail: Fail, prefix: str) -> Fail:
    """`fail` for keys under `prefix` (`secrets.NAME`), so every key path is spelled from the top."""
    return lambda key, message: fail(f"{prefix}.{key}", message)


def _no_secrets_in_locations(secrets: Mapping[str, SecretSpec], fail: Fail) -> None:
    """A connection setting is shown in messages, metadata and the audit log; a `${SECRET}` in one
    would put the secret's value there, so it is refused."""
    for spec in secrets.values():
        for index, target in enumerate(spec.apply):
            for name in ("host", "port", "dbname", "user"):
                for ref in references(getattr(target, name)):
                    if ref in secrets:
                        key = f"secrets.{spec.name}.apply[{index}].postgres.{name}"
                        raise fail(key, f"may not use ${{{ref}}}: a secret's value would be shown wherever this is")
            for number, statement in enumerate(target.after):
                for param, template in statement.params.items():
                    for ref in references(template):
                        if ref in secrets:
                            key = f"secrets.{spec.name}.apply[{index}].postgres.after[{number}].params.{param}"
                            raise fail(key, f"may not use ${{{ref}}}; ${{password}} is the password being set")


def _backup(raw: Any, fail: Fail) -> BackupSpec:
    if not isinstance(raw, dict):
        raise fail("backup", "expected a mapping with 'directory' and 'retention_days'")
    directory = str(raw.get("directory", "backups/secrets"))
    if PurePosixPath(directory).is_absolute() or ".." in PurePosixPath(directory).parts:
        raise fail("backup.directory", f"'{directory}' leaves the stack root")
    if not PurePosixPath(directory).parts or PurePosixPath(directory).parts == (".",):
        raise fail("backup.directory", f"'{directory}' is the stack root itself; use a folder inside it")
    days = raw.get("retention_days", 90)
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise fail("backup.retention_days", f"'{days}' is not a positive number of days")
    return BackupSpec(directory=directory, retention_days=days)


def _compose(raw: Any, fail: Fail) -> ComposeSpec:
    if not isinstance(raw, dict):
        raise fail("compose", "expected a mapping with 'command', 'project' and 'files'")
    files = raw.get("files") or []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise fail("compose.files", "expected a list of compose file paths")
    command = raw.get("command")
    project = raw.get("project")
    return ComposeSpec(
        command=str(command) if command else None,
        project=str(project) if project else None,
        files=tuple(files),
    )


def _probe(index: int, raw: Any, fail: Fail) -> Probe:
    key = f"verify[{index}]"
    kinds = [k for k in ("http", "postgres", "jwt") if isinstance(raw, dict) and k in raw]
    if len(kinds) != 1:
        raise fail(key, "expected exactly one of http:, postgres: or jwt:")
    kind = kinds[0]
    body = raw[kind] or {}
    name = str(raw.get("name") or (kind if kind == "jwt" else f"{kind} #{index + 1}"))
    if not isinstance(body, dict):
        raise fail(f"{key}.{kind}", "expected a mapping")
    if kind == "jwt":
        return JwtProbe(name)
    if kind == "postgres":
        if not isinstance(body.get("role"), str):
            raise fail(f"{key}.postgres.role", "the role to log in as is required")
        role = body["role"]
        where = PostgresTarget(
            roles=(role,),
            host=str(body.get("host", "localhost")),
            port=str(body.get("port", "5432")),
            dbname=str(body.get("dbname", "postgres")),
            user=str(body.get("user") or role),
            container=body.get("container"),
        )
        return PostgresProbe(name=name, target=where, secret=str(body.get("secret", "POSTGRES_PASSWORD")))
    if not isinstance(body.get("url"), str):
        raise fail(f"{key}.http.url", "a URL is required")
    headers = body.get("headers") or {}
    if not isinstance(headers, dict):
        raise fail(f"{key}.http.headers", "expected a mapping of header names to values")
    expect = body.get("expect", 200)
    if isinstance(expect, bool) or not isinstance(expect, int):
        raise fail(f"{key}.http.expect", f"'{expect}' is not an HTTP status code")
    timeout = body.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise fail(f"{key}.http.timeout", f"'{timeout}' is not a number of seconds between 0 and 3600")
    return HttpProbe(
        name=name,
        url=body["url"],
        method=str(body.get("method", "GET")).upper(),
        headers={str(k): str(v) for k, v in headers.items()},
        expect=expect,
        timeout=float(timeout),
    )


def _names(raw: Any, key: str, fail: Fail) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise fail(key, "expected a list of compose service names")
    return tuple(raw)


_VAULT_KEYS = {"address", "mount", "path", "secrets", "auth", "ca_cert"}
_AUTH_KEYS = {"method", "role_id", "role_id_file", "secret_id", "secret_id_file", "mount"}
_KV_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def _stores(raw: Any, secrets: Mapping[str, SecretSpec], fail: Fail) -> tuple[VaultSpec, ...]:
    if not isinstance(raw, list):
        raise fail("stores", "expected a list of stores such as - vault: {address: ..., path: ...}")
    found = []
    for index, item in enumerate(raw):
        key = f"stores[{index}]"
        if not isinstance(item, dict) or set(item) != {"vault"} or not isinstance(item["vault"], dict):
            raise fail(key, "expected 'vault:' with a mapping (address, mount, path, secrets, auth, ca_cert)")
        found.append(_vault(item["vault"], secrets, _within(fail, f"{key}.vault")))
    seen = set()
    for index, spec in enumerate(found):
        if (spec.address, spec.mount, spec.path) in seen:
            raise fail(f"stores[{index}]", f"{spec.label} at {spec.address} is listed twice")
        seen.add((spec.address, spec.mount, spec.path))
    return tuple(found)


def _vault(body: Mapping[str, Any], secrets: Mapping[str, SecretSpec], fail: Fail) -> VaultSpec:
    unknown = sorted(str(k) for k in set(body) - _VAULT_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown setting{did_you_mean(unknown[0], _VAULT_KEYS)}")
    for name in ("address", "path"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            raise fail(name, "is required (address: ${VAULT_ADDR} or https://vault.example:8200)")
    mount = body.get("mount", "secret")
    for name, value in (("mount", mount), ("path", body["path"])):
        if not isinstance(value, str) or not _KV_PATH.match(value.strip("/")) or ".." in value.split("/"):
            raise fail(name, f"'{value}' is not a KV path (letters, digits, '_', '-', '.', separated by '/')")
    listed = body.get("secrets")
    if listed is None:
        names = tuple(secrets)
    elif isinstance(listed, list) and listed and all(isinstance(n, str) for n in listed):
        for name in listed:
            if name not in secrets:
                raise fail("secrets", f"'{name}' is not a secret in this file{did_you_mean(name, secrets)}")
        names = tuple(dict.fromkeys(listed))
    else:
        raise fail("secrets", "expected a non-empty list of secret names (leave it out for every secret)")
    for name in ("address", "ca_cert"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise fail(name, "expected text")
        for ref in references(value or ""):
            if ref in secrets:
                raise fail(name, f"may not use ${{{ref}}}: a secret's value would be shown wherever this is")
    if "@" in body["address"].split("//", 1)[-1].split("/", 1)[0]:  # journal and metadata keep this text
        raise fail("address", "may not carry a user or password (user:pw@host); the token comes from VAULT_TOKEN")
    return VaultSpec(
        address=body["address"].strip(),
        path=body["path"].strip("/"),
        secrets=names,
        mount=mount.strip("/"),
        auth=_auth(body.get("auth") or {"method": "token"}, secrets, _within(fail, "auth")),
        ca_cert=body.get("ca_cert"),
    )


def _auth(body: Any, secrets: Mapping[str, SecretSpec], fail: Fail) -> VaultAuth:
    if not isinstance(body, dict):
        raise fail("method", "expected a mapping such as {method: token} or {method: approle, ...}")
    unknown = sorted(str(k) for k in set(body) - _AUTH_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown setting{did_you_mean(unknown[0], _AUTH_KEYS)}")
    method = body.get("method", "token")
    texts = {k: body.get(k) for k in _AUTH_KEYS - {"method"}}
    for name, value in texts.items():
        if value is not None and not isinstance(value, str):
            raise fail(name, "expected text")
    if method == "token":
        extra = sorted(k for k, v in texts.items() if v is not None)
        if extra:
            raise fail(extra[0], "only applies to method: approle (a token comes from VAULT_TOKEN or BAO_TOKEN)")
        return VaultAuth()
    if method != "approle":
        raise fail("method", f"'{method}' is not token or approle")
    for name, file in (("role_id", "role_id_file"), ("secret_id", "secret_id_file")):
        if (texts[name] is None) == (texts[file] is None):
            raise fail(name, f"give one of {name} (a ${{VAR}} from the environment) or {file}")
    secret_id = texts["secret_id"]
    if secret_id is not None and not REFERENCE.fullmatch(secret_id):
        raise fail("secret_id", "must be a ${VAR} from the environment (or use secret_id_file), not the value itself")
    for ref in references(f"{texts['role_id']}{secret_id}"):
        if ref in secrets:
            raise fail("role_id", f"may not use ${{{ref}}}, a secret this tool rotates")
    return VaultAuth(
        method="approle",
        role_id=texts["role_id"],
        role_id_file=texts["role_id_file"],
        secret_id=secret_id,
        secret_id_file=texts["secret_id_file"],
        mount=(texts["mount"] or "approle").strip("/"),
    )


def _notify(raw: Any, fail: Fail) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    urls = []
    for index, item in enumerate(items):
        url = item.get("url") if isinstance(item, dict) else item
        if not isinstance(url, str) or not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$", url):
            raise fail(
                f"notify[{index}]",
                "expected a webhook URL (https://...) or an Apprise URL (mailto://, ntfy://, discord://, json://, ...)",
            )
        urls.append(url)
    return tuple(urls)


def _signing_order(secrets: Mapping[str, SecretSpec], fail: Fail) -> list[str]:
    ordered: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join((*chain[chain.index(name) :], name))
            raise fail(f"secrets.{name}.depends_on", f"dependency cycle: {cycle}")
        state[name] = "visiting"
        parent = secrets[name].depends_on
        if parent is not None and parent in secrets:
            visit(parent, (*chain, name))
        state[name] = "done"
        ordered.append(name)

    for name in secrets:
        visit(name, ())
    return ordered


def check_stack(config: Config, root: Path) -> dict[str, envfile.EnvFile]:
    """Parse every listed file that the stack at `root` has, by relative path.

    A path that leads out of the root is a `ConfigError`, and so is a stack that has none of the
    listed files. A listed file that is missing, or that lacks a secret, is not an error here:
    `unavailable` says which secrets that leaves out, and only a rotation that names one fails.
    """
    parsed: dict[str, envfile.EnvFile] = {}
    real_root = root.resolve()
    listed = {name: spec.name for spec in config.secrets.values() for name in spec.files}
    for name, owner in listed.items():
        path = root / name
        try:
            inside = path.resolve().is_relative_to(real_root)
        except OSError:
            inside = False
        if not inside:
            raise ConfigError(f"{config.path}: secrets.{owner}.files: '{name}' leaves the stack root {root}")
        if path.is_file():
            parsed[name] = envfile.read(path)
    if not parsed:
        raise ConfigError(f"{config.path}: none of the listed files ({', '.join(listed)}) exists in {root}")
    return parsed


def unavailable(config: Config, files: Mapping[str, envfile.EnvFile]) -> dict[str, str]:
    """Each configured secret that this stack's files cannot serve, with the file at fault."""
    found: dict[str, str] = {}
    for spec in config.secrets.values():
        for name in spec.files:
            if name not in files:
                found[spec.name] = f"{name} does not exist"
                break
            if files[name].count(spec.name) == 0:
                found[spec.name] = f"{name} does not contain it"
                break
            if spec.type == "jwks" and not files[name].get(spec.name):
                # Supabase's .env.example ships `JWT_KEYS=` empty until utils/add-new-auth-keys.sh fills it
                found[spec.name] = f"it is empty in {name} (the stack has not opted in to the key set)"
                break
    return found


def interpolate(value: str, env: Mapping[str, str | None]) -> str:
    """Expand `${VAR}` from the stack's env files, then the process environment."""

    def lookup(match: re.Match[str]) -> str:
        found = env.get(match[1]) or os.environ.get(match[1])
        if found is None:
            raise ConfigError(f"${{{match[1]}}} is not set in the stack's env files or the environment")
        return found

    return REFERENCE.sub(lookup, value)

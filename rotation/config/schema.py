"""The rules a `secrets-config.yaml` must follow. Every setting is read through a few typed
accessors (`Table`, as packaging's pylock.py reads with `_get`, `_get_required` and
`_get_sequence`), so that every error is one line naming its key path (`secrets.JWT_SECRET.length`),
every unknown key gets a did-you-mean, and each default is written once, where its setting is read."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ConfigError, did_you_mean
from ..escape import printable
from ..interpolation import NAME, REFERENCE, references
from .model import (
    ALPHABETS,
    MAX_RANDOM_LENGTH,
    MIN_RANDOM_LENGTH,
    TYPES,
    AfterStatement,
    BackupSpec,
    ComposeSpec,
    Config,
    HttpProbe,
    JwtProbe,
    PostgresProbe,
    PostgresTarget,
    Probe,
    SecretSpec,
    SwarmSpec,
    VaultAuth,
    VaultSpec,
)

Fail = Callable[[str, str], ConfigError]  # (key, message) -> the error naming file and key

TOP_LEVEL_KEYS = frozenset(
    {"secrets", "backup", "compose", "engine", "swarm", "verify", "notify", "optional_services", "stores"}
)
ENGINES = ("compose", "swarm")
_SECRET_KEYS = frozenset(
    {
        *("type", "length", "alphabet", "role", "depends_on", "issuer", "expires_in", "files", "auto_rotate"),
        *("description", "restart_services", "keep_running", "encrypts_data", "apply", "rotation_period"),
        *("swarm_secret", "secret", "prefix", "public", "session_expiry", "copied_into"),
    }
)
_POSTGRES_KEYS = frozenset(
    {"host", "port", "dbname", "user", "roles", "after", "container", "allow_cleartext_password", "optional"}
)
_PROBE_KEYS = {
    "http": frozenset({"url", "method", "headers", "expect", "timeout"}),
    "postgres": frozenset({"role", "host", "port", "dbname", "user", "container", "secret"}),
    "jwt": frozenset(),
}
_COMPOSE_KEYS = ("command", "project", "files", "single_writer")
_VAULT_KEYS = frozenset({"address", "mount", "path", "secrets", "auth", "ca_cert"})
_AUTH_KEYS = frozenset({"method", "role_id", "role_id_file", "secret_id", "secret_id_file", "mount"})

_OPAQUE_PREFIX = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*_$")  # sb_publishable_, sb_secret_
_SWARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a stack or Swarm secret name
_KV_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
_DURATION = re.compile(r"^(\d+)\s*([smhdwy]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 366 * 86400}
_SHOWN = ("host", "port", "dbname", "user")  # connection settings messages show: never a secret's value

# The defaults are the model's, written once there; a setting left out takes its field's default.
_SECRET = SecretSpec(name="", type="random", files=())
_ENDPOINT = PostgresTarget(roles=())
_BACKUP = BackupSpec()
_HTTP = HttpProbe(name="", url="")
_PROBE = PostgresProbe(name="", target=_ENDPOINT)
_VAULT = VaultSpec(address="", path="", secrets=())
_AUTH = VaultAuth()


def parse_duration(value: object, where: str) -> int:
    """Seconds in `30d`, `12h`, `5y` or a plain number of seconds."""
    seconds = _seconds(value)
    if seconds is None:
        raise ConfigError(f"{where}: {_not_a_duration(value)}")
    return seconds


def _seconds(value: object) -> int | None:
    match = _DURATION.match(str(value).strip())
    return None if isinstance(value, bool) or match is None else int(match[1]) * _UNITS[match[2]]


def _not_a_duration(value: object) -> str:
    return f"'{str(value)[:40]}' is not a duration such as 3600, 12h, 30d or 5y"


class Table:
    """One mapping of the file at its key path, read through typed accessors: a value of the wrong
    type is an error naming the whole key path and what was expected, and `of` refuses keys it does
    not know with the closest known one. A setting left out takes its default; a single value
    written as null (`encrypts_data:` with nothing after it) is an error, never a silent default,
    while a list or mapping written as null counts as left out."""

    def __init__(self, raw: Mapping[str, Any], path: str, fail: Fail) -> None:
        self.raw, self.path, self._fail = raw, path, fail

    @classmethod
    def of(cls, raw: object, path: str, fail: Fail, known: Collection[str], shape: str, at: str = "") -> Table:
        """`raw` as the table at `path`, holding only `known` keys; otherwise an error saying it
        expected `shape` (named at the key `at` under `path`, or at `path` itself)."""
        if not isinstance(raw, dict):
            raise fail(_joined(path, at), f"expected {shape}")
        unknown = sorted(str(key) for key in set(raw) - set(known))
        if unknown:
            close = did_you_mean(unknown[0], known) or f" (known: {', '.join(sorted(known)) or 'none'})"
            raise fail(_joined(path, unknown[0]), f"unknown setting{close}")
        return cls(raw, path, fail)

    def key(self, name: str) -> str:
        """The whole key path of `name` in this table."""
        return _joined(self.path, name)

    def fail(self, name: str, message: str) -> ConfigError:
        """The error for the setting `name` of this table (a `Fail` relative to it)."""
        return self._fail(self.key(name), message)

    def has(self, name: str) -> bool:
        return self.raw.get(name) is not None

    def value(self, name: str, default: Any = None) -> Any:
        """The raw value of a list or mapping (null: left out), for a rule that is not a type."""
        found = self.raw.get(name)
        return default if found is None else found

    def single(self, name: str, default: Any = None) -> Any:
        """The raw value of a single setting: `default` when left out, an error when written as null."""
        if name in self.raw and self.raw[name] is None:
            raise self.fail(name, "has no value: write one, or leave the setting out for its default")
        return self.raw.get(name, default)

    def text(self, name: str, default: str | None = None) -> str | None:
        found = self.single(name, default)
        if found is not None and not isinstance(found, str):
            raise self.fail(name, f"expected text, not '{found}'")
        return found

    def required_text(self, name: str, why: str) -> str:
        found = self.text(name)
        if found is None or not found.strip():
            raise self.fail(name, why)
        return found

    def scalar(self, name: str, default: str) -> str:
        """A setting written as text or a number (`port: 5432`), as text."""
        found = self.single(name, default)
        if isinstance(found, (dict, list)):
            raise self.fail(name, "expected a single value, not a list or mapping")
        return str(found)

    def flag(self, name: str, default: bool) -> bool:
        found = self.single(name, default)
        if not isinstance(found, bool):
            raise self.fail(name, f"expected true or false, not '{found}'")
        return found

    def whole(self, name: str, default: int, expected: str = "a whole number", minimum: int | None = None) -> int:
        found = self.single(name, default)
        if isinstance(found, bool) or not isinstance(found, int) or (minimum is not None and found < minimum):
            raise self.fail(name, f"'{found}' is not {expected}")
        return found

    def strings(
        self, name: str, expected: str, default: tuple[str, ...] | None = (), *, required: bool = False
    ) -> tuple[str, ...] | None:
        """A list of text; `required`: present and not empty."""
        found = self.raw.get(name)
        if found is None and not required:
            return default
        if not isinstance(found, list) or (required and not found) or not all(isinstance(v, str) for v in found):
            raise self.fail(name, f"expected {expected}")
        return tuple(found)

    def listed(self, name: str, expected: str, *, required: bool = False) -> tuple[str, ...]:
        """`strings` whose default is the empty list."""
        return self.strings(name, expected, required=required) or ()

    def duration(self, name: str) -> int | None:
        found = self.single(name)
        seconds = None if found is None else _seconds(found)
        if found is not None and seconds is None:
            raise self.fail(name, _not_a_duration(found))
        return seconds

    def table(self, name: str, known: Collection[str], shape: str, default: object = None, at: str = "") -> Table:
        """The mapping under `name` as a table of its own (see `of`)."""
        return self.inner(name, self.value(name, default), known, shape, at)

    def inner(self, name: str, raw: object, known: Collection[str], shape: str, at: str = "") -> Table:
        """`raw` as the table at `name` below this one (an item of a list: `apply[0]`)."""
        return Table.of(raw, self.key(name), self._fail, known, shape, at)


def _joined(path: str, name: str) -> str:
    return f"{path}.{name}" if path and name else path or name


def build(path: Path, raw: Any) -> Config:
    """The validated configuration that the YAML of `path` (already parsed, as `raw`) describes."""

    def fail(key: str, message: str) -> ConfigError:  # one line, whatever the file's keys and values hold
        return ConfigError(f"{path}: {printable(key)}: {printable(message)}", path, key)

    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'secrets' section", path)
    top = Table.of(raw, "", fail, TOP_LEVEL_KEYS, "a mapping with a 'secrets' section")
    entries = top.value("secrets")
    if not isinstance(entries, dict) or not entries:
        raise top.fail("secrets", "expected a non-empty mapping of secret names")
    from ..certificates import parse as certificate  # deferred: only a stack with certificates needs it

    secrets, certificates = {}, {}
    for name, body in entries.items():
        if isinstance(body, dict) and body.get("type") == "tls-certificate":
            certificates[str(name)] = certificate(str(name), body, fail)
        else:
            table = Table.of(body, f"secrets.{name}", fail, _SECRET_KEYS, _SECRET_SHAPE, "type")
            secrets[str(name)] = _secret(str(name), table)
    for spec in secrets.values():
        if spec.type in ("jwt-token", "jwks") and spec.depends_on not in secrets:
            raise fail(f"secrets.{spec.name}.depends_on", f"'{spec.depends_on}' is not a secret in this file")
        _check_key_set(spec, secrets, fail)
    ordered = _signing_order(secrets, fail)
    backup = _backup(top.table("backup", ("directory", "retention_days"), _BACKUP_SHAPE, {}))
    _no_secrets_in_locations(secrets, fail)
    for spec in secrets.values():
        for name in spec.files:
            if PurePosixPath(backup.directory) in (PurePosixPath(name), *PurePosixPath(name).parents):
                raise fail("backup.directory", f"'{backup.directory}' would hold {name}, a file of secrets.{spec.name}")
    for pair in certificates.values():
        for name in pair.files:
            if any(name in other.files for other in secrets.values()):
                raise fail(f"secrets.{pair.name}", f"'{name}' is also an env file of another secret")
        for index, target in enumerate(pair.reload):
            _shown_without_secrets(target, secrets, f"secrets.{pair.name}.reload[{index}].postgres", fail)
    return Config(
        path=path,
        secrets={name: secrets[name] for name in ordered},
        certificates=certificates,
        backup=backup,
        compose=_compose(top.table("compose", _COMPOSE_KEYS, _COMPOSE_SHAPE, {})),
        verify=tuple(_probe(index, item, fail) for index, item in enumerate(_items(top, "verify"))),
        notify=tuple(_notify(index, item, fail) for index, item in enumerate(_items(top, "notify"))),
        optional_services=top.listed("optional_services", "a list of compose service names"),
        stores=_stores(_items(top, "stores"), secrets, fail),
        **_engine(top, secrets),
    )


_SECRET_SHAPE = "a mapping with at least 'type' and 'files'"
_BACKUP_SHAPE = "a mapping with 'directory' and 'retention_days'"
_COMPOSE_SHAPE = "a mapping with 'command', 'project', 'files' and 'single_writer'"


def _items(top: Table, name: str) -> list[Any]:
    """A top-level list (`verify`, `notify`, `stores`); one item alone counts as a list of one."""
    found = top.value(name, [])
    return found if isinstance(found, list) else [found]


def _engine(top: Table, secrets: Mapping[str, SecretSpec]) -> dict[str, Any]:
    """`engine:` and, for Swarm, `swarm: {stack, files}`; `swarm_secret` only makes sense there."""
    engine = top.single("engine", "compose")
    if engine not in ENGINES:
        raise top.fail("engine", f"'{engine}' is not compose or swarm")
    if engine == "compose":
        if top.has("swarm"):
            raise top.fail("swarm", "only applies with engine: swarm")
        for spec in secrets.values():
            if spec.swarm_secret:
                raise top.fail(f"secrets.{spec.name}.swarm_secret", "only applies with engine: swarm")
        return {}
    need = "swarm: {stack: NAME} with engine: swarm (NAME: the name given to docker stack deploy)"
    swarm = Table.of(top.value("swarm"), "swarm", top.fail, ("stack", "files"), need, "stack")
    stack = swarm.required_text("stack", f"expected {need}")
    if not _SWARM_NAME.match(stack):
        raise swarm.fail("stack", f"'{stack}' is not a stack name")
    files = swarm.listed("files", "a list of stack file paths")
    for name in files:
        if _leaves(name):
            raise swarm.fail("files", f"'{name}' leaves the stack root; use a path relative to it")
    return {"engine": "swarm", "swarm": SwarmSpec(stack=stack, files=files)}


def _leaves(name: str) -> bool:
    """Whether a path from the file leaves the stack root (absolute, `..`, or `~`)."""
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts or name.startswith("~")


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


def _secret(name: str, body: Table) -> SecretSpec:
    kind = body.single("type")
    if kind not in TYPES:
        raise body.fail("type", f"unknown type '{kind}' (expected {', '.join(TYPES)} or tls-certificate)")
    files = body.listed("files", "a non-empty list of paths relative to the stack root", required=True)
    for file in files:
        if _leaves(file):
            raise body.fail("files", f"'{file}' leaves the stack root; use a path relative to it")
    length = body.whole("length", _SECRET.length)
    alphabet = body.text("alphabet", _SECRET.alphabet)
    if alphabet not in ALPHABETS:
        raise body.fail("alphabet", f"unknown alphabet '{alphabet}' (expected {', '.join(ALPHABETS)})")
    if kind == "random" and length < MIN_RANDOM_LENGTH:
        raise body.fail("length", f"{length} is too short; random secrets need at least {MIN_RANDOM_LENGTH}")
    if length > MAX_RANDOM_LENGTH:
        raise body.fail("length", f"{length} is too long; at most {MAX_RANDOM_LENGTH}")
    role, depends_on = body.text("role"), body.text("depends_on")
    if kind in ("jwt-token", "jwks") and not depends_on:
        signer = "the secret that signs it" if kind == "jwt-token" else "the HS256 secret whose oct key it carries"
        raise body.fail("depends_on", f"a {kind} needs {signer}")
    if kind == "jwt-token" and not role:
        raise body.fail("role", "a jwt-token needs the JWT 'role' claim")
    copied = body.listed("copied_into", _COPIES)
    if not all(line.strip() and "\n" not in line for line in copied):
        raise body.fail("copied_into", f"expected {_COPIES}")
    for key in ("public", "session_expiry"):
        if body.has(key) and (kind != "jwks" or not re.fullmatch(NAME, str(body.text(key)))):
            raise body.fail(key, "only a jwks takes it, and it names a variable of the stack's env files")
    prefix = body.text("prefix")
    if (kind == "opaque-key") != (prefix is not None) or (prefix is not None and not _OPAQUE_PREFIX.match(prefix)):
        raise body.fail("prefix", "an opaque-key needs a prefix such as sb_publishable_ (and only it takes one)")
    swarm_secret = body.text("swarm_secret")
    if swarm_secret is not None and not _SWARM_NAME.match(swarm_secret):
        raise body.fail("swarm_secret", f"'{swarm_secret}' is not the name of a secret in the stack file")
    services = "a list of compose service or container names"
    expires_in = body.duration("expires_in")
    return SecretSpec(
        name=name,
        type=kind,
        files=files,
        length=length,
        alphabet=alphabet,
        role=role,
        depends_on=depends_on,
        issuer=body.scalar("issuer", _SECRET.issuer),
        expires_in=_SECRET.expires_in if expires_in is None else expires_in,
        auto_rotate=body.flag("auto_rotate", kind not in ("static", "jwks")),
        description=body.scalar("description", _SECRET.description),
        restart_services=body.strings("restart_services", services, None),
        keep_running=body.listed("keep_running", services),
        encrypts_data=body.flag("encrypts_data", _SECRET.encrypts_data),
        apply=_apply(body, kind),
        rotation_period=body.duration("rotation_period"),
        swarm_secret=swarm_secret,
        secret=body.flag("secret", _SECRET.secret),
        prefix=prefix,
        public=body.text("public"),
        session_expiry=body.text("session_expiry", _SECRET.session_expiry) or _SECRET.session_expiry,
        copied_into=copied,
    )


_COPIES = "a list of one-line descriptions (where a copy of the value is kept)"


def _apply(secret: Table, kind: str) -> tuple[PostgresTarget, ...]:
    """`apply:` a PostgreSQL endpoint, or a list of them, whose roles take a random secret first."""
    raw = secret.value("apply")
    if raw is None:
        return ()
    if kind != "random":
        raise secret.fail("apply", "only random secrets can be applied to a live database")
    items = raw if isinstance(raw, list) else [raw]
    targets = []
    for index, item in enumerate(items):
        key = "apply" if len(items) == 1 else f"apply[{index}]"
        shape = "'postgres:' with connection settings and 'roles'"
        entry = secret.inner(key, item, ("postgres",), shape)
        if not entry.has("postgres"):
            raise secret.fail(key, f"expected {shape}")
        body = entry.table("postgres", _POSTGRES_KEYS, "a mapping of connection settings and 'roles'")
        roles = body.listed("roles", "a non-empty list of role names", required=True)
        targets.append(
            _endpoint(
                body,
                roles,
                _ENDPOINT.user,
                after=_after(body),
                allow_cleartext_password=body.flag("allow_cleartext_password", _ENDPOINT.allow_cleartext_password),
                optional=body.flag("optional", _ENDPOINT.optional),
            )
        )
    return tuple(targets)


def _endpoint(body: Table, roles: tuple[str, ...], user: str, **more: Any) -> PostgresTarget:
    """A PostgreSQL where `roles` log in: host, port, database, the user that logs in, its container."""
    return PostgresTarget(
        roles=roles,
        host=body.scalar("host", _ENDPOINT.host),
        port=body.scalar("port", _ENDPOINT.port),
        dbname=body.scalar("dbname", _ENDPOINT.dbname),
        user=body.scalar("user", user),
        container=body.text("container"),
        **more,
    )


def _after(body: Table) -> tuple[AfterStatement, ...]:
    raw = body.value("after", [])
    if not isinstance(raw, list):
        raise body.fail("after", "expected a list of SQL statements")
    statements = []
    for index, item in enumerate(raw):
        where = f"after[{index}]"
        try:
            statement = AfterStatement.from_json(item)
        except ConfigError as exc:
            raise body.fail(where, str(exc)) from None
        for name in statement.params:
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or f"%({name})s" not in statement.sql:
                raise body.fail(f"{where}.params.{name}", "needs a lower-case name used as %(name)s in sql")
        statements.append(statement)
    return tuple(statements)


def _shown_without_secrets(target: object, secrets: Mapping[str, SecretSpec], where: str, fail: Fail) -> None:
    """A connection setting is shown in messages, metadata and the audit log; a `${SECRET}` in one
    would put the secret's value there, so it is refused."""
    for setting in _SHOWN:
        for ref in references(getattr(target, setting, "")):
            if ref in secrets:
                raise fail(
                    f"{where}.{setting}", f"may not use ${{{ref}}}: a secret's value would be shown wherever this is"
                )


def _no_secrets_in_locations(secrets: Mapping[str, SecretSpec], fail: Fail) -> None:
    """No `${SECRET}` where a setting is shown: an endpoint, or an `after` statement's parameter
    (whose `${password}` is the password being set)."""
    for spec in secrets.values():
        for index, target in enumerate(spec.apply):
            where = f"secrets.{spec.name}.apply[{index}].postgres"
            _shown_without_secrets(target, secrets, where, fail)
            for number, statement in enumerate(target.after):
                for param, template in statement.params.items():
                    for ref in references(template):
                        if ref in secrets:
                            key = f"{where}.after[{number}].params.{param}"
                            raise fail(key, f"may not use ${{{ref}}}; ${{password}} is the password being set")


def _backup(body: Table) -> BackupSpec:
    directory = body.scalar("directory", _BACKUP.directory)
    parts = PurePosixPath(directory).parts
    if PurePosixPath(directory).is_absolute() or ".." in parts:
        raise body.fail("directory", f"'{directory}' leaves the stack root")
    if not parts or parts == (".",):
        raise body.fail("directory", f"'{directory}' is the stack root itself; use a folder inside it")
    days = body.whole("retention_days", _BACKUP.retention_days, "a positive number of days", minimum=1)
    return BackupSpec(directory=directory, retention_days=days)


def _compose(body: Table) -> ComposeSpec:
    single = body.listed("single_writer", _SINGLE)
    if not all(item.strip() for item in single):
        raise body.fail("single_writer", f"expected {_SINGLE}")
    command, project = body.value("command"), body.value("project")
    return ComposeSpec(
        command=str(command) if command else None,
        project=str(project) if project else None,
        files=body.listed("files", "a list of compose file paths"),
        single_writer=single,
    )


_SINGLE = "a list of volume names and paths (./volumes/db/data)"


def _probe(index: int, raw: object, fail: Fail) -> Probe:
    key = f"verify[{index}]"
    kinds = [kind for kind in _PROBE_KEYS if isinstance(raw, dict) and kind in raw]
    if len(kinds) != 1:
        raise fail(key, "expected exactly one of http:, postgres: or jwt:")
    kind = kinds[0]
    item = Table.of(raw, key, fail, ("name", kind), "one of http:, postgres: or jwt: and a name")
    body = item.table(kind, _PROBE_KEYS[kind], "a mapping", {})
    name = item.scalar("name", kind if kind == "jwt" else f"{kind} #{index + 1}")
    if kind == "jwt":
        return JwtProbe(name)
    if kind == "postgres":
        role = body.required_text("role", "the role to log in as is required")
        where = _endpoint(body, (role,), role)
        return PostgresProbe(name=name, target=where, secret=body.scalar("secret", _PROBE.secret))
    url = body.required_text("url", "a URL is required")
    headers = body.value("headers", {})
    if not isinstance(headers, dict):
        raise body.fail("headers", "expected a mapping of header names to values")
    timeout = body.single("timeout", _HTTP.timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise body.fail("timeout", f"'{timeout}' is not a number of seconds between 0 and 3600")
    return HttpProbe(
        name=name,
        url=url,
        method=body.scalar("method", _HTTP.method).upper(),
        headers={str(k): str(v) for k, v in headers.items()},
        expect=body.whole("expect", _HTTP.expect, "an HTTP status code"),
        timeout=float(timeout),
    )


def _stores(items: list[Any], secrets: Mapping[str, SecretSpec], fail: Fail) -> tuple[VaultSpec, ...]:
    found = []
    for index, item in enumerate(items):
        key = f"stores[{index}]"
        shape = "'vault:' with a mapping (address, mount, path, secrets, auth, ca_cert)"
        entry = Table.of(item, key, fail, ("vault",), shape)
        found.append(_vault(entry.table("vault", _VAULT_KEYS, shape), secrets))
    seen = set()
    for index, spec in enumerate(found):
        if (spec.address, spec.mount, spec.path) in seen:
            raise fail(f"stores[{index}]", f"{spec.label} at {spec.address} is listed twice")
        seen.add((spec.address, spec.mount, spec.path))
    return tuple(found)


def _vault(body: Table, secrets: Mapping[str, SecretSpec]) -> VaultSpec:
    address = body.required_text("address", "is required (address: ${VAULT_ADDR} or https://vault.example:8200)")
    path = body.required_text("path", "is required (path: the KV path of the stack's secret)")
    mount = body.text("mount", _VAULT.mount) or _VAULT.mount
    for setting, kv_path in (("mount", mount), ("path", path)):
        if not _KV_PATH.match(kv_path.strip("/")) or ".." in kv_path.split("/"):
            raise body.fail(setting, f"'{kv_path}' is not a KV path (letters, digits, '_', '-', '.', separated by '/')")
    listed = body.strings("secrets", "a non-empty list of secret names (leave it out for every secret)", None)
    if listed is not None and not listed:
        raise body.fail("secrets", "expected a non-empty list of secret names (leave it out for every secret)")
    for name in listed or ():
        if name not in secrets:
            raise body.fail("secrets", f"'{name}' is not a secret in this file{did_you_mean(name, secrets)}")
    ca_cert = body.text("ca_cert")
    for setting, value in (("address", address), ("ca_cert", ca_cert)):
        for ref in references(value or ""):
            if ref in secrets:
                raise body.fail(setting, f"may not use ${{{ref}}}: a secret's value would be shown wherever this is")
    if "@" in address.split("//", 1)[-1].split("/", 1)[0]:  # journal and metadata keep this text
        raise body.fail("address", "may not carry a user or password (user:pw@host); the token comes from VAULT_TOKEN")
    auth_shape = "a mapping such as {method: token} or {method: approle, ...}"
    return VaultSpec(
        address=address.strip(),
        path=path.strip("/"),
        secrets=tuple(secrets) if listed is None else tuple(dict.fromkeys(listed)),
        mount=mount.strip("/"),
        auth=_auth(body.table("auth", _AUTH_KEYS, auth_shape, {}, at="method"), secrets),
        ca_cert=ca_cert,
    )


def _auth(body: Table, secrets: Mapping[str, SecretSpec]) -> VaultAuth:
    method = body.single("method", _AUTH.method)
    texts = {name: body.text(name) for name in sorted(_AUTH_KEYS - {"method"})}
    if method == "token":
        extra = [name for name, value in texts.items() if value is not None]
        if extra:
            raise body.fail(extra[0], "only applies to method: approle (a token comes from VAULT_TOKEN or BAO_TOKEN)")
        return VaultAuth()
    if method != "approle":
        raise body.fail("method", f"'{method}' is not token or approle")
    for name, file in (("role_id", "role_id_file"), ("secret_id", "secret_id_file")):
        if (texts[name] is None) == (texts[file] is None):
            raise body.fail(name, f"give one of {name} (a ${{VAR}} from the environment) or {file}")
    secret_id = texts["secret_id"]
    if secret_id is not None and not REFERENCE.fullmatch(secret_id):
        raise body.fail(
            "secret_id", "must be a ${VAR} from the environment (or use secret_id_file), not the value itself"
        )
    for ref in references(f"{texts['role_id']}{secret_id}"):
        if ref in secrets:
            raise body.fail("role_id", f"may not use ${{{ref}}}, a secret this tool rotates")
    return VaultAuth(
        method="approle",
        role_id=texts["role_id"],
        role_id_file=texts["role_id_file"],
        secret_id=secret_id,
        secret_id_file=texts["secret_id_file"],
        mount=(texts["mount"] or _AUTH.mount).strip("/"),
    )


def _notify(index: int, item: object, fail: Fail) -> str:
    """One `notify:` URL, written alone or as {url: ...}."""
    key = f"notify[{index}]"
    url = Table.of(item, key, fail, ("url",), "a URL").value("url") if isinstance(item, dict) else item
    if not isinstance(url, str) or not _URL.match(url):
        raise fail(
            key, "expected a webhook URL (https://...) or an Apprise URL (mailto://, ntfy://, discord://, json://, ...)"
        )
    return url


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

"""The rules a `secrets-config.yaml` must follow: every setting checked, every error one line that
names its key path (`secrets.JWT_SECRET.length`), defaults written once."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ConfigError, did_you_mean
from ..interpolation import NAME, REFERENCE, references
from .model import (
    ALPHABETS,
    DEFAULT_JWT_LIFETIME,
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

_OPAQUE_PREFIX = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*_$")  # sb_publishable_, sb_secret_


TOP_LEVEL_KEYS = frozenset(
    {"secrets", "backup", "compose", "engine", "swarm", "verify", "notify", "optional_services", "stores"}
)


ENGINES = ("compose", "swarm")


_SWARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a stack or Swarm secret name


Fail = Callable[[str, str], ConfigError]  # (key, message) -> the error naming file and key


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


def parse_duration(value: object, where: str) -> int:
    """Seconds in `30d`, `12h`, `5y` or a plain number of seconds."""
    match = _DURATION.match(str(value).strip())
    if isinstance(value, bool) or match is None:
        raise ConfigError(f"{where}: '{value}' is not a duration such as 3600, 12h, 30d or 5y")
    return int(match[1]) * _UNITS[match[2]]


def build(path: Path, raw: Any) -> Config:
    """The validated configuration that the YAML of `path` (already parsed, as `raw`) describes."""

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
    from ..certificates import parse as certificate  # deferred: only a stack with certificates needs it

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


_COMPOSE_KEYS = ("command", "project", "files", "single_writer")


def _compose(raw: Any, fail: Fail) -> ComposeSpec:
    if not isinstance(raw, dict):
        raise fail("compose", "expected a mapping with 'command', 'project', 'files' and 'single_writer'")
    unknown = sorted(str(k) for k in set(raw) - set(_COMPOSE_KEYS))
    if unknown:
        raise fail(f"compose.{unknown[0]}", f"unknown setting{did_you_mean(unknown[0], _COMPOSE_KEYS)}")
    files = raw.get("files") or []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise fail("compose.files", "expected a list of compose file paths")
    single = raw.get("single_writer") or []
    if not isinstance(single, list) or not all(isinstance(v, str) and v.strip() for v in single):
        raise fail("compose.single_writer", "expected a list of volume names and paths (./volumes/db/data)")
    command = raw.get("command")
    project = raw.get("project")
    return ComposeSpec(
        command=str(command) if command else None,
        project=str(project) if project else None,
        files=tuple(files),
        single_writer=tuple(single),
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

"""Every value that enters the stack is checked against its secret's spec before anything changes.

A value is generated, pulled from a secret store, or restored from a backup; the store and the
backups are input like any other. A value that compose would read differently from how it was
written, or that would lock a database (an empty password clears a role's password in PostgreSQL),
is refused with one line naming the secret and where it came from, and nothing is touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from . import envfile
from .config import ALPHABETS, Config, SecretSpec
from .envfile import EnvFile
from .errors import UnsafeValue
from .generate import Secret, verify_jwt
from .jwks import keys_of, oct_k, opaque_problem, verify_with_jwks
from .signingkeys import key_state, signing_kid

__all__ = ["check_changes", "check_restored", "unsafe_password"]


def unsafe_password(value: str) -> str | None:
    """Why `value` may not be set as a database password, or None: an empty one clears the role's
    password (nothing can log in), and a control character or a megabyte of text cannot be proven."""
    return envfile.unfit(value)


def _spec_problem(spec: SecretSpec, value: str, signer: str | None, by_set: bool = False) -> str | None:
    """Why `value` does not fit `spec` as configured (length, alphabet, signature), or None. `by_set`:
    the signer is a key set, whose signing EC key must have signed the token (ES256, its kid)."""
    if spec.type == "random":
        if len(value) != spec.length:
            return f"is {len(value)} characters long, and the configuration says {spec.length}"
        if not set(value) <= set(ALPHABETS[spec.alphabet]):
            return f"holds characters outside its configured alphabet ({spec.alphabet})"
    if spec.type == "opaque-key":
        return opaque_problem(value, spec.prefix or "")
    if spec.type == "jwks":
        try:
            octs = [k.get("k") for k in keys_of(value) if k.get("kty") == "oct"]
        except ValueError:
            return "is not a JSON key set"
        if signer is None or not octs or any(k != oct_k(signer) for k in octs):
            return f"does not carry {spec.depends_on} as its oct key"
        if spec.public is not None:
            try:
                key_state(value)
            except ValueError as exc:
                return str(exc)
    if spec.type == "jwt-token":
        import jwt  # deferred with its cryptography backend

        if signer is None:
            return f"cannot be checked: {spec.depends_on} has no value"
        try:
            if by_set:
                if jwt.get_unverified_header(value).get("kid") != signing_kid(signer):
                    return f"is not signed by the signing key of {spec.depends_on} (its kid differs)"
                claims = verify_with_jwks(value, signer)
            else:
                claims = verify_jwt(Secret(value), Secret(signer))
        except (jwt.InvalidTokenError, ValueError):
            return f"is not a JWT signed by {spec.depends_on}"
        if claims.get("role") != spec.role:
            return f"carries role {str(claims.get('role'))[:40]!r}, and the configuration says {spec.role!r}"
    return None


def _by_set(config: Config, spec: SecretSpec) -> bool:
    signer = config.secrets.get(spec.depends_on or "")
    return spec.type == "jwt-token" and signer is not None and signer.type == "jwks"


def _quoting_problem(name: str, value: str, files: Mapping[str, EnvFile], names: Iterable[str]) -> str | None:
    for file in names:
        parsed = files.get(file)
        for quote in sorted(parsed.quotes(name)) if parsed is not None else ():
            problem = envfile.unwritable(value, quote)
            if problem is not None:
                return f"{problem} (in {file})"
    return None


def check_changes(
    config: Config, new: Mapping[str, tuple[Secret, str]], files: Mapping[str, EnvFile], current: Mapping[str, str]
) -> None:
    """Refuse the first of `new` (secret -> value and where it came from) that is not safe to write in
    every file that holds it, or does not fit its spec; a `jwt-token` must verify with the value its
    signer will have. `current` holds the values that do not change."""
    for name, (value, source) in new.items():
        spec = config.secrets[name]
        raw = value.reveal()
        problem = _quoting_problem(name, raw, files, spec.files)
        if problem is None and spec.apply:
            problem = unsafe_password(raw)
        if problem is None:
            signer = spec.depends_on or ""
            signed = new[signer][0].reveal() if signer in new else current.get(signer)
            problem = _spec_problem(spec, raw, signed, _by_set(config, spec))
        if problem is not None:
            raise UnsafeValue(f"{name} {source} {problem}; nothing was changed", key=name)
    for spec in config.secrets.values():  # a token that stays must verify with a signer that changes
        signer = spec.depends_on or ""
        if spec.type in ("jwt-token", "jwks") and signer in new and spec.name not in new and current.get(spec.name):
            key, source = new[signer]
            problem = _spec_problem(spec, current[spec.name], key.reveal(), _by_set(config, spec))
            if problem is not None:
                raise UnsafeValue(
                    f"{spec.name} (unchanged) {problem} with the new {signer} {source}; nothing was changed",
                    key=spec.name,
                )
    _check_tokens_against_sets(config, new, current)


def _check_tokens_against_sets(
    config: Config, new: Mapping[str, tuple[Secret, str]], current: Mapping[str, str]
) -> None:
    """Where the stack keeps key sets (JWT_KEYS, JWT_JWKS), every HS256 token it holds must verify against
    each as PostgREST checks it once the plan is applied: its kid's key, or any key without one."""
    final = {**current, **{name: value.reveal() for name, (value, _) in new.items()}}
    kinds = {name: config.secrets[name].type for name in final if name in config.secrets}
    sets = [name for name, kind in kinds.items() if kind == "jwks" and final[name]]  # empty: not opted in
    signers = {s.depends_on for s in config.secrets.values() if s.depends_on}
    if not sets or not any(kinds.get(name) in ("jwks", "jwt-token") or name in signers for name in new):
        return
    import jwt

    for token in (name for name, kind in kinds.items() if kind == "jwt-token"):
        for keys in sets:
            try:
                verify_with_jwks(final[token], final[keys])
            except (jwt.InvalidTokenError, ValueError):
                raise UnsafeValue(
                    f"{token} would not verify against {keys} as PostgREST checks it; nothing was changed", key=token
                ) from None


def check_restored(config: Config, wanted: Mapping[str, bytes], current: Mapping[str, EnvFile], source: str) -> None:
    """Refuse a backup whose files would put an unsafe value of a configured secret back: what compose
    would misread, or a database password that would lock the database. Length and alphabet are not
    held against a backup: it may hold the values from before the tool was adopted."""
    for file, data in wanted.items():
        parsed = envfile.from_bytes(data)
        now = current.get(file)
        for name in sorted(set(config.secrets) & parsed.names()):
            value = parsed.get(name) or ""
            if now is not None and now.get(name) == value:
                continue  # unchanged: a restore does not make it any worse
            if config.secrets[name].apply:
                problem = unsafe_password(value) or _quoting_problem(name, value, {file: parsed}, [file])
            elif value:  # an empty value that is not a password is how the file was, and compose read it so
                problem = _quoting_problem(name, value, {file: parsed}, [file])
            else:
                problem = None
            if problem is not None:
                raise UnsafeValue(f"{source}: {name} {problem}; nothing was changed", key=name)

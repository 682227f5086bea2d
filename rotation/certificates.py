"""TLS certificates as rotated secrets: a certificate and its key in files of the stack, issued by a
local CA (or self-signed), due by their expiry, reloaded by the servers that present them.

The configuration (`type: tls-certificate` under `secrets:`) becomes a `CertificateSpec`; `issue`
makes the new pair with the `cryptography` library (imported only when a certificate is read or
made); `inspect` describes one without key material: subject, SANs, validity, SHA-256 fingerprint.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, UnsafeValue
from .fsio import inside, read_bounded

__all__ = [
    "KEY_TYPES",
    "CertificateSpec",
    "Described",
    "Issued",
    "PostgresReload",
    "SignalReload",
    "described",
    "expiries",
    "inspect",
    "issue",
    "parse",
]

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519")
MAX_PEM = 1_000_000
_KEYS = {
    "type",
    "cert",
    "key",
    "ca",
    "common_name",
    "sans",
    "key_type",
    "days",
    "renew_before",
    "reload",
    "restart_services",
    "auto_rotate",
    "description",
}
_PG_KEYS = {"host", "port", "dbname", "user", "password"}
_SIGNALS = ("HUP", "USR1", "USR2", "TERM", "INT", "QUIT")
Fail = Callable[[str, str], ConfigError]

if TYPE_CHECKING:
    from .config.schema import Table


@dataclass(frozen=True, slots=True)
class PostgresReload:
    """A PostgreSQL that presents the certificate: `pg_reload_conf()` over a connection, then a
    handshake over its SSLRequest. The settings are templates (`${VAR}` from the env files)."""

    host: str = "localhost"
    port: str = "5432"
    dbname: str = "postgres"
    user: str = "postgres"
    password: str = ""

    @property
    def label(self) -> str:
        return f"postgres {self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SignalReload:
    """A service that rereads its certificate on a signal, sent through the engine; `tls`
    (host:port) is where its handshake proves it, if it can be reached from here."""

    service: str
    signal: str = "HUP"
    tls: str | None = None

    @property
    def label(self) -> str:
        return f"SIG{self.signal} to {self.service}"


@dataclass(frozen=True, slots=True)
class CertificateSpec:
    """One certificate and key of the stack, as the configuration describes them."""

    name: str
    cert: str
    key: str
    common_name: str
    sans: tuple[str, ...] = ()
    ca_cert: str | None = None
    ca_key: str | None = None
    key_type: str = "ec-p256"
    days: int = 90
    renew_before: int = 30 * 86400
    reload: tuple[PostgresReload | SignalReload, ...] = ()
    restart_services: tuple[str, ...] = ()
    auto_rotate: bool = True
    description: str = ""

    @property
    def files(self) -> tuple[str, ...]:
        """The files a rotation writes: the certificate and its key (the CA's are only read)."""
        return (self.cert, self.key)


_DEFAULT = CertificateSpec(name="", cert="", key="", common_name="")  # the defaults, written once above


@dataclass(frozen=True, slots=True)
class Described:
    """A certificate as people and scripts see it: never key material."""

    subject: str
    sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    fingerprint: str  # SHA-256 of the DER, as hex pairs

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "sans": list(self.sans),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "fingerprint": self.fingerprint,
        }

    def line(self) -> str:
        return (
            f"{self.subject}, SANs {', '.join(self.sans) or '(none)'}; valid {self.not_before:%Y-%m-%d} to "
            f"{self.not_after:%Y-%m-%d}; sha256 {self.fingerprint[:23]}..."
        )


@dataclass(frozen=True, slots=True)
class Issued:
    """A new certificate and its key, PEM-encoded, and how it is described."""

    cert_pem: bytes
    key_pem: bytes
    described: Described

    def __repr__(self) -> str:  # the key never reaches a log or a traceback
        return f"Issued({self.described.subject}, sha256 {self.described.fingerprint[:11]}...)"


def parse(name: str, raw: Mapping[str, Any], fail: Fail) -> CertificateSpec:
    """A `type: tls-certificate` entry, validated; every error names its key under secrets.NAME
    (`fail` spells an error for a whole key path)."""
    from .config.schema import Table  # the configuration's typed accessors (config imports this module late)

    body = Table.of(raw, f"secrets.{name}", fail, _KEYS, "a mapping with cert, key and common_name")
    paths = {key: _path(body, key) for key in ("cert", "key")}
    ca_cert = ca_key = None
    if body.has("ca"):
        shape = "{cert: PATH, key: PATH}: the CA that signs it (leave it out for self-signed)"
        ca = body.table("ca", ("cert", "key"), shape)
        if not (ca.has("cert") and ca.has("key")):
            raise body.fail("ca", f"expected {shape}")
        ca_cert, ca_key = _path(ca, "cert"), _path(ca, "key")
    common_name = body.text("common_name")
    if common_name is None or not common_name.strip() or len(common_name) > 64:
        raise body.fail("common_name", "expected the certificate's common name (at most 64 characters)")
    sans = body.listed("sans", "a list of DNS names and IP addresses")
    bad = [san for san in sans if not _san_ok(san)]
    if bad:
        raise body.fail("sans", f"'{bad[0][:80]}' is not a DNS name or an IP address")
    key_type = body.single("key_type", _DEFAULT.key_type)
    if key_type not in KEY_TYPES:
        raise body.fail("key_type", f"'{key_type}' is not one of {', '.join(KEY_TYPES)}")
    days = body.whole("days", _DEFAULT.days, "a validity in days, 1 to 3650", minimum=1)
    if days > 3650:
        raise body.fail("days", f"'{days}' is not a validity in days, 1 to 3650")
    renew = body.duration("renew_before")
    if renew is None:
        renew = days * 86400 // 3  # a third of the lifetime, as `step ca renew` renews at two thirds
    if renew >= days * 86400:
        raise body.fail("renew_before", f"must be shorter than the validity ({days} days), or it is always due")
    reloads = body.value("reload", [])
    if not isinstance(reloads, list):
        raise body.fail("reload", f"expected a list of {_RELOAD}")
    return CertificateSpec(
        name=name,
        cert=paths["cert"],
        key=paths["key"],
        common_name=common_name,
        sans=sans,
        ca_cert=ca_cert,
        ca_key=ca_key,
        key_type=key_type,
        days=days,
        renew_before=renew,
        reload=tuple(_reload(body, index, item) for index, item in enumerate(reloads)),
        restart_services=body.listed("restart_services", "a list of compose service or container names"),
        auto_rotate=body.flag("auto_rotate", _DEFAULT.auto_rotate),
        description=body.scalar("description", _DEFAULT.description),
    )


_RELOAD = "{postgres: {...}} or {signal: {service, signal}}"


def _path(body: Table, key: str) -> str:
    value = body.text(key)
    if not value:
        raise body.fail(key, "expected a path relative to the stack root")
    posix = PurePosixPath(value)
    if posix.is_absolute() or ".." in posix.parts or value.startswith("~"):
        raise body.fail(key, f"'{value}' leaves the stack root; use a path relative to it")
    return value


def _san_ok(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(re.fullmatch(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*", value))


def _reload(certificate: Table, index: int, item: object) -> PostgresReload | SignalReload:
    if not (isinstance(item, dict) and len(item) == 1 and {*item} <= {"postgres", "signal"}):
        raise certificate.fail(f"reload[{index}]", f"expected {_RELOAD}")  # one kind, and only one
    entry = certificate.inner(f"reload[{index}]", item, ("postgres", "signal"), _RELOAD)
    if entry.has("postgres"):
        body = entry.table("postgres", _PG_KEYS, "a mapping of host, port, dbname, user and password")
        texts = {key: body.scalar(key, "") for key in body.raw if body.has(key)}
        if "port" in texts and not re.fullmatch(r"\d{1,5}|\$\{[A-Za-z_][A-Za-z0-9_]*\}", texts["port"]):
            raise body.fail("port", f"'{texts['port'][:20]}' is not a port number or a ${{VAR}}")
        return PostgresReload(**texts)
    body = entry.table("signal", ("service", "signal", "tls"), "a mapping of service, signal and tls")
    service = body.required_text("service", "expected the compose service (or container) to signal")
    sig = body.scalar("signal", SignalReload("").signal).upper().removeprefix("SIG")
    if sig not in _SIGNALS:
        raise body.fail("signal", f"'{sig}' is not one of {', '.join(_SIGNALS)}")
    tls = body.text("tls")
    if tls is not None and not re.fullmatch(r"[A-Za-z0-9.-]+:\d{1,5}", tls):
        raise body.fail("tls", "expected host:port where the service's handshake can be checked")
    return SignalReload(service, sig, tls)


def _read(root: Path, name: str, what: str) -> bytes:
    try:
        return read_bounded(inside(root, name, what).resolve(), MAX_PEM)
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file ({what})") from None


def inspect(pem: bytes, source: str) -> Described:
    """The certificate in `pem`, described; an `UnsafeValue` naming `source` when it is none."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise UnsafeValue(f"{source} is not a PEM certificate") from None
    return _described(cert, hashes)


def _described(cert: Any, hashes: Any) -> Described:
    from cryptography import x509

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple(str(v) for v in names.get_values_for_type(x509.DNSName)) + tuple(
            str(v) for v in names.get_values_for_type(x509.IPAddress)
        )
    except x509.ExtensionNotFound:
        sans = ()
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return Described(
        subject=cert.subject.rfc4514_string(),
        sans=sans,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=":".join(digest[i : i + 2] for i in range(0, len(digest), 2)),
    )


def described(root: Path, spec: CertificateSpec) -> Described | None:
    """The certificate the stack holds now, or None where its file does not exist yet."""
    try:
        data = _read(root, spec.cert, f"secrets.{spec.name}.cert")
    except ConfigError:
        return None
    return inspect(data, spec.cert)


def expiries(root: Path, specs: Mapping[str, CertificateSpec]) -> dict[str, float | None]:
    """Each certificate's notAfter as a Unix time (None: the stack has none yet), for `due` and `check`."""
    found: dict[str, float | None] = {}
    for spec in specs.values():
        now = described(root, spec)
        found[spec.name] = None if now is None else now.not_after.timestamp()
    return found


def _new_key(key_type: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if key_type.startswith("ec-"):
        return ec.generate_private_key(ec.SECP256R1() if key_type == "ec-p256" else ec.SECP384R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type.split("-")[1]))


def _signer(root: Path, spec: CertificateSpec) -> tuple[Any, Any] | None:
    """The CA's certificate and key, checked to belong together; None for a self-signed certificate."""
    if spec.ca_cert is None or spec.ca_key is None:
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    where = f"secrets.{spec.name}.ca"
    try:
        ca = x509.load_pem_x509_certificate(_read(root, spec.ca_cert, f"{where}.cert"))
    except ValueError:
        raise ConfigError(f"{spec.ca_cert}: not a PEM certificate ({where}.cert)", key=f"{where}.cert") from None
    try:
        key = serialization.load_pem_private_key(_read(root, spec.ca_key, f"{where}.key"), password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"{spec.ca_key}: not an unencrypted PEM private key ({where}.key)", key=f"{where}.key"
        ) from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if ca.public_key().public_bytes(*raw) != key.public_key().public_bytes(*raw):
        raise ConfigError(
            f"{spec.ca_key} is not the key of {spec.ca_cert} ({where}): nothing was changed", key=f"{where}.key"
        )
    return ca, key


def issue(root: Path, spec: CertificateSpec, now: datetime | None = None) -> Issued:
    """A new key and certificate for `spec`, signed by its CA (checked first) or by itself."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    signer = _signer(root, spec)
    moment = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    key = _new_key(spec.key_type)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name)])
    issuer, signing_key = (signer[0].subject, signer[1]) if signer else (subject, key)
    names: list[x509.GeneralName] = []
    for san in spec.sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - timedelta(minutes=5))  # a server whose clock is a little behind
        .not_valid_after(moment + timedelta(days=spec.days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if signer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer[1].public_key()), critical=False
        )
    algorithm = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(signing_key, algorithm)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), key_pem, _described(cert, hashes))

"""A certificate and key of the stack, rotated against a real PostgreSQL with `ssl = on` that reads
them from the stack: issued by the stack's CA, written through the journal with the key's mode and
owner kept, reloaded with pg_reload_conf() and proven by a handshake over PostgreSQL's SSLRequest."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import socket
import ssl
import stat
import struct
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from . import pgserver
from .conftest import CLI, EXAMPLE, REPO, edited_config, example_files, tree, unavailable

pytestmark = pytest.mark.postgres


def pem_key(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def signed(subject: str, key: Any, issuer: tuple[x509.Name, Any] | None, *, ca: bool, days: int = 90) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0] if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        sans = [x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(pem: bytes) -> str:
    digest = x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def presented(port: int) -> str:
    """What the server presents after an SSLRequest, read with the standard library alone."""
    with socket.create_connection(("127.0.0.1", port), 5) as raw:
        raw.sendall(struct.pack("!II", 8, 80877103))
        assert raw.recv(1) == b"S"
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True) or b""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class TLSStack:
    """An example stack whose `certs/` a real PostgreSQL serves: root, server and its files."""

    def __init__(self, root: Path, server: pgserver.Server) -> None:
        self.root, self.server = root, server
        self.certs = root / "certs"

    def connect(self, **kw: Any) -> psycopg.Connection[Any]:
        return self.server.connect(sslmode="require", **kw)

    def verify_full(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="localhost",
            port=self.server.port,
            dbname="postgres",
            user=pgserver.ADMIN,
            password=pgserver.ADMIN_PASSWORD,
            sslmode="verify-full",
            sslrootcert=str(self.certs / "ca.crt"),
        )


def _stack_with_certs(base: Path, presented_file: str) -> tuple[Path, dict[str, str]]:
    """The example stack with a CA and a server certificate; the server reads `presented_file`."""
    root = base / "stack"
    for name in example_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EXAMPLE / name, root / name)
    shutil.copy(REPO / "secrets-config.yaml", root / "secrets-config.yaml")
    certs = root / "certs"
    certs.mkdir()
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_pem = signed("rotation test CA", ca_key, None, ca=True, days=3650)
    ca_name = x509.load_pem_x509_certificate(ca_pem).subject
    server_pem = signed("localhost", server_key, (ca_name, ca_key), ca=False)
    (certs / "ca.crt").write_bytes(ca_pem)
    (certs / "ca.key").write_bytes(pem_key(ca_key))
    (certs / "server.crt").write_bytes(server_pem)
    (certs / "server.key").write_bytes(pem_key(server_key))
    if presented_file != "server.crt":
        (certs / presented_file).write_bytes(server_pem)
    os.chmod(certs / "ca.key", 0o600)
    for path in (base, root, certs):
        os.chmod(path, 0o755)
    for name in ("server.crt", "ca.crt", presented_file):
        os.chmod(certs / name, 0o644)
    group = pwd.getpwnam("postgres").pw_gid if os.geteuid() == 0 else os.getgid()
    os.chown(certs / "server.key", 0, group) if os.geteuid() == 0 else None
    os.chmod(certs / "server.key", 0o640)  # root-owned and group-readable, as PostgreSQL accepts it
    settings = {"ssl": "on", "ssl_cert_file": str(certs / presented_file), "ssl_key_file": str(certs / "server.key")}
    return root, settings


@pytest.fixture
def tls_stack(request: pytest.FixtureRequest) -> Iterator[TLSStack]:
    if pgserver.binaries() is None:
        unavailable("PostgreSQL server binaries")
    base = Path(tempfile.mkdtemp(prefix="rotation-tls-"))  # readable by the server's own user
    presented_file = getattr(request, "param", "server.crt")
    try:
        root, settings = _stack_with_certs(base, presented_file)
        with pgserver.running(settings) as server:
            env = root / ".env"
            env.write_bytes(env.read_bytes() + f"TLS_ADMIN_PASSWORD={pgserver.ADMIN_PASSWORD}\n".encode())
            with edited_config(root) as raw:
                raw["secrets"]["DB_TLS"] = {
                    "type": "tls-certificate",
                    "cert": "certs/server.crt",
                    "key": "certs/server.key",
                    "ca": {"cert": "certs/ca.crt", "key": "certs/ca.key"},
                    "common_name": "localhost",
                    "sans": ["localhost", "127.0.0.1"],
                    "days": 90,
                    "reload": [
                        {
                            "postgres": {
                                "host": "127.0.0.1",
                                "port": server.port,
                                "user": pgserver.ADMIN,
                                "password": "${TLS_ADMIN_PASSWORD}",
                            }
                        }
                    ],
                    "description": "TLS certificate of the database",
                }
            yield TLSStack(root, server)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_rotated_certificate_is_reloaded_proven_and_restored(tls_stack: TLSStack, inproc: CLI) -> None:
    root, certs = tls_stack.root, tls_stack.certs
    old_cert, old_key = (certs / "server.crt").read_bytes(), (certs / "server.key").read_bytes()
    key_before = os.stat(certs / "server.key")
    assert presented(tls_stack.server.port) == fingerprint(old_cert)
    dry = inproc("rotate", "--secrets", "DB_TLS", "--dry-run", cwd=tls_stack.root)
    assert dry.code == 0 and "CN=localhost" in dry.out and "127.0.0.1" in dry.out and "sha256" in dry.out, dry.text
    assert (certs / "server.crt").read_bytes() == old_cert
    with tls_stack.connect() as before:
        ran = inproc("rotate", "--secrets", "DB_TLS", "--json", cwd=tls_stack.root)
        assert ran.code == 0, ran.text
        assert before.execute("SELECT 1").fetchone() == (1,)  # a connection opened before stays alive
    result = json.loads(ran.out)
    new_cert = (certs / "server.crt").read_bytes()
    assert new_cert != old_cert and (certs / "server.key").read_bytes() != old_key
    assert presented(tls_stack.server.port) == fingerprint(new_cert) == result["certificates"][0]["new"]["fingerprint"]
    assert result["reloaded"] and "presents" in result["reloaded"][0]
    with tls_stack.verify_full() as checked:  # the chain and the host name hold against the stack's CA
        assert checked.execute("SELECT 1").fetchone() == (1,)
    key_after = os.stat(certs / "server.key")
    assert stat.S_IMODE(key_after.st_mode) == 0o640 and (key_after.st_uid, key_after.st_gid) == (
        key_before.st_uid,
        key_before.st_gid,
    )
    assert stat.S_IMODE(os.stat(certs / "server.crt").st_mode) == 0o644
    assert (certs / "ca.crt").read_bytes() and (certs / "ca.key").stat().st_mode & 0o777 == 0o600
    shown = ran.text + (root / "backups/secrets/audit.log").read_text()
    shown += "".join(p.read_text() for p in (root / "backups/secrets").glob("*/metadata.json"))
    assert b"PRIVATE KEY" not in shown.encode() and "PRIVATE KEY" not in dry.text

    back = inproc("restore", "--latest", cwd=tls_stack.root)
    assert back.code == 0 and "presents" in back.out, back.text
    assert (certs / "server.crt").read_bytes() == old_cert and (certs / "server.key").read_bytes() == old_key
    assert presented(tls_stack.server.port) == fingerprint(old_cert)


def test_a_ca_whose_key_does_not_match_changes_nothing(tls_stack: TLSStack, inproc: CLI) -> None:
    (tls_stack.certs / "ca.key").write_bytes(pem_key(ec.generate_private_key(ec.SECP256R1())))
    before = tree(tls_stack.root)
    ran = inproc("rotate", "--secrets", "DB_TLS", cwd=tls_stack.root)
    assert ran.code == 2 and ran.err.count("\n") == 1 and "certs/ca.key is not the key of certs/ca.crt" in ran.err
    after = {k: v for k, v in tree(tls_stack.root).items() if not k.endswith(("audit.log", ".lock"))}
    assert after == {k: v for k, v in before.items() if not k.endswith(("audit.log", ".lock"))}


@pytest.mark.parametrize("tls_stack", ["other.crt"], indirect=True)
def test_a_server_that_keeps_another_certificate_puts_the_old_one_back(tls_stack: TLSStack, inproc: CLI) -> None:
    """The server reads certs/other.crt, not the file the configuration rotates."""
    certs = tls_stack.certs
    old_cert = (certs / "server.crt").read_bytes()
    ran = inproc("rotate", "--secrets", "DB_TLS", cwd=tls_stack.root)
    assert ran.code == 1, ran.text
    assert (
        f"still presents sha256 {fingerprint(old_cert)[:23]}" in ran.err
        and "the old certificate and key are back" in ran.err
    )
    assert (certs / "server.crt").read_bytes() == old_cert
    assert presented(tls_stack.server.port) == fingerprint(old_cert)


def test_a_certificate_is_due_by_its_expiry(tls_stack: TLSStack, inproc: CLI) -> None:
    with edited_config(tls_stack.root) as raw:
        raw["secrets"]["DB_TLS"]["renew_before"] = "30d"
    assert inproc("due", cwd=tls_stack.root).code == 0  # 89 days left
    with edited_config(tls_stack.root) as raw:
        raw["secrets"]["DB_TLS"] |= {"days": 365, "renew_before": "95d"}  # 90 days left: due
    ran = inproc("due", "--json", cwd=tls_stack.root)
    assert ran.code == 1 and [d["name"] for d in json.loads(ran.out)] == ["DB_TLS"]
    assert json.loads(ran.out)[0]["expires"]


MINIMAL = {"type": "tls-certificate", "cert": "certs/server.crt", "key": "certs/server.key", "common_name": "db"}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"ca": {"cert": "certs/ca.crt"}}, "secrets.DB_TLS.ca"),
        ({"cert": "../outside.crt"}, "secrets.DB_TLS.cert"),
        ({"key_type": "dsa-1024"}, "secrets.DB_TLS.key_type"),
        ({"days": 0}, "secrets.DB_TLS.days"),
        ({"days": 30, "renew_before": "30d"}, "secrets.DB_TLS.renew_before"),
        ({"sans": ["ok.example", "not a name"]}, "secrets.DB_TLS.sans"),
        ({"reload": [{"postgres": {"host": "${POSTGRES_PASSWORD}"}}]}, "secrets.DB_TLS.reload[0].postgres.host"),
        ({"reload": [{"postgres": {"port": "5432; DROP"}}]}, "secrets.DB_TLS.reload[0].postgres.port"),
        ({"reload": [{"signal": {"service": "db", "signal": "KILL"}}]}, "secrets.DB_TLS.reload[0].signal.signal"),
        ({"reload": [{"ssh": {}}]}, "secrets.DB_TLS.reload[0]"),
        ({"colour": "blue"}, "secrets.DB_TLS.colour"),
    ],
)
def test_a_bad_certificate_setting_is_one_line_naming_its_key(stack: Path, inproc: CLI, change: dict, key: str) -> None:
    with edited_config(stack) as raw:
        raw["secrets"]["DB_TLS"] = {**MINIMAL, **change}
    ran = inproc("rotate", "--dry-run", "--json")
    error = json.loads(ran.out)
    assert ran.code == 2 and error["key"] == key and "\n" not in error["error"], error


def test_guard_finds_a_certificates_private_key_pasted_anywhere(tls_stack: TLSStack, inproc: CLI) -> None:
    key = (tls_stack.certs / "server.key").read_bytes().decode()
    leak = tls_stack.root / "notes.md"
    leak.write_text("the db key, for later:\n" + key)
    ran = inproc("guard", "notes.md", "certs/server.crt", cwd=tls_stack.root)
    assert ran.code == 1 and "DB_TLS (private key)" in ran.out + ran.err, ran.text
    assert key.splitlines()[1] not in ran.text
    leak.write_text("nothing here\n")
    assert inproc("guard", "notes.md", "certs/server.crt", cwd=tls_stack.root).code == 0  # the certificate is public


def test_a_certificate_the_stack_does_not_hold_is_left_alone_by_a_plain_rotation(stack: Path, inproc: CLI) -> None:
    with edited_config(stack) as raw:
        raw["secrets"]["DB_TLS"] = dict(MINIMAL)
    ran = inproc("rotate", "--dry-run", "--json")
    assert ran.code == 0 and any("DB_TLS is left alone" in w for w in json.loads(ran.out)["warnings"]), ran.text
    named = inproc("rotate", "--secrets", "DB_TLS", "--dry-run")
    assert named.code == 2 and "does not exist yet" in named.err

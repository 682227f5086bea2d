"""Servers that present a certificate of the stack: reload them, then prove with a TLS handshake
which certificate they present now. PostgreSQL speaks TLS only after its SSLRequest."""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import time
from collections.abc import Callable, Mapping

from ..certificates import PostgresReload, SignalReload
from ..config import interpolate
from ..errors import DatabaseError, RotationError

__all__ = ["presented", "reload_and_prove"]

SSL_REQUEST = struct.pack("!II", 8, 80877103)  # PostgreSQL protocol: the SSLRequest message
PROVE_WITHIN = 10.0  # seconds a reloaded server has to present the new certificate


def presented(host: str, port: int, *, postgres: bool, timeout: float = 5.0) -> str:
    """The SHA-256 fingerprint (hex pairs) of the certificate the server at host:port presents."""
    try:
        with socket.create_connection((host, port), timeout) as raw:
            if postgres:
                raw.sendall(SSL_REQUEST)
                if raw.recv(1) != b"S":
                    raise DatabaseError(f"postgres {host}:{port} refuses TLS (is ssl = on?)")
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # a fingerprint is compared, not a chain trusted
            with context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True) or b""
    except (OSError, ssl.SSLError) as exc:
        raise DatabaseError(f"TLS handshake with {host}:{port} failed: {exc}") from None
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _reload_postgres(target: PostgresReload, env: Mapping[str, str | None]) -> tuple[str, int]:
    """`pg_reload_conf()` on the server; where its handshake can be checked."""
    import psycopg

    host, port = interpolate(target.host, env), interpolate(target.port, env)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise DatabaseError(f"{target.label}: the port '{port[:20]}' is not a port number")
    try:
        with psycopg.connect(
            host=host,
            port=port,
            dbname=interpolate(target.dbname, env),
            user=interpolate(target.user, env),
            password=interpolate(target.password, env),
            connect_timeout=10,
            autocommit=True,
        ) as conn:
            conn.execute("SELECT pg_reload_conf()")
    except psycopg.Error as exc:
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseError(f"{target.label}: cannot reload its configuration: {problem}") from None
    return host, int(port)


def reload_and_prove(
    reloads: tuple[PostgresReload | SignalReload, ...],
    fingerprint: str,
    env: Mapping[str, str | None],
    signal: Callable[[str, str], None],
) -> list[str]:
    """Reload every server that presents the certificate, then wait until each one's handshake
    presents `fingerprint`; the lines that say so. A server that still presents another
    certificate is a `RotationError` naming what it presented."""
    checked: list[tuple[str, str, int, bool]] = []
    for target in reloads:
        if isinstance(target, PostgresReload):
            host, port = _reload_postgres(target, env)
            checked.append((target.label, host, port, True))
        else:
            signal(target.service, target.signal)
            if target.tls:
                where, _, number = target.tls.rpartition(":")
                checked.append((target.label, where, int(number), False))
    lines = []
    for label, host, port, postgres in checked:
        deadline = time.monotonic() + PROVE_WITHIN
        while True:
            now = presented(host, port, postgres=postgres)
            if now == fingerprint:
                lines.append(f"{label}: presents sha256 {fingerprint[:23]}...")
                break
            if time.monotonic() > deadline:
                raise RotationError(
                    f"{label} still presents sha256 {now[:23]}... after the reload, not the new certificate's "
                    f"{fingerprint[:23]}... (does its configuration point at the stack's certificate file?)"
                )
            time.sleep(0.2)
    return lines

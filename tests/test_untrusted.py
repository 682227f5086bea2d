"""Values from the store, the backups and the audit log are untrusted input: a hostile or unlucky store
never locks a database or reaches a file unchecked, a store that fails mid-write is settled, and
what is printed from disk or a server is escaped. Against a real OpenBao and a real PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest

from rotation import envfile
from rotation.config import load
from rotation.errors import RecoveryError, StoreError
from rotation.runs import rotate
from rotation.stack import Stack
from rotation.targets import postgres, target_from_json, vault

from . import baoserver, pgserver
from .conftest import CLI, edited_config, one_line_error, stack_password, tree

FILES = (".env", "supabase/docker/.env")


def unique() -> str:
    return f"localai/{uuid.uuid4().hex[:10]}"


def with_store(root: Path, path: str, secrets: list[str], address: str = "${VAULT_ADDR}") -> None:
    with edited_config(root) as raw:
        raw["stores"] = [{"vault": {"address": address, "mount": "secret", "path": path, "secrets": secrets}}]


def env_for(address: str, token: str = baoserver.ROOT_TOKEN) -> dict[str, str]:
    return {"VAULT_ADDR": address, "VAULT_TOKEN": token}


def values(root: Path) -> dict[str, str]:
    parsed = envfile.read(root / ".env")
    return {k: v for k in parsed.names() if (v := parsed.get(k)) is not None}


def files_of(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in FILES}


def journal(root: Path) -> Path:
    return root / "backups/secrets/journal.json"


# Values a store may hand a host, and why each must never reach its files or its database.
BAD_PASSWORDS = {
    "empty": "",  # PostgreSQL takes the verifier of "" as no password: nothing could log in again
    "nul": "abc\0def" * 4,
    "huge": "a" * 1_000_000,
}


@pytest.mark.vault
@pytest.mark.postgres
@pytest.mark.parametrize("kind", sorted(BAD_PASSWORDS))
def test_a_bad_password_from_the_store_never_reaches_the_database(
    pg_stack: Path, pg_server: pgserver.Server, bao: baoserver.Server, inproc: CLI, kind: str
) -> None:
    path = unique()
    with_store(pg_stack, path, ["POSTGRES_PASSWORD"])
    old = stack_password(pg_stack)
    bao.write(path, {"POSTGRES_PASSWORD": BAD_PASSWORDS[kind]})
    before = files_of(pg_stack)
    for args in (("pull", "--dry-run"), ("pull",)):
        ran = inproc(*args, env=env_for(bao.address))
        line = one_line_error(ran)
        assert ran.code == 2 and "POSTGRES_PASSWORD" in line and "nothing was changed" in line, ran.text
        assert BAD_PASSWORDS[kind][:40] not in ran.text or kind == "empty"
    assert pg_server.logs_in("postgres", old) and pg_server.logs_in("supabase_admin", old)
    assert files_of(pg_stack) == before and not journal(pg_stack).exists()
    assert "nothing to finish" in inproc("recover", env=env_for(bao.address)).out


@pytest.mark.postgres
def test_the_database_target_itself_refuses_a_password_that_would_lock_it(
    pg_stack: Path, pg_server: pgserver.Server
) -> None:
    """Below every check of the plan, the target refuses too: an empty password is never sent."""
    from rotation.config import load
    from rotation.errors import DatabaseError
    from rotation.generate import Secret
    from rotation.stack import Stack, merged_env
    from rotation.targets.postgres import PostgresLive, resolved

    stack = Stack(pg_stack, load(pg_stack / "secrets-config.yaml"))
    target = stack.config.secrets["POSTGRES_PASSWORD"].apply[0]
    env = merged_env({name: envfile.read(pg_stack / name) for name in FILES})
    live = PostgresLive(resolved(target, env), stack.databases)
    old = stack_password(pg_stack)
    with pytest.raises(DatabaseError, match="is empty; nothing was changed"):
        live.apply(Secret(old), Secret(""), "POSTGRES_PASSWORD")
    assert pg_server.logs_in("postgres", old)


def signed(key: str, role: str) -> str:
    return jwt.encode({"role": role, "iss": "supabase", "iat": 1, "exp": 2**31}, key, algorithm="HS256")


def unsafe_pulls(current: dict[str, str]) -> dict[str, tuple[dict[str, str], str]]:
    """Store contents a careless or hostile writer leaves, each with the secret the refusal names."""
    other = "x" * 64
    return {
        "interpolation": ({"DASHBOARD_PASSWORD": "${POSTGRES_PASSWORD}"}, "DASHBOARD_PASSWORD"),
        "trailing backslash": ({"DASHBOARD_PASSWORD": "A" * 31 + "\\"}, "DASHBOARD_PASSWORD"),
        "empty beside a comment": ({"VAULT_ENC_KEY": ""}, "VAULT_ENC_KEY"),
        "short key": ({"VAULT_ENC_KEY": "abc"}, "VAULT_ENC_KEY"),
        "empty jwt secret": ({"JWT_SECRET": ""}, "JWT_SECRET"),
        "one-character jwt secret": ({"JWT_SECRET": "x"}, "JWT_SECRET"),
        "anon key not a jwt": ({"ANON_KEY": "not-a-token-at-all"}, "ANON_KEY"),
        "anon key of another signer": ({"ANON_KEY": signed(other, "anon")}, "ANON_KEY"),
        "anon key with the wrong role": ({"ANON_KEY": signed(current["JWT_SECRET"], "service_role")}, "ANON_KEY"),
        "new jwt secret, old keys": ({"JWT_SECRET": "y" * 64}, "ANON_KEY"),
    }


@pytest.mark.vault
def test_pulled_values_are_checked_by_their_spec_and_the_dry_run_checks_the_same(
    stack: Path, bao: baoserver.Server, inproc: CLI
) -> None:
    keys = ["DASHBOARD_PASSWORD", "VAULT_ENC_KEY", "JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY"]
    current = values(stack)
    before = tree(stack)
    for case, (data, named) in unsafe_pulls(current).items():
        path = unique()
        with_store(stack, path, keys)
        bao.write(path, {**{k: current[k] for k in keys}, **data})
        for args in (("pull", "--dry-run"), ("pull",)):  # VAULT_ENC_KEY encrypts data: that refusal is not the point
            ran = inproc(*args, "--accept-data-loss", env=env_for(bao.address))
            line = one_line_error(ran)
            assert ran.code == 2 and named in line and "nothing was changed" in line, (case, ran.text)
        assert {k: v for k, v in tree(stack).items() if k != "secrets-config.yaml"} == {
            k: v for k, v in before.items() if k != "secrets-config.yaml"
        }, case


@pytest.mark.vault
def test_a_good_pull_still_lands(stack: Path, bao: baoserver.Server, inproc: CLI) -> None:
    path = unique()
    with_store(stack, path, ["DASHBOARD_PASSWORD", "JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY"])
    key = "k" * 64
    data = {
        "DASHBOARD_PASSWORD": "0123456789abcdef" * 2,
        "JWT_SECRET": key,
        "ANON_KEY": signed(key, "anon"),
        "SERVICE_ROLE_KEY": signed(key, "service_role"),
    }
    bao.write(path, data)
    ran = inproc("pull", env=env_for(bao.address))
    assert ran.code == 0, ran.text
    assert {k: values(stack)[k] for k in data} == data


def test_a_backup_that_would_put_an_unsafe_password_back_is_refused(pg_stack: Path, inproc: CLI) -> None:
    """Backups are input too: a crafted one must not lock the database through restore."""
    ran = inproc("rotate", "--secrets", "DASHBOARD_PASSWORD")
    assert ran.code == 0, ran.text
    backup = next((pg_stack / "backups/secrets").glob("secrets-backup-*"))
    saved = backup / ".env"
    text = saved.read_text().replace(f"POSTGRES_PASSWORD={stack_password(pg_stack)}", "POSTGRES_PASSWORD=")
    saved.write_text(text)
    before = files_of(pg_stack)
    ran = inproc("restore", "--backup", backup.name)
    assert ran.code == 2 and "POSTGRES_PASSWORD is empty" in one_line_error(ran), ran.text
    assert files_of(pg_stack) == before


# A store that misbehaves at the HTTP level, in front of the real OpenBao.


class Proxy:
    """A TCP proxy in front of the real store that can drop, delay or refuse what passes: the
    failures between a client and a store that no healthy server produces on demand."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.slow_writes = 0  # how many of the next writes (POST/PUT) get their answer only after `delay`
        self.delay = 2.0
        self.requests: list[bytes] = []
        self.closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        """From now on, nothing listens: every connection is refused."""
        if self.closed:
            return
        self.closed = True
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept(); a plain close would leave it listening
        self.listener.close()

    def _serve(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.target) as upstream:
            client.settimeout(5)
            request = client.recv(1 << 20)
            while b"\r\n\r\n" not in request:
                request += client.recv(1 << 20)
            head, _, body = request.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            while len(body) < length:
                body += client.recv(1 << 20)
            self.requests.append(head.split(b"\r\n")[0])
            lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
            upstream.sendall(b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body)
            upstream.settimeout(5)
            answer = b""
            while chunk := upstream.recv(1 << 20):  # the store closes once it has answered
                answer += chunk
            if request.startswith((b"POST", b"PUT")) and self.slow_writes:
                self.slow_writes -= 1
                time.sleep(self.delay)
            with suppress(OSError):
                client.sendall(answer)


def stored_password(root: Path, bao: baoserver.Server) -> tuple[str, str, int]:
    """A store at a new path holding the stack's POSTGRES_PASSWORD: the path, the password, the version."""
    path = unique()
    with_store(root, path, ["POSTGRES_PASSWORD"])
    old = stack_password(root)
    return path, old, bao.write(path, {"POSTGRES_PASSWORD": old})


@pytest.fixture
def proxy(bao: baoserver.Server) -> Iterator[Proxy]:
    front = Proxy(bao.address)
    yield front
    front.close()


@pytest.mark.vault
@pytest.mark.postgres
def test_a_write_that_lands_after_the_client_gave_up_is_settled_and_everything_is_put_back(
    pg_stack: Path, pg_server: pgserver.Server, bao: baoserver.Server, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, old, first = stored_password(pg_stack, bao)
    for name, value in env_for(proxy.address).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(vault, "TIMEOUT", 1)
    proxy.slow_writes = 1  # the store writes the version; its answer comes after the client's timeout
    before = files_of(pg_stack)
    with pytest.raises(StoreError) as failure:
        rotate(Stack(pg_stack, load(pg_stack / "secrets-config.yaml")), ["POSTGRES_PASSWORD"])
    message = str(failure.value)
    assert "values in vault" in message and "the stack is as it was" in message, message
    version, data = bao.read(path)
    assert version == first + 2 and data == {"POSTGRES_PASSWORD": old}  # landed late, then written back
    assert pg_server.logs_in("postgres", old) and files_of(pg_stack) == before
    assert not journal(pg_stack).exists()


@pytest.mark.vault
@pytest.mark.postgres
def test_a_read_back_the_token_may_not_do_puts_the_old_values_back_at_once(
    pg_stack: Path, pg_server: pgserver.Server, bao: baoserver.Server, inproc: CLI
) -> None:
    path, old, first = stored_password(pg_stack, bao)
    rules = (
        f'path "secret/data/{path}" {{ capabilities = ["create", "update", "read"] }}\n'
        'path "sys/internal/ui/mounts/*" { capabilities = ["read"] }'
    )
    policy = f"blind-{uuid.uuid4().hex[:6]}"
    token = bao.token(policy, rules)
    # The plan reads the version it will check-and-set on; right after the write, reading goes away.
    import hvac

    real = hvac.api.secrets_engines.kv_v2.KvV2.create_or_update_secret

    def write_then_revoke(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        hvac.api.secrets_engines.kv_v2.KvV2.create_or_update_secret = real
        answer = real(self, *args, **kwargs)
        blind = f'path "secret/data/{path}" {{ capabilities = ["create", "update"] }}'
        bao.client().sys.create_or_update_policy(name=policy, policy=blind)
        return answer

    hvac.api.secrets_engines.kv_v2.KvV2.create_or_update_secret = write_then_revoke
    try:
        ran = inproc("rotate", "--secrets", "POSTGRES_PASSWORD", env=env_for(bao.address, token))
    finally:
        hvac.api.secrets_engines.kv_v2.KvV2.create_or_update_secret = real
    assert ran.code == 1 and "Traceback" not in ran.err, ran.text
    errors = [line for line in ran.err.splitlines() if "written back as version" in line]  # after the progress lines
    assert len(errors) == 1 and "the stack is as it was" in errors[0], ran.text
    version, data = bao.read(path)
    assert version == first + 2 and data == {"POSTGRES_PASSWORD": old}
    assert pg_server.logs_in("postgres", old) and stack_password(pg_stack) == old
    assert not journal(pg_stack).exists()


@pytest.mark.vault
@pytest.mark.postgres
def test_a_store_gone_after_the_database_changed_puts_everything_back_in_the_same_command(
    pg_stack: Path, pg_server: pgserver.Server, bao: baoserver.Server, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, old, _ = stored_password(pg_stack, bao)
    for name, value in env_for(proxy.address).items():
        monkeypatch.setenv(name, value)
    real = postgres.DirectDatabase.prove

    def prove_then_lose_the_store(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        real(self, *args, **kwargs)
        proxy.close()  # the database is on the new password; the store stops answering

    monkeypatch.setattr(postgres.DirectDatabase, "prove", prove_then_lose_the_store)
    before = files_of(pg_stack)
    with pytest.raises(StoreError) as failure:
        rotate(Stack(pg_stack, load(pg_stack / "secrets-config.yaml")), ["POSTGRES_PASSWORD"])
    message = str(failure.value)
    assert "unreachable" in message and "Put back the password in postgres" in message, message
    assert pg_server.logs_in("postgres", old) and files_of(pg_stack) == before
    assert not journal(pg_stack).exists()
    assert bao.read(path)[1] == {"POSTGRES_PASSWORD": old}


class Answers(BaseHTTPRequestHandler):
    """A server at the store's address that is not the store: an SSO page, or a redirect elsewhere."""

    body = b"<html><body>Sign in with SSO</body></html>"
    location: str | None = None
    seen: list[dict[str, str]] = []  # noqa: RUF012 - shared by the class on purpose

    def _answer(self) -> None:
        type(self).seen.append(dict(self.headers))
        if self.location:
            self.send_response(307)
            self.send_header("Location", self.location + self.path)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def store_error(inproc: CLI, env: dict[str, str], *args: str) -> str:
    ran = inproc(*(args or ("rotate", "--secrets", "JWT_SECRET")), env=env)
    line = one_line_error(ran)
    assert env.get("VAULT_TOKEN", "unset") not in ran.text or env.get("VAULT_TOKEN") == "root", ran.text
    return line


@pytest.mark.vault
def test_the_store_edge_fails_in_one_line_without_secrets(stack: Path, bao: baoserver.Server, inproc: CLI) -> None:
    path = unique()
    with_store(stack, path, ["JWT_SECRET"])
    bao.write(path, {"JWT_SECRET": values(stack)["JWT_SECRET"]})
    before = files_of(stack)
    token = "s.leaky-" + uuid.uuid4().hex
    # A token with a newline inside is refused without printing it; a trailing one is only stripped.
    line = store_error(inproc, {"VAULT_ADDR": bao.address, "VAULT_TOKEN": f"{token}\nX-Injected: 1"})
    assert "white space or control characters" in line and token not in line
    ran = inproc("rotate", "--secrets", "JWT_SECRET", "--dry-run", env=env_for(bao.address, "root\n"))
    assert ran.code == 0, ran.text
    for address, why in (
        ("http://127.0.0.1:99999", "not a valid URL"),
        ("http://[::1", "not a valid URL"),
        ("ftp://127.0.0.1", "not an http:// or https:// URL"),
        (f"http://alice:pw@word@{bao.address.removeprefix('http://')}", "carries a user or password"),
    ):
        line = store_error(inproc, env_for(address))
        assert why in line and "pw@word" not in line and "alice" not in line, line
    with http(Answers) as sso:
        line = store_error(inproc, env_for(sso))
        assert "not the Vault API's JSON" in line, line
    assert files_of(stack) == before


@pytest.mark.vault
def test_a_redirect_to_another_host_is_refused_and_the_token_never_follows(
    stack: Path, bao: baoserver.Server, inproc: CLI
) -> None:
    path = unique()
    with_store(stack, path, ["JWT_SECRET"])

    class Elsewhere(Answers):
        seen: list[dict[str, str]] = []  # noqa: RUF012

    class Redirecting(Answers):
        pass

    with http(Elsewhere) as other:
        Redirecting.location = other.replace("127.0.0.1", "localhost")
        with http(Redirecting) as front:
            line = store_error(inproc, env_for(front, "t0ken-" + uuid.uuid4().hex))
    assert "redirected to another host" in line, line
    assert not Elsewhere.seen  # nothing, and so no X-Vault-Token, reached the other host


class Misshapen(BaseHTTPRequestHandler):
    """Speaks the Vault API's paths with JSON of shapes the real one never sends."""

    answers: dict[str, object] = {  # noqa: RUF012 - fixed data of the class
        "/v1/auth/token/lookup-self": {"data": {"policies": ["root"]}},
        "/v1/sys/internal/ui/mounts/secret": {"data": {"type": "kv", "options": {"version": "2"}}},
    }

    def do_GET(self) -> None:
        body = json.dumps(self.answers.get(self.path.split("?")[0], {"data": {"metadata": {"version": "v1"}}}))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def test_a_store_answering_json_of_another_shape_is_one_line(stack: Path, inproc: CLI) -> None:
    with_store(stack, unique(), ["JWT_SECRET"])
    before = files_of(stack)
    with http(Misshapen) as odd:
        for args in (("rotate", "--secrets", "JWT_SECRET"), ("pull",)):
            line = store_error(inproc, env_for(odd), *args)
            assert "version that is not a number" in line, line
    assert files_of(stack) == before


def test_a_store_address_with_credentials_is_refused_in_the_configuration(stack: Path, inproc: CLI) -> None:
    with_store(stack, unique(), ["JWT_SECRET"], address="https://bob:hunter2@vault.example:8200")
    ran = inproc("rotate", "--dry-run")
    line = one_line_error(ran)
    assert ran.code == 2 and "stores[0].vault.address" in line and "hunter2" not in ran.text


# The tool's own state, crafted.


def test_what_is_printed_from_disk_is_escaped(stack: Path, inproc: CLI) -> None:
    assert inproc("rotate", "--secrets", "DASHBOARD_PASSWORD").code == 0
    directory = stack / "backups/secrets"
    hostile = "\x1b]0;owned\x07\x1b]52;c;ZXZpbA==\x07\rforged row\nsecond"
    with (directory / "audit.log").open("a") as log:
        log.write(json.dumps({"time": hostile, "task": hostile, "outcome": hostile, "secrets": [hostile]}) + "\n")
    metadata = next(directory.glob("secrets-backup-*/metadata.json"))
    raw = json.loads(metadata.read_text())
    metadata.write_text(json.dumps({**raw, "rotated_secrets": [hostile], "affected_services": [hostile]}))
    for args in (("log",), ("restore", "--list")):
        ran = inproc(*args)
        assert ran.code == 0, ran.text
        assert "\x1b" not in ran.text and "\x07" not in ran.text and "\r" not in ran.text, args
        assert not any(line.startswith(("forged row", "second")) for line in ran.out.splitlines()), ran.out


def test_damaged_audit_lines_and_huge_metadata_are_skipped_quickly(stack: Path, inproc: CLI) -> None:
    assert inproc("rotate", "--secrets", "DASHBOARD_PASSWORD").code == 0
    directory = stack / "backups/secrets"
    with (directory / "audit.log").open("a") as log:
        log.write(json.dumps({"task": "rotate", "secrets": 5}) + "\n")
    ran = inproc("log")
    assert ran.code == 0 and "1 damaged lines" in ran.err, ran.text
    huge = directory / "secrets-backup-20200101-000000"
    huge.mkdir()
    (huge / "metadata.json").write_text(json.dumps({"files": [], "rotated_secrets": ["X"] * 1_000_000}))
    started = time.monotonic()
    ran = inproc("restore", "--list")
    assert ran.code == 0 and "20200101-000000 is damaged" in ran.err, ran.text
    assert time.monotonic() - started < 10


def test_a_fifo_in_place_of_the_audit_log_hangs_nothing(stack: Path, cli: CLI) -> None:
    directory = stack / "backups/secrets"
    directory.mkdir(parents=True)
    os.mkfifo(directory / "audit.log")
    ran = cli("rotate", "--secrets", "DASHBOARD_PASSWORD")  # a process: a hang would be its timeout
    assert ran.code == 0 and "cannot write the audit log (not a regular file" in ran.err, ran.text
    ran = cli("log")
    assert ran.code != 0 and "not a regular file" in one_line_error(ran)


def test_a_hard_link_out_of_the_stack_is_refused_and_left_alone(stack: Path, tmp_path: Path, inproc: CLI) -> None:
    outside = tmp_path / "elsewhere.env"
    os.link(stack / ".env", outside)
    before = outside.read_bytes(), outside.stat().st_mode
    ran = inproc("rotate", "--secrets", "DASHBOARD_PASSWORD")
    line = one_line_error(ran)
    assert ran.code == 1 and "hard links lie outside the stack" in line, ran.text
    assert (outside.read_bytes(), outside.stat().st_mode) == before
    assert not journal(stack).exists()


def test_a_rotation_waits_for_the_run_before_it_to_be_verified(stack: Path, inproc: CLI) -> None:
    first = inproc("rotate", "--secrets", "DASHBOARD_PASSWORD")
    assert first.code == 0, first.text
    before = tree(stack)
    ran = inproc("rotate", "--secrets", "JWT_SECRET")
    line = one_line_error(ran)
    run = next((stack / "backups/secrets").glob("secrets-backup-*")).name.removeprefix("secrets-backup-")
    assert ran.code == 4 and f"run {run}" in line and "applied but not verified" in line, ran.text
    kept = ("audit.log", ".lock")  # the tool's own record of who ran, and when it held the lock
    assert {k: v for k, v in tree(stack).items() if not k.endswith(kept)} == {
        k: v for k, v in before.items() if not k.endswith(kept)
    }
    assert inproc("restore", "--latest").code == 0  # putting it back releases it
    assert inproc("rotate", "--secrets", "JWT_SECRET").code == 0


@pytest.mark.engine
def test_restart_with_nothing_running_is_refused_before_anything_happens(
    stack: Path, docker_client: object, inproc: CLI
) -> None:
    assert inproc("rotate", "--secrets", "DASHBOARD_PASSWORD").code == 0
    ran = inproc("restart")
    line = one_line_error(ran)
    assert ran.code == 2 and "nothing of project" in line and "is running" in line, ran.text
    import docker

    client = docker.from_env()
    assert not client.networks.list(filters={"label": "com.docker.compose.project=stack"})


def test_the_engine_script_deletes_no_bridge_it_did_not_make(tmp_path: Path) -> None:
    import subprocess

    from .conftest import REPO

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for tool in ("ip", "umount"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
        (bin_dir / tool).chmod(0o755)
    script = f"PATH={bin_dir}:$PATH; ENGINE_DIR={tmp_path}/engine; . {REPO}/.ci/engine.sh; engine_stop"
    subprocess.run(["bash", "-c", script], check=True)
    assert "ip link del" not in (calls.read_text() if calls.exists() else "")


@pytest.mark.parametrize("kind", ["../../etc/passwd", ["postgres"], "__init__", "x" * 500])
def test_a_journal_naming_an_unknown_target_kind_is_one_line_and_imports_nothing(kind: object) -> None:
    """The kind picks a module by registry, never by building a module path from what was read."""
    with pytest.raises(RecoveryError) as caught:
        target_from_json({"kind": kind, "endpoint": {}}, None, lambda: None)  # type: ignore[arg-type,return-value]
    assert "which this version does not know" in str(caught.value) and len(str(caught.value)) < 160


def test_backends_are_reached_only_through_their_packages() -> None:
    """No module outside engines/ and targets/ imports an implementation there (only the package,
    or the engine protocol), not even for a type: a new backend registers in its package and plans
    through its hooks, and a command that never uses one never loads it."""
    import ast

    package = Path(__file__).resolve().parent.parent / "rotation"
    backends = {"engines", "targets"}
    implementations = {
        f"{folder}.{path.stem}"
        for folder in backends
        for path in (package / folder).glob("*.py")
        if path.stem not in ("__init__", "protocol")
    }
    assert {"engines.compose", "engines.swarm", "targets.postgres", "targets.vault", "targets.tls"} <= implementations
    for path in package.rglob("*.py"):
        inside = path.relative_to(package).parts
        if inside[0] in backends:
            continue
        depth = len(inside) - 1  # `from ..targets.vault` in config/ is `targets.vault` too
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level:
                module = node.module if node.level - 1 == depth else ""
                assert module not in implementations, (path.name, node.module)
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                assert node.module.removeprefix("rotation.") not in implementations, (path.name, node.module)

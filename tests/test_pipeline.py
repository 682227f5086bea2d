"""One-command pipelines on a real engine: probes, automatic rollback, audit log, notifications, schedule."""

from __future__ import annotations

import json
import re
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from docker import DockerClient

from rotation import envfile
from rotation.backup import BackupStore

from . import enginestack
from .conftest import CLI, edited_config

JWT_SECRET = "s3cr3tJWTs3cr3tJWTs3cr3tJWTs3cr3tJWT0123456789ab"


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict], dict]]:
    """A local HTTP server: /rest/v1/ checks the apikey JWT against the stack's JWT_SECRET,
    /hook records webhook POSTs."""
    received: list[dict] = []
    state: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            secret = envfile.read(state["env"]).get("JWT_SECRET") or ""
            try:
                claims = jwt.decode(self.headers.get("apikey", ""), secret, algorithms=["HS256"])
                code = 200 if claims.get("role") == "anon" else 403
            except jwt.InvalidTokenError:
                code = 401
            self.send_response(code)
            self.end_headers()

        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", received, state
    httpd.shutdown()


def add_jwt_and_probes(root: Path, url: str) -> None:
    anon = jwt.encode({"role": "anon", "iss": "supabase", "iat": 1, "exp": 2_000_000_000}, JWT_SECRET)
    env = root / ".env"
    env.write_bytes(env.read_bytes() + f"JWT_SECRET={JWT_SECRET}\nANON_KEY={anon}\n".encode())
    with edited_config(root) as raw:
        raw["secrets"]["JWT_SECRET"] = {"type": "random", "length": 48, "files": [".env"], "restart_services": ["api"]}
        raw["secrets"]["ANON_KEY"] = {
            "type": "jwt-token",
            "role": "anon",
            "depends_on": "JWT_SECRET",
            "files": [".env"],
        }
        raw["verify"] = [
            {
                "name": "rest accepts the anon key",
                "http": {"url": f"{url}/rest/v1/", "headers": {"apikey": "${ANON_KEY}"}},
            },
            {
                "name": "rest refuses the old anon key",
                "http": {"url": f"{url}/rest/v1/", "headers": {"apikey": "${previous:ANON_KEY}"}, "expect": 401},
            },
            {"jwt": {}},
        ]
        raw["notify"] = [f"{url}/hook"]


@pytest.mark.engine
def test_good_pipeline_passes_its_probes_and_writes_audit_and_notifications(
    compose_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI, server: tuple[str, list[dict], dict]
) -> None:
    root, _project = compose_stack
    url, received, state = server
    state["env"] = root / ".env"
    add_jwt_and_probes(root, url)
    ran = inproc("precheck", "rotate", "--secrets", "JWT_SECRET", "restart", "verify", cwd=root)
    assert ran.code == 0, ran.text
    assert "ok   rest accepts the anon key: GET" in ran.out
    assert "ok   rest refuses the old anon key" in ran.out and "-> 401 (expected 401)" in ran.out
    assert "ok   jwt: ANON_KEY: ANON_KEY verifies against JWT_SECRET" in ran.out
    new_secret = envfile.read(root / ".env").get("JWT_SECRET") or ""
    assert new_secret and new_secret not in ran.text and JWT_SECRET not in ran.text
    # A person watching sees each service move, with the seconds since the restart began.
    assert re.search(r"^\s+\d+\.\ds  api: recreated$", ran.out, re.M), ran.out
    assert re.search(r"^restart: without a healthy container: .*api \d+\.\ds", ran.out, re.M), ran.out
    assert re.search(r"^\s+\d+\.\ds  api: healthy$", ran.out, re.M)

    log = root / "backups/secrets/audit.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["task"] for line in lines] == ["precheck", "rotate", "restart", "verify"]
    assert all(line["outcome"] == "ok" for line in lines)
    rotate = lines[1]
    assert rotate["secrets"] == ["ANON_KEY", "JWT_SECRET"] and rotate["services"] == ["api"]
    assert {"time", "user", "host", "duration", "run"} <= set(rotate)
    assert new_secret not in log.read_text() and JWT_SECRET not in log.read_text()

    assert [n["task"] for n in received] == ["rotate", "restart", "verify"]
    assert all(n["ok"] and "succeeded" in n["text"] for n in received)
    assert "JWT_SECRET" in received[0]["text"] and new_secret not in json.dumps(received)
    listing = json.loads(inproc("restore", "--list", "--json", cwd=root).out)
    assert listing[0]["status"] == "verified"


@pytest.mark.engine
def test_pipeline_that_breaks_a_service_rolls_back_to_a_healthy_stack(
    compose_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI
) -> None:
    root, project = compose_stack
    with edited_config(root) as raw:
        raw["secrets"]["DB_PASSWORD"]["restart_services"] = ["api"]  # leaves out the database
    env_before = (root / ".env").read_bytes()
    old = envfile.read(root / ".env").get("DB_PASSWORD")
    ran = inproc("precheck", "rotate", "--secrets", "DB_PASSWORD", "restart", "--timeout", "90", "verify", cwd=root)
    assert ran.code == 1, ran.text
    assert "failed: api:" in ran.out
    assert re.search(r"^\s+\d+\.\ds  api: failed$", ran.out, re.M), ran.out
    rollback = ran.out[ran.out.index("rolling back run") :]
    assert re.search(r"^\s+\d+\.\ds  api: healthy$", rollback, re.M), rollback  # the rollback's own progress
    assert "ROLLED BACK run" in ran.err and "restart failed: api" in ran.err
    assert (root / ".env").read_bytes() == env_before
    containers = enginestack.containers(docker_client, project)
    api_env = dict(e.split("=", 1) for e in containers["api"].attrs["Config"]["Env"])
    assert api_env["DB_PASSWORD"] == old
    assert set(enginestack.health(docker_client, project).values()) <= {"healthy", "running"}
    listing = json.loads(inproc("restore", "--list", "--json", cwd=root).out)
    rotation = next(row for row in listing if row["kind"] == "rotation" and row["rotated_secrets"])
    assert rotation["status"] == "rolled-back"
    assert inproc("check", cwd=root).code == 0
    logged = json.loads(inproc("log", "--json", cwd=root).out)  # newest first; the listing is not in it
    assert [e["task"] for e in logged[:4]] == ["check", "restart", "rotate", "precheck"], logged
    assert logged[1]["outcome"].startswith(f"rolled back run {rotation['id']}: restart failed: api"), logged[1]


def test_a_failing_notification_is_reported_but_never_fails_the_rotation(stack: Path, inproc: CLI) -> None:
    with edited_config(stack) as raw:
        raw["notify"] = ["http://127.0.0.1:9/hook/T000/SECRET-TOKEN"]
    ran = inproc("rotate", "--secrets", "DASHBOARD_PASSWORD")
    assert ran.code == 0, ran.text
    assert "notification to 127.0.0.1:9 failed" in ran.err
    assert "SECRET-TOKEN" not in ran.text


def test_due_lists_secrets_past_their_period_from_backdated_history(stack: Path, inproc: CLI) -> None:
    with edited_config(stack) as raw:
        raw["secrets"]["JWT_SECRET"]["rotation_period"] = "30d"
        raw["secrets"]["DASHBOARD_PASSWORD"]["rotation_period"] = "90d"
        raw["secrets"]["SECRET_KEY_BASE"]["rotation_period"] = "12h"
    store = BackupStore.for_stack(stack, "backups/secrets")
    import time

    now = time.time()
    for days, names in ((40, ["JWT_SECRET", "ANON_KEY"]), (10, ["DASHBOARD_PASSWORD"]), (0.1, ["SECRET_KEY_BASE"])):
        backup = store.create("rotation", [".env"], now=now - days * 86400)
        store.update(backup, status="verified", rotated_secrets=names)
    ran = inproc("due")
    assert ran.code == 1
    assert "JWT_SECRET" in ran.out and "40d" in ran.out
    assert "DASHBOARD_PASSWORD" not in ran.out and "SECRET_KEY_BASE" not in ran.out
    rotated = inproc("rotate", "--due", "--json")
    assert rotated.code == 0, rotated.text
    assert json.loads(rotated.out)["rotated_secrets"] == ["ANON_KEY", "JWT_SECRET", "SERVICE_ROLE_KEY"]
    assert inproc("due").code == 0
    assert "no secret is due" in inproc("rotate", "--due").out


@pytest.mark.engine
def test_a_rollback_that_fails_says_so_keeps_backups_and_prints_the_manual_recovery(
    compose_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI
) -> None:
    root, project = compose_stack
    assert inproc("rotate", "--secrets", "DB_PASSWORD", cwd=root).code == 0
    compose = root / "docker-compose.yml"  # from now on a new db container can never turn healthy
    compose.write_text(compose.read_text().replace("http://127.0.0.1:8080/password", "http://127.0.0.1:9/password"))
    ran = inproc("restart", "--services", "api", "--timeout", "6", cwd=root)
    assert ran.code == 5, ran.text
    assert "ROLLBACK FAILED" in ran.err
    run = json.loads(inproc("restore", "--list", "--json", cwd=root).out)
    rotation = next(row for row in run if row["kind"] == "rotation")
    assert rotation["status"] == "failed"
    assert f"rotation restore --backup {rotation['id']}" in ran.err
    assert f"docker-compose -p {project} up -d --force-recreate api" in ran.err
    assert (root / "backups/secrets" / f"secrets-backup-{rotation['id']}" / ".env").is_file()

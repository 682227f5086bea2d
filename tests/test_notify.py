"""Notifications through Apprise, received by real servers: an SMTP server (aiosmtpd) and an HTTP
endpoint on loopback. Webhooks (https://) keep their JSON POST; everything else goes through Apprise."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rotation.backup import BackupStore, RunStatus

from .conftest import CLI, edited_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def smtp() -> Iterator[tuple[int, list[Any]]]:
    """A real SMTP server on loopback; the messages it was handed, parsed."""
    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            received.append(message_from_bytes(envelope.content))
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()


@pytest.fixture
def endpoint() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """An HTTP endpoint on loopback that records every JSON body posted to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received.append(json.loads(self.rfile.read(length) or b"{}"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()


def waited(received: list[Any], count: int = 1) -> list[Any]:
    deadline = time.monotonic() + 5
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return received


def test_mail_and_json_notifications_arrive_with_names_and_no_value(
    stack: Path, inproc: CLI, smtp: tuple[int, list[Any]], endpoint: tuple[int, list[dict[str, Any]]]
) -> None:
    mail_port, mails = smtp
    http_port, posts = endpoint
    env = stack / ".env"
    env.write_bytes(env.read_bytes() + b"SMTP_FROM=rotation@example.com\n")
    with edited_config(stack) as raw:
        raw["notify"] = [
            f"mailto://127.0.0.1:{mail_port}?from=${{SMTP_FROM}}&to=ops@example.com&mode=insecure",
            f"json://127.0.0.1:{http_port}/rotation",
        ]
    ran = inproc("rotate", "--secrets", "DASHBOARD_PASSWORD")
    assert ran.code == 0 and "warning" not in ran.err, ran.text
    mail = waited(mails)[0]
    assert mail["From"] == "rotation@example.com" and mail["To"] == "ops@example.com"
    assert "rotate succeeded" in mail["Subject"]
    text = mail.get_payload()[0].get_payload(decode=True).decode()
    assert "DASHBOARD_PASSWORD" in text
    post = waited(posts)[0]
    assert "DASHBOARD_PASSWORD" in post["message"] and "rotate succeeded" in post["title"]
    value = (env.read_text().split("DASHBOARD_PASSWORD=", 1)[1]).split("\n", 1)[0]
    assert value not in text and value not in json.dumps(post)


def test_a_failing_or_unknown_notification_url_is_a_warning_that_names_only_scheme_and_host(
    stack: Path, inproc: CLI
) -> None:
    with edited_config(stack) as raw:
        raw["notify"] = [
            f"mailtos://user:hunter2secret@127.0.0.1:{free_port()}?to=ops@example.com",
            "nosuchservice://token-abc123@example.org/x",
            "ntfy://${NTFY_TOKEN_UNSET}@ntfy.example.org/topic",
        ]
    ran = inproc("rotate", "--secrets", "DASHBOARD_PASSWORD")
    assert ran.code == 0, ran.text
    lines = [line for line in ran.err.splitlines() if "notification" in line]
    assert len(lines) == 3, ran.err
    assert "notification to mailtos://127.0.0.1" in lines[0] and "failed" in lines[0]
    assert "nosuchservice://example.org" in lines[1] and "not a URL Apprise knows" in lines[1]
    assert "ntfy://ntfy.example.org skipped: ${NTFY_TOKEN_UNSET} is not set" in lines[2]
    assert "hunter2secret" not in ran.text and "token-abc123" not in ran.text


def test_due_notify_sends_one_message_listing_what_is_due(
    stack: Path, inproc: CLI, endpoint: tuple[int, list[dict[str, Any]]]
) -> None:
    port, posts = endpoint
    with edited_config(stack) as raw:
        raw["secrets"]["JWT_SECRET"]["rotation_period"] = "30d"
        raw["secrets"]["DASHBOARD_PASSWORD"]["rotation_period"] = "90d"
        raw["notify"] = [f"json://127.0.0.1:{port}/due"]
    store = BackupStore.for_stack(stack, "backups/secrets")
    old = store.create("rotation", [], now=time.time() - 40 * 86400)
    store.update(old, status=RunStatus.VERIFIED, rotated_secrets=["JWT_SECRET", "DASHBOARD_PASSWORD"])
    assert inproc("due", "--notify").code == 1
    assert len(waited(posts)) == 1
    assert "JWT_SECRET" in posts[0]["message"] and "DASHBOARD_PASSWORD" not in posts[0]["message"]
    fresh = store.create("rotation", [])
    store.update(fresh, status=RunStatus.VERIFIED, rotated_secrets=["JWT_SECRET"])
    assert inproc("due", "--notify").code == 0
    time.sleep(0.2)
    assert len(posts) == 1  # nothing due, nothing sent


def test_a_notify_entry_that_is_no_url_names_its_index(stack: Path, inproc: CLI) -> None:
    with edited_config(stack) as raw:
        raw["notify"] = ["https://hooks.example.org/x", "just text"]
    ran = inproc("check")
    assert ran.code == 2 and "notify[1]" in ran.err and "Apprise URL" in ran.err

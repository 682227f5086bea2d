"""A Docker Swarm stack on the test engine, shaped for rotation: a database and a 2-replica API.

`db` (one replica, Swarm's default stop-first update) serves its DB_PASSWORD over HTTP. `api`
(two replicas, `order: start-first`, `failure_action: rollback`) mounts the Swarm secret
`api_key` and is healthy only while its API_KEY environment value equals the secret's content
and is 32 characters long: a task that got one but not the other, or a value of another length,
fails its healthcheck. The Swarm secret's name comes from API_KEY_SECRET in `.env`, versioned.
Services use `endpoint_mode: dnsrr` because this kernel has no IPVS for Swarm's virtual IPs.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from docker import DockerClient
from docker.models.containers import Container

from rotation import envfile

STACK_FILE = (Path(__file__).parent / "fixtures" / "swarm" / "stack.yml").read_text()


def config(stack: str) -> dict[str, Any]:
    """secrets-config.yaml for the stack: API_KEY is carried by the Swarm secret api_key."""
    return {
        "engine": "swarm",
        "swarm": {"stack": stack, "files": ["stack.yml"]},
        "secrets": {
            "DB_PASSWORD": {
                "type": "random",
                "length": 32,
                "alphabet": "hex",
                "files": [".env"],
                "restart_services": ["db"],
            },
            "API_KEY": {
                "type": "random",
                "length": 32,
                "files": [".env"],
                "restart_services": ["api"],
                "swarm_secret": "api_key",
            },
        },
    }


def env_values(root: Path) -> dict[str, str]:
    parsed = envfile.read(root / ".env")
    return {k: v for k in parsed.names() if (v := parsed.get(k)) is not None}


def deploy(root: Path, stack: str) -> subprocess.CompletedProcess[str]:
    """A plain `docker stack deploy`, as a user runs it: `.env`'s values in the environment."""
    return subprocess.run(
        ["docker", "stack", "deploy", "-c", "stack.yml", stack],
        cwd=root,
        env={**os.environ, **env_values(root)},
        capture_output=True,
        text=True,
        check=False,
    )


def service(client: DockerClient, stack: str, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = client.api.services(filters={"name": f"{stack}_{name}"}, status=True)  # type: ignore[no-untyped-call]
    return next(s for s in found if s["Spec"]["Name"] == f"{stack}_{name}")


def healthy_tasks(client: DockerClient, stack: str, name: str) -> int:
    """Running task containers of the service whose healthcheck passes now."""
    label = f"com.docker.swarm.service.name={stack}_{name}"
    return len(client.api.containers(filters={"label": label, "health": "healthy"}))


def _running(client: DockerClient, stack: str, name: str) -> list[dict[str, Any]]:
    tasks = client.api.tasks(filters={"service": f"{stack}_{name}", "desired-state": "running"})  # type: ignore[no-untyped-call]
    return [t for t in tasks if t["Status"]["State"] == "running"]


def running_ids(client: DockerClient, stack: str, name: str) -> set[str]:
    """The service's running tasks (those Swarm wants running), by id."""
    return {t["ID"] for t in _running(client, stack, name)}


def task_containers(client: DockerClient, stack: str, name: str) -> list[Container]:
    """The containers of the service's running tasks (not those of tasks being shut down)."""
    return [client.containers.get(t["Status"]["ContainerStatus"]["ContainerID"]) for t in _running(client, stack, name)]


def wait_converged(client: DockerClient, stack: str, timeout: float = 60) -> None:
    """Until every service runs all its desired tasks, each healthy and counted as running by the
    manager, and no update is in progress."""
    deadline = time.monotonic() + timeout
    while True:
        states = {}
        for name in ("db", "api"):
            found = service(client, stack, name)
            status = found.get("ServiceStatus") or {}
            update = (found.get("UpdateStatus") or {}).get("State")
            desired = int(status.get("DesiredTasks") or 0)
            running = int(status.get("RunningTasks") or 0)  # the manager's count, which the tool reads, lags
            states[name] = (min(healthy_tasks(client, stack, name), running), desired, update)
        if all(h == d and d > 0 and u in (None, "completed", "rollback_completed") for h, d, u in states.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"stack {stack} did not converge in {timeout}s: {states}")
        time.sleep(0.25)


def secret_names(client: DockerClient) -> set[str]:
    return {s["Spec"]["Name"] for s in client.api.secrets()}


@contextmanager
def swarm_mode(client: DockerClient) -> Iterator[None]:
    """The engine as a single-node swarm manager for the block, back to plain mode afterwards
    (an engine that was already a manager is left one)."""
    already = (client.info().get("Swarm") or {}).get("LocalNodeState") == "active"
    if not already:
        subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], capture_output=True, check=True)
    try:
        yield
    finally:
        if not already:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, check=False)
            # Swarm mode's host-side network; the engine itself removes its bridge (deleting only the
            # interface would break the next swarm init on this engine).
            subprocess.run(["docker", "network", "rm", "docker_gwbridge"], capture_output=True, check=False)


@dataclass
class Poller:
    """Counts the healthy tasks of one service every `every` seconds in a thread; `low` is the fewest seen."""

    client: DockerClient
    stack: str
    name: str
    every: float = 0.1
    counts: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            self.counts.append(healthy_tasks(self.client, self.stack, self.name))
            self._stop.wait(self.every)

    @contextmanager
    def polling(self) -> Iterator[Poller]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    @property
    def low(self) -> int:
        return min(self.counts)


@contextmanager
def deployed(base: Path, client: DockerClient) -> Iterator[tuple[Path, str]]:
    """Write the stack into `base`, create its first secret version, deploy it, wait for it to be
    healthy, and remove the stack and its secrets afterwards."""
    stack = f"rs{uuid.uuid4().hex[:8]}"
    root = base / stack
    root.mkdir()
    (root / "stack.yml").write_text(STACK_FILE)
    api_key = uuid.uuid4().hex
    env = f"# swarm test stack\nDB_PASSWORD={uuid.uuid4().hex}\nAPI_KEY={api_key}\nAPI_KEY_SECRET={stack}_api_key_v1\n"
    (root / ".env").write_text(env)
    (root / ".env").chmod(0o600)
    (root / "secrets-config.yaml").write_text(yaml.safe_dump(config(stack)))
    client.api.create_secret(f"{stack}_api_key_v1", api_key.encode())
    try:
        done = deploy(root, stack)
        assert done.returncode == 0, done.stderr
        wait_converged(client, stack)
        yield root, stack
    finally:
        subprocess.run(["docker", "stack", "rm", stack], capture_output=True, check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not client.api.services(filters={"label": f"com.docker.stack.namespace={stack}"}):  # type: ignore[no-untyped-call]
                break
            time.sleep(0.25)
        for name in secret_names(client):
            if name.startswith(f"{stack}_"):
                for _ in range(40):  # a secret stays in use until the stack's tasks are gone
                    try:
                        client.api.remove_secret(name)
                        break
                    except Exception:  # best effort: the cleanup of a test stack
                        time.sleep(0.25)

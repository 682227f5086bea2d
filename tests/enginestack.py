"""A compose stack on a real Docker Engine that models a shared credential.

`db` serves its DB_PASSWORD over HTTP; `api` is healthy only while its own copy matches;
`gateway` depends on `api`, reads API_KEY and turns unhealthy at once while `api` is away;
`worker` is independent and has no healthcheck.
The image is busybox imported from this machine (no registry is reachable), as ENGINE.md shows.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import yaml
from docker import DockerClient
from docker.models.containers import Container

IMAGE = "localhost/rotation-busybox-v3:latest"  # Podman's import ignores the tag: keep latest
APPLETS = ("sh", "httpd", "sleep", "wget", "cat", "env", "echo", "test", "printf", "mkdir", "grep", "true", "timeout")

COMPOSE = """
x-busybox: &busybox
  image: {image}
  init: true
  stop_grace_period: 1s

services:
  db:
    <<: *busybox
    command:
      - sh
      - -c
      - mkdir -p /www && printf %s "$$DB_PASSWORD" > /www/password && exec httpd -f -p 8080 -h /www
    environment:
      DB_PASSWORD: ${{DB_PASSWORD}}
    healthcheck:  # notes the host's uptime at its first pass, so a test can order it against api's start
      test:
        - CMD-SHELL
        - >-
          wget -q -O /dev/null http://127.0.0.1:8080/password
          && {{ test -f /tmp/healthy || cat /proc/uptime > /tmp/healthy; }}
      interval: 1s
      timeout: 2s
      retries: 2
  api:
    <<: *busybox
    command:
      - sh
      - -c
      - >-
        cat /proc/uptime > /tmp/started && mkdir -p /www && echo ok > /www/ok
        && exec httpd -f -p 8080 -h /www
    depends_on:
      db: {{condition: service_healthy}}
    environment:
      DB_PASSWORD: ${{DB_PASSWORD}}
    healthcheck:
      test: ["CMD-SHELL", "test \\"$$(wget -q -O - http://db:8080/password)\\" = \\"$$DB_PASSWORD\\""]
      interval: 1s
      timeout: 2s
      retries: 3  # one slow name lookup (Podman's aardvark under load) is not a wrong password
  gateway:
    <<: *busybox
    container_name: {project}-gateway
    command: ["sleep", "1000000"]
    depends_on:
      api: {{condition: service_healthy}}
    environment:
      API_KEY: ${{API_KEY}}
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://api:8080/ok"]
      interval: 1s
      timeout: 2s
      retries: 1  # unhealthy at once while api is replaced, as real gateways are
  worker:
    <<: *busybox
    command: ["sleep", "1000000"]

networks:
  default:
    internal: true  # nothing leaves the host; Podman's DNS then never asks upstream for a missing name
"""

ENV = """# engine test stack
DB_PASSWORD=0123456789abcdef0123456789abcdef
API_KEY="abcdefghijklmnopqrstuvwxyz012345"
"""


def config(project: str) -> dict[str, object]:
    """The stack's secrets-config.yaml: the database password and the gateway's key."""
    return {
        "secrets": {
            "DB_PASSWORD": {
                "type": "random",
                "length": 32,
                "alphabet": "hex",
                "files": [".env"],
                "restart_services": ["db", "api"],
            },
            "API_KEY": {
                "type": "random",
                "length": 32,
                "files": [".env"],
                "restart_services": [f"{project}-gateway"],
            },
        },
        "compose": {"project": project},
    }


def ensure_image(client: DockerClient) -> None:
    """Import the busybox image unless the engine already has it."""
    try:
        client.images.get(IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    busybox = shutil.which("busybox") or "/bin/busybox"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("usr", 0o755), ("var/run", 0o755)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(busybox, "bin/busybox")
        # /lib and /lib64 point into /usr, so a container that mounts the host's /usr can run its
        # binaries (psql) on a merged-/usr system.
        links = {f"bin/{applet}": "busybox" for applet in APPLETS} | {"lib": "usr/lib", "lib64": "usr/lib64"}
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    repository, tag = IMAGE.rsplit(":", 1)
    client.api.import_image_from_data(buffer.getvalue(), repository=repository, tag=tag, changes=['CMD ["/bin/sh"]'])


def compose(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker-compose", *args], cwd=root, capture_output=True, text=True, check=True)


@contextmanager
def _up(root: Path, project: str, client: DockerClient) -> Iterator[None]:
    """Bring the project up healthy for the block and take it down afterwards."""
    try:
        compose(root, "-p", project, "up", "-d")
        wait_healthy(client, project)
        yield
    finally:
        subprocess.run(["docker-compose", "-p", project, "down", "-t", "0"], cwd=root, capture_output=True)


@contextmanager
def running(base: Path, client: DockerClient) -> Iterator[tuple[Path, str]]:
    """Write the stack into `base`, bring it up healthy, and take it down afterwards."""
    project = f"rt{uuid.uuid4().hex[:8]}"
    root = base / project
    root.mkdir()
    (root / "docker-compose.yml").write_text(COMPOSE.format(image=IMAGE, project=project))
    (root / ".env").write_text(ENV)
    (root / ".env").chmod(0o600)
    (root / "secrets-config.yaml").write_text(yaml.safe_dump(config(project)))
    with _up(root, project, client):
        yield root, project


FIXTURES = Path(__file__).parent / "fixtures"


@contextmanager
def from_fixture(base: Path, client: DockerClient, name: str) -> Iterator[tuple[Path, str]]:
    """Copy the stack `tests/fixtures/<name>` into `base` under a project name of its own (its .env's
    COMPOSE_PROJECT_NAME), bring it up healthy, and take it down afterwards."""
    project = f"rs{uuid.uuid4().hex[:8]}"
    root = base / project
    shutil.copytree(FIXTURES / name, root)
    env = root / ".env"
    env.write_text(re.sub(r"(?m)^COMPOSE_PROJECT_NAME=.*$", f"COMPOSE_PROJECT_NAME={project}", env.read_text()))
    env.chmod(0o600)
    try:
        with _up(root, project, client):
            yield root, project
    finally:
        subprocess.run(["docker-compose", "-p", project, "down", "-v", "-t", "0"], cwd=root, capture_output=True)


def forget_asks(client: DockerClient, project: str) -> None:
    """Empty the log of the start-first stack's `probe`: what follows is the run to judge."""
    containers(client, project)["probe"].exec_run(["sh", "-c", ": > /tmp/probe.log"])


def unavailable(client: DockerClient, project: str) -> tuple[float, int]:
    """Seconds the start-first stack's `probe` found api not answering (from a failed ask, after its
    one retry, to the next good one), and how many times it asked."""
    output = containers(client, project)["probe"].exec_run(["cat", "/tmp/probe.log"]).output
    assert isinstance(output, bytes)
    asks = [(float(t), verdict == "ok") for t, verdict in (line.split() for line in output.decode().splitlines())]
    down, failed_at = 0.0, None
    for moment, ok in asks:
        if not ok and failed_at is None:
            failed_at = moment
        elif ok and failed_at is not None:
            down, failed_at = down + moment - failed_at, None
    if failed_at is not None:
        down += asks[-1][0] - failed_at
    return down, len(asks)


def containers(client: DockerClient, project: str) -> dict[str, Container]:
    """The project's containers by service, found by label."""
    found = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    return {c.labels["com.docker.compose.service"]: c for c in found}


def health(client: DockerClient, project: str) -> dict[str, str]:
    return {
        name: ((c.attrs["State"].get("Health") or {}).get("Status") or c.attrs["State"]["Status"])
        for name, c in containers(client, project).items()
    }


def wait_healthy(
    client: DockerClient, project: str, want: str = "healthy", service: str | None = None, timeout: float = 60
) -> None:
    """Wait until every service (or `service`) reports `want` (running services without a check count)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        states = health(client, project)
        names = [service] if service else list(states)
        if all(states.get(n) in (want, "running") if want == "healthy" else states.get(n) == want for n in names):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not {want} in {timeout}s: {states}")
        time.sleep(0.2)


PSQL_COMPOSE = """
services:
  db:
    image: {image}
    container_name: {project}-db
    init: true
    command: ["sleep", "1000000"]
    environment:
      PATH: {bindir}:/bin
    volumes:
      - /usr:/usr:ro
      - {sockets}:/var/run/postgresql
"""


@contextmanager
def psql_container(base: Path, client: DockerClient, sockets: Path, bindir: Path) -> Iterator[tuple[Path, str]]:
    """A `db` container that runs the host's psql against a server whose socket it mounts.

    It stands for Supabase's database container, reached the same way: psql over the local socket.
    """
    project = f"rp{uuid.uuid4().hex[:8]}"
    root = base / project
    root.mkdir()
    text = PSQL_COMPOSE.format(image=IMAGE, project=project, sockets=sockets, bindir=bindir)
    (root / "docker-compose.yml").write_text(text)
    with _up(root, project, client):
        yield root, project

"""Compose stacks on a real engine, from the files under tests/fixtures, and their busybox image.

`engine` models a shared credential (`running`); `startfirst` a service replaced beside its old
container, watched by a client (`from_fixture(..., "startfirst")`, `unavailable`). The image is
busybox imported from this machine (no registry is reachable).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
from docker import DockerClient
from docker.models.containers import Container

IMAGE = "localhost/rotation-busybox-v3:latest"  # as the fixtures name it; Podman's import ignores the tag: keep latest
APPLETS = ("sh", "httpd", "sleep", "wget", "cat", "env", "echo", "test", "printf", "mkdir", "grep", "true", "timeout")


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
    """The engine test stack (tests/fixtures/engine) in `base`, up and healthy for the block."""
    with from_fixture(base, client, "engine") as stack:
        yield stack


FIXTURES = Path(__file__).parent / "fixtures"
PLACEHOLDER = "fixture-project"  # a fixture's project name in its .env and configuration, made unique per test


@contextmanager
def from_fixture(base: Path, client: DockerClient, name: str) -> Iterator[tuple[Path, str]]:
    """Copy the stack `tests/fixtures/<name>` into `base` under a project name of its own (the
    fixture's PLACEHOLDER, COMPOSE_PROJECT_NAME in its .env), bring it up healthy, and take it down."""
    project = f"rt{uuid.uuid4().hex[:8]}"
    root = base / project
    shutil.copytree(FIXTURES / name, root)
    assert IMAGE in (root / "docker-compose.yml").read_text(), f"tests/fixtures/{name} must use {IMAGE}"
    for written in (root / ".env", root / "secrets-config.yaml"):
        written.write_text(written.read_text().replace(PLACEHOLDER, project))
    (root / ".env").chmod(0o600)
    try:
        with _up(root, project, client):
            yield root, project
    finally:
        subprocess.run(["docker-compose", "-p", project, "down", "-v", "-t", "0"], cwd=root, capture_output=True)
        remove_project(client, project)


def remove_project(client: DockerClient, project: str) -> None:
    """Whatever is left of `project`, found by compose's label: `docker-compose down` reads the
    compose file, which a test may have broken on purpose, and then removes nothing."""
    label = f"com.docker.compose.project={project}"
    for container in client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True, v=True)
    for network in client.networks.list(filters={"label": label}):
        network.remove()
    for volume in client.volumes.list(filters={"label": label}):
        volume.remove(force=True)


def forget_asks(client: DockerClient, project: str) -> None:
    """Empty the log of the start-first stack's `probe`: what follows is the run to judge."""
    containers(client, project)["probe"].exec_run(["sh", "-c", ": > /tmp/probe.log"])


def unavailable(client: DockerClient, project: str) -> tuple[float, int, list[str]]:
    """Seconds the start-first stack's `probe` found api not answering (from a failed ask, after its
    one retry, to the next good one; to the last ask if none came), how many times it asked, and its
    failed asks as logged."""
    output = containers(client, project)["probe"].exec_run(["cat", "/tmp/probe.log"]).output
    assert isinstance(output, bytes)
    lines = output.decode().splitlines()
    asks = [(float(line.split()[0]), line.split()[1] == "ok") for line in lines]
    down, failed_at = 0.0, None
    for moment, ok in asks:
        if not ok and failed_at is None:
            failed_at = moment
        elif ok and failed_at is not None:
            down, failed_at = down + moment - failed_at, None
    if failed_at is not None:
        down += asks[-1][0] - failed_at
    return down, len(asks), [line for line in lines if " fail" in line]


def answers_again(client: DockerClient, project: str, timeout: float = 90) -> bool:
    """Whether the start-first stack's `probe` gets an answer from api again within `timeout`: on
    Podman, aardvark-dns has taken up to about 40 s to answer for a replaced container on a busy machine."""
    import time

    forget_asks(client, project)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = containers(client, project)["probe"].exec_run(["cat", "/tmp/probe.log"]).output
        if b" ok" in output:
            return True
        time.sleep(0.5)
    return False


def is_podman(client: DockerClient) -> bool:
    """Whether the engine is Podman's Docker-compatible API."""
    return any(c.get("Name") == "Podman Engine" for c in client.version().get("Components") or [])


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

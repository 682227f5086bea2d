"""Start-first replacement on a real engine: a service with container_name that declares
`deploy.update_config.order: start-first` answers every request while it is replaced.

The stack is tests/fixtures/startfirst: `probe` asks `api` by name every 0.05 s with a 1 s timeout
and one retry, as a proxy does, and logs each answer; the tests read that log.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker import DockerClient
from docker.models.containers import Container

from rotation import envfile
from rotation.engines.startfirst import create_body

from . import enginestack
from .conftest import CLI, edited_config

pytestmark = pytest.mark.engine

UNAVAILABLE = 0.25  # seconds a client may see no answer: the bound


def bound(client: DockerClient) -> float:
    """The bound on Docker. On Podman, names resolve through aardvark-dns, which stalls for seconds
    around every change of a network's members on a busy machine (measured 4 to 12 s with both cores
    busy, 0 s at rest; docs/zero-downtime.md says so): there a client may time out whatever the
    tool does, so the time is not held to a bound, only that the service answers again."""
    return float("inf") if enginestack.is_podman(client) else UNAVAILABLE


def least_asks(client: DockerClient) -> int:
    """How many asks prove the probe watched the whole run. On Docker it asks every 0.05 s; on
    Podman a stalled aardvark-dns makes each ask wait out its timeout and retry (2 s), so the
    number of asks is a measure of time there too, and only that it asked is held."""
    return 1 if enginestack.is_podman(client) else 21


@pytest.fixture
def startfirst_stack(tmp_path: Path, docker_client: DockerClient) -> Iterator[tuple[Path, str]]:
    with enginestack.from_fixture(tmp_path, docker_client, "startfirst") as stack:
        yield stack


def service_containers(client: DockerClient, project: str, service: str) -> list[Container]:
    labels = [f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"]
    return client.containers.list(all=True, filters={"label": labels})


def env_of(container: Container) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])


def the_api(client: DockerClient, project: str) -> Container:
    """The one container of api, which must have kept its container_name."""
    found = service_containers(client, project, "api")
    assert [c.name for c in found] == [f"{project}-api"], [c.name for c in found]
    assert found[0].status == "running"
    return found[0]


def nothing_to_recreate(root: Path, client: DockerClient, project: str) -> None:
    """A plain `compose up -d` afterwards finds every container up to date."""
    label: dict[str, str | list[str] | bool] = {"label": f"com.docker.compose.project={project}"}
    before = {c.name: c.id for c in client.containers.list(all=True, filters=label)}
    subprocess.run(["docker-compose", "up", "-d"], cwd=root, capture_output=True, text=True, check=True)
    assert {c.name: c.id for c in client.containers.list(all=True, filters=label)} == before


def test_a_start_first_service_answers_through_its_own_rotation_and_its_databases(
    startfirst_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI
) -> None:
    root, project = startfirst_stack
    limit = bound(docker_client)
    dry = inproc("rotate", "--dry-run", "--secrets", "DB_PASSWORD", cwd=root)
    assert "api  start-first  reads DB_PASSWORD\n" in dry.out
    assert "db   stop-late    reads DB_PASSWORD  (not start-first: writes db-data, which compose" in dry.out
    for secret, replaced in (("API_TOKEN", {"api"}), ("DB_PASSWORD", {"db", "api"})):
        before = {name: c.id for name, c in enginestack.containers(docker_client, project).items()}
        enginestack.forget_asks(docker_client, project)
        ran = inproc("precheck", "rotate", "--secrets", secret, "restart", "verify", cwd=root)
        assert ran.code == 0, ran.text
        assert "api: starting beside the old" in ran.out
        assert "start-first: api (declares deploy.update_config.order: start-first)" in ran.out
        down, asked, failed = enginestack.unavailable(docker_client, project)
        assert asked >= least_asks(docker_client) and down <= limit, (secret, down, asked, failed)
        assert enginestack.answers_again(docker_client, project)
        api = the_api(docker_client, project)
        assert env_of(api)[secret] == envfile.read(root / ".env").get(secret)
        after = {name: c.id for name, c in enginestack.containers(docker_client, project).items()}
        assert {name for name in after if after[name] != before[name]} == replaced
        nothing_to_recreate(root, docker_client, project)


def test_a_replacement_that_never_turns_healthy_is_removed_and_the_old_one_serves_on(
    startfirst_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI
) -> None:
    root, project = startfirst_stack
    limit = bound(docker_client)  # the rollback switches too
    old = the_api(docker_client, project)
    with edited_config(root) as raw:
        raw["secrets"]["API_TOKEN"]["length"] = 40  # api's healthcheck wants 32 characters
    enginestack.forget_asks(docker_client, project)
    ran = inproc("precheck", "rotate", "--secrets", "API_TOKEN", "restart", "verify", cwd=root)
    assert ran.code == 1 and "ROLLED BACK" in ran.err, ran.text
    assert "the new container was removed and the old one still serves" in ran.text
    down, asked, failed = enginestack.unavailable(docker_client, project)
    assert asked >= least_asks(docker_client) and down <= limit, (down, asked, failed)
    assert enginestack.answers_again(docker_client, project)
    api = the_api(docker_client, project)
    assert env_of(api)["API_TOKEN"] == env_of(old)["API_TOKEN"] == envfile.read(root / ".env").get("API_TOKEN")
    assert not [c.name for c in docker_client.containers.list(all=True) if (c.name or "").endswith("-rotation-next")]
    nothing_to_recreate(root, docker_client, project)


def test_a_replacement_left_by_a_killed_restart_is_removed_or_finished_by_the_next_one(
    startfirst_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI
) -> None:
    """A restart killed while its replacement came up leaves it beside the old container, which still
    serves: the next restart removes it. One killed after the old container was removed leaves the
    replacement serving under its temporary name: the next restart gives it the service's name."""
    root, project = startfirst_stack
    name = f"{project}-api"

    def stray() -> Container:
        old = the_api(docker_client, project)
        network = next(iter(old.attrs["NetworkSettings"]["Networks"]))
        image = docker_client.api.inspect_image(old.attrs["Image"])["Config"]  # type: ignore[no-untyped-call]
        body = create_body(old.attrs, image, {}, old.labels["com.docker.compose.config-hash"], network)
        made = docker_client.api.create_container_from_config(body, name=f"{name}-rotation-next")  # type: ignore[no-untyped-call]
        docker_client.api.start(made["Id"])
        return docker_client.containers.get(made["Id"])

    stray()
    ran = inproc("restart", "--services", "api", cwd=root)
    assert ran.code == 0, ran.text
    the_api(docker_client, project)  # one container, with its name: the stray is gone
    spare = stray()
    docker_client.containers.get(name).remove(force=True)  # killed after the old one left, before the rename
    ran = inproc("restart", "--services", "api", cwd=root)
    assert ran.code == 0, ran.text
    assert "finishing a replacement an earlier run left half-way" in ran.err
    assert the_api(docker_client, project).id != spare.id  # renamed, then replaced as asked
    nothing_to_recreate(root, docker_client, project)

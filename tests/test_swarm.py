"""Rotation on a real single-node Docker Swarm: rolling start-first updates without downtime, new
Swarm secret versions, rollback of files, specs and secrets, and bad input as one line."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from docker import DockerClient

from . import crashpoints, swarmstack
from .conftest import CLI, edited_config, one_line_error, tree
from .swarmstack import Poller, deploy, env_values, running_ids, secret_names, service, task_containers

pytestmark = pytest.mark.swarm


def written(base: Path, stack: str, stack_file: str = swarmstack.STACK_FILE) -> Path:
    """A stack directory that was never deployed."""
    root = base / stack
    root.mkdir()
    (root / "stack.yml").write_text(stack_file)
    (root / ".env").write_text(f"DB_PASSWORD={'a' * 32}\nAPI_KEY={'b' * 32}\nAPI_KEY_SECRET={stack}_api_key_v1\n")
    (root / "secrets-config.yaml").write_text(yaml.safe_dump(swarmstack.config(stack)))
    return root


def test_engine_swarm_on_an_engine_that_is_not_a_manager_is_one_line(
    docker_client: DockerClient, inproc: CLI, tmp_path: Path
) -> None:
    if (docker_client.info().get("Swarm") or {}).get("LocalNodeState") == "active":
        pytest.skip("this engine is already a swarm manager")
    root = written(tmp_path, "plain")
    before = tree(root)
    line = one_line_error(inproc("check", cwd=root))
    assert "not a swarm manager" in line and "docker swarm init" in line
    assert tree(root) == before


@pytest.fixture(scope="module")
def swarm(docker_client: DockerClient) -> Iterator[DockerClient]:
    """The test engine in swarm mode for this module only: the Compose tests see a plain engine."""
    with swarmstack.swarm_mode(docker_client):
        yield docker_client


@pytest.fixture
def swarm_stack(tmp_path: Path, swarm: DockerClient) -> Iterator[tuple[Path, str]]:
    with swarmstack.deployed(tmp_path, swarm) as found:
        yield found


def test_a_rotation_keeps_a_healthy_api_task_and_lands_in_environment_secret_and_spec(
    swarm_stack: tuple[Path, str], swarm: DockerClient, inproc: CLI
) -> None:
    root, stack = swarm_stack
    before = env_values(root)
    first, second = f"{stack}_api_key_v1", f"{stack}_api_key_v2"
    with Poller(swarm, stack, "api").polling() as poller:
        for task in (["precheck"], ["rotate", "--secrets", "API_KEY,DB_PASSWORD"], ["restart"]):
            ran = inproc(*task, cwd=root)
            assert ran.code == 0, ran.text
        assert {first, second} <= secret_names(swarm)  # the old version is kept for a rollback...
        ran = inproc("verify", cwd=root)
        assert ran.code == 0, ran.text
    assert first not in secret_names(swarm)  # ...until verify passed
    assert poller.low >= 1, poller.counts  # at every 0.1 s poll, at least one api task was healthy
    after = env_values(root)
    assert after["API_KEY_SECRET"] == second
    assert after["API_KEY"] != before["API_KEY"] and after["DB_PASSWORD"] != before["DB_PASSWORD"]
    for name, key in (("api", "API_KEY"), ("db", "DB_PASSWORD")):
        containers = task_containers(swarm, stack, name)
        assert len(containers) == (2 if name == "api" else 1), name
        for container in containers:
            assert f"{key}={after[key]}" in container.attrs["Config"]["Env"]
            if name == "api":
                output = container.exec_run(["cat", "/run/secrets/api_key"]).output
                assert isinstance(output, bytes) and output.decode() == after["API_KEY"]
    for value in (before["API_KEY"], after["API_KEY"], after["DB_PASSWORD"]):
        assert value not in ran.text
    specs = {name: service(swarm, stack, name)["Spec"] for name in ("db", "api")}
    tasks = {name: running_ids(swarm, stack, name) for name in ("db", "api")}
    done = deploy(root, stack)  # a plain deploy of the same files with the rotated .env...
    assert done.returncode == 0, done.stderr
    time.sleep(3)
    for name in ("db", "api"):  # ...changes no service
        assert service(swarm, stack, name)["Spec"] == specs[name], name
        assert running_ids(swarm, stack, name) == tasks[name], name


def test_a_value_that_fails_the_healthcheck_rolls_back_files_specs_and_secrets(
    swarm_stack: tuple[Path, str], swarm: DockerClient, inproc: CLI
) -> None:
    root, stack = swarm_stack
    with edited_config(root) as raw:
        raw["secrets"]["API_KEY"]["length"] = 40  # api is healthy only with a 32-character key
    original = (root / ".env").read_bytes()
    spec = service(swarm, stack, "api")["Spec"]["TaskTemplate"]["ContainerSpec"]
    with Poller(swarm, stack, "api").polling() as poller:
        ran = inproc("precheck", "rotate", "--secrets", "API_KEY", "restart", "verify", "--timeout", "90", cwd=root)
    assert ran.code == 1, ran.text
    assert "ROLLED BACK" in ran.err and "api" in ran.err, ran.err
    assert (root / ".env").read_bytes() == original
    swarmstack.wait_converged(swarm, stack)
    now = service(swarm, stack, "api")["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert now["Env"] == spec["Env"] and now["Secrets"] == spec["Secrets"]
    names = secret_names(swarm)
    assert f"{stack}_api_key_v1" in names and f"{stack}_api_key_v2" not in names
    assert poller.low >= 1, poller.counts


def test_bad_swarm_input_is_one_line_with_nothing_changed(swarm: DockerClient, inproc: CLI, tmp_path: Path) -> None:
    root = written(tmp_path, "nosuchstack")
    before = tree(root)
    line = one_line_error(inproc("check", cwd=root))
    assert "no stack 'nosuchstack'" in line
    unused = swarmstack.STACK_FILE + "  unused:\n    external: true\n    name: ${UNUSED_SECRET}\n"
    root = written(tmp_path, "unused", unused)
    with edited_config(root) as raw:
        raw["secrets"]["API_KEY"]["swarm_secret"] = "unused"
    before = tree(root)
    line = one_line_error(inproc("rotate", "--secrets", "API_KEY", cwd=root))
    assert "secrets.API_KEY.swarm_secret" in line and "no service" in line and "'unused'" in line
    assert tree(root) == before
    root = written(tmp_path, "typo")
    with edited_config(root) as raw:
        raw["secrets"]["API_KEY"]["restart_services"] = ["apii", "api"]
    ran = inproc("rotate", "--secrets", "API_KEY", "--dry-run", cwd=root)  # a typo is said before anything changes
    assert ran.code == 0 and "'apii' is not a service or container_name" in ran.err, ran.text
    assert "did you mean 'api'" in ran.err and "skipped" in ran.err


def test_a_kill_after_the_new_swarm_secret_is_undone_by_the_next_command(
    swarm: DockerClient, inproc: CLI, tmp_path: Path
) -> None:
    root = written(tmp_path, f"k{uuid.uuid4().hex[:8]}")
    stack = root.name
    swarm.api.create_secret(f"{stack}_api_key_v1", b"b" * 32)
    original = (root / ".env").read_bytes()
    try:
        # Steps: the journal, the staged .env, the new Swarm secret; killed right after that one.
        child = crashpoints.run(root, 3, "rotate", "API_KEY")
        assert child.returncode == -9, child.stderr
        assert f"{stack}_api_key_v2" in secret_names(swarm)
        ran = inproc("restore", "--list", cwd=root)
        assert ran.code == 0 and "recovered an interrupted run" in ran.err, ran.text
        assert f"{stack}_api_key_v2" not in secret_names(swarm)
        assert (root / ".env").read_bytes() == original
    finally:
        for name in secret_names(swarm):
            if name.startswith(f"{stack}_"):
                swarm.api.remove_secret(name)

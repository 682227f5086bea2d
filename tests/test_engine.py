"""check, precheck, restart and verify on a real Docker Engine, with a shared credential."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import docker
import pytest
from docker import DockerClient
from docker.models.containers import Container

from rotation import envfile

from . import enginestack
from .conftest import CLI, edited_config

pytestmark = pytest.mark.engine


def env_of(client: DockerClient, project: str, service: str) -> dict[str, str]:
    container = enginestack.containers(client, project)[service]
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])


def ids(client: DockerClient, project: str) -> dict[str, str]:
    return {name: str(c.id) for name, c in enginestack.containers(client, project).items()}


def uptime_noted(container: Container, path: str) -> float:
    """The host's uptime that the stack wrote into `path` inside the container (one clock for all)."""
    output = container.exec_run(["cat", path]).output
    assert isinstance(output, bytes)
    return float(output.split()[0])


def test_pipeline_recreates_affected_services_in_order_with_new_values(
    compose_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI
) -> None:
    root, project = compose_stack
    before = ids(docker_client, project)
    ran = inproc("precheck", "rotate", "--secrets", "DB_PASSWORD", "restart", "verify", cwd=root)
    assert ran.code == 0, ran.text
    after = ids(docker_client, project)
    assert after["db"] != before["db"] and after["api"] != before["api"]
    assert after["worker"] == before["worker"] and after["gateway"] == before["gateway"]
    new = envfile.read(root / ".env").get("DB_PASSWORD")
    assert env_of(docker_client, project, "db")["DB_PASSWORD"] == new
    assert env_of(docker_client, project, "api")["DB_PASSWORD"] == new
    assert set(enginestack.health(docker_client, project).values()) <= {"healthy", "running"}
    assert new not in ran.text
    # The new api container started only after the new db container reported healthy.
    containers = enginestack.containers(docker_client, project)
    assert uptime_noted(containers["api"], "/tmp/started") >= uptime_noted(containers["db"], "/tmp/healthy")
    listing = json.loads(inproc("restore", "--list", "--json", cwd=root).out)
    assert listing[0]["status"] == "verified" and listing[0]["rotated_secrets"] == ["DB_PASSWORD"]


def test_tasks_run_one_per_invocation_share_the_run_that_precheck_opened(
    compose_stack: tuple[Path, str], inproc: CLI
) -> None:
    root, _project = compose_stack
    for args in (["precheck"], ["rotate", "--secrets", "DB_PASSWORD"], ["restart"]):
        ran = inproc(*args, cwd=root)
        assert ran.code == 0, ran.text
    ran = inproc("verify", cwd=root)
    assert ran.code == 0, ran.text
    assert "no precheck state" not in ran.out
    listing = json.loads(inproc("restore", "--list", "--json", cwd=root).out)
    assert [(row["kind"], row["status"]) for row in listing] == [("rotation", "verified")]


def test_restart_keeps_the_old_environment_where_recreate_applies_the_new(
    compose_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI
) -> None:
    root, project = compose_stack
    assert inproc("rotate", "--secrets", "DB_PASSWORD", cwd=root).code == 0
    assert inproc("restart", "--services", "db", "--no-healthcheck", cwd=root).code == 0  # api is left behind
    new = envfile.read(root / ".env").get("DB_PASSWORD")
    api = enginestack.containers(docker_client, project)["api"]
    api.restart(timeout=1)
    assert env_of(docker_client, project, "api")["DB_PASSWORD"] != new  # the pitfall, reproduced
    enginestack.wait_healthy(docker_client, project, "unhealthy", "api")
    ran = inproc("restart", "--services", "api", cwd=root)
    assert ran.code == 0, ran.text
    assert env_of(docker_client, project, "api")["DB_PASSWORD"] == new
    assert enginestack.health(docker_client, project)["api"] == "healthy"


def test_a_client_left_out_of_the_restart_set_is_caught(
    compose_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI
) -> None:
    root, project = compose_stack
    assert inproc("precheck", "rotate", "--secrets", "DB_PASSWORD", cwd=root).code == 0
    started = time.monotonic()
    ran = inproc("restart", "--services", "db", "--timeout", "120", "--no-rollback", cwd=root)
    assert ran.code == 1
    # The client's own checks fail against the new db; the engine's "unhealthy" ends the wait, long
    # before the deadline, and the failure names it and says that it was not recreated.
    assert "failed: api: depends on db, which was recreated, and turned unhealthy: running (unhealthy)" in ran.out
    assert "it is in no restart_services" in ran.out
    assert time.monotonic() - started < 90, "the restart waited for its deadline instead of the verdict"
    enginestack.wait_healthy(docker_client, project, "unhealthy", "api")
    ran = inproc("verify", "--no-rollback", cwd=root)
    assert ran.code == 1
    assert "api is no longer healthy" in ran.out


def test_restart_fails_and_names_a_client_recreated_without_its_database(
    compose_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI
) -> None:
    root, _project = compose_stack
    assert inproc("rotate", "--secrets", "DB_PASSWORD", cwd=root).code == 0
    started = time.monotonic()
    ran = inproc("restart", "--services", "api", "--timeout", "120", "--no-rollback", cwd=root)
    assert ran.code == 1
    assert "failed: api: running (unhealthy)" in ran.out, ran.out  # named with its state, at the verdict
    assert time.monotonic() - started < 90, "the restart waited for its deadline instead of the verdict"


def test_check_table_save_and_compare_report_a_stopped_service(
    compose_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI, tmp_path: Path
) -> None:
    root, project = compose_stack
    saved = tmp_path / "state.json"
    ran = inproc("check", "--save", str(saved), cwd=root)
    assert ran.code == 0, ran.text
    header = ran.out.splitlines()[0].split()
    assert header == ["SERVICE", "STATE", "HEALTH", "RESTARTS", "UPTIME"]
    assert {"db", "api", "gateway", "worker"} <= set(json.loads(saved.read_text())["services"])
    enginestack.containers(docker_client, project)["gateway"].stop(timeout=1)
    ran = inproc("check", "--verbose", cwd=root)
    assert ran.code == 1 and "gateway" in ran.err
    assert "exit code" in ran.out and "OOMKilled: no" in ran.out
    ran = inproc("check", "--compare", str(saved), cwd=root)
    assert ran.code == 1
    assert "regression: gateway is no longer healthy: exited" in ran.out
    compose = root / "docker-compose.yml"
    compose.write_text(f"include:\n  - other.yml\n{compose.read_text()}")  # beyond docker-compose v1
    for task in ("check", "precheck"):  # could not look: not the same as unhealthy, for a health gate
        ran = inproc(task, cwd=root)
        assert ran.code == 6 and "cannot tell the stack's health" in ran.err and "include:" in ran.err, ran.text


def test_container_names_resolve_and_unknown_services_are_named(
    compose_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI
) -> None:
    root, _project = compose_stack
    ran = inproc("rotate", "--secrets", "API_KEY", "restart", "verify", cwd=root)  # names the gateway by container
    assert ran.code == 0, ran.text
    assert "recreated gateway" in ran.out
    with edited_config(root) as raw:  # a name the stack lacks is said in the plan, and skipped
        raw["secrets"]["API_KEY"]["restart_services"].append("supabase-nonexistent")
    ran = inproc("rotate", "--secrets", "API_KEY", cwd=root)
    assert ran.code == 0 and "'supabase-nonexistent' is not a service or container_name" in ran.err, ran.text
    ran = inproc("restart", cwd=root)
    assert ran.code == 0 and "recreated gateway" in ran.out, ran.text


def test_unreachable_engine_is_one_clear_line(stack: Path, inproc: CLI) -> None:
    ran = inproc("check", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert ran.code != 0
    assert "cannot reach the container engine at unix:///nonexistent/docker.sock" in ran.err
    assert "Traceback" not in ran.text and len(ran.err.strip().splitlines()) == 1


def test_missing_compose_command_is_named(compose_stack: tuple[Path, str], inproc: CLI) -> None:
    root, _ = compose_stack
    with edited_config(root) as raw:
        raw["compose"]["command"] = "no-such-compose"
    ran = inproc("check", cwd=root)
    assert ran.code != 0 and "compose.command: 'no-such-compose' not found" in ran.err


OVERRIDE = """
services:
  worker:
    environment:
      MODE: private
"""


def test_restart_keeps_the_override_files_the_stack_was_started_with(
    compose_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI
) -> None:
    root, project = compose_stack
    (root / "docker-compose.override.private.yml").write_text(OVERRIDE)
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.override.private.yml"]
    enginestack.compose(root, "-p", project, *files, "up", "-d", "--no-deps", "worker")
    assert env_of(docker_client, project, "worker")["MODE"] == "private"
    before = ids(docker_client, project)["worker"]
    ran = inproc("restart", "--services", "worker", cwd=root)  # the configuration names no compose file
    assert ran.code == 0, ran.text
    assert ids(docker_client, project)["worker"] != before  # recreated...
    assert env_of(docker_client, project, "worker")["MODE"] == "private"  # ...with its override


def test_check_compare_after_a_successful_pipeline_passes_and_still_sees_a_real_failure(
    compose_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI, tmp_path: Path
) -> None:
    root, project = compose_stack
    saved = tmp_path / "before.json"
    assert inproc("check", "--save", str(saved), cwd=root).code == 0
    ran = inproc("precheck", "rotate", "--secrets", "DB_PASSWORD", "restart", "verify", cwd=root)
    assert ran.code == 0, ran.text
    ran = inproc("check", "--compare", str(saved), cwd=root)
    assert ran.code == 0, ran.text  # db and api were recreated on purpose, after the state was saved
    enginestack.containers(docker_client, project)["worker"].restart(timeout=1)
    ran = inproc("check", "--compare", str(saved), cwd=root)
    assert ran.code == 1 and "regression: worker was restarted" in ran.out, ran.text
    assert "regression: db" not in ran.out and "regression: api" not in ran.out


def test_a_failing_compose_command_reaches_the_user_with_its_own_words(
    compose_stack: tuple[Path, str], inproc: CLI
) -> None:
    root, _project = compose_stack
    (root / "docker-compose.yml").write_text("services:\n  worker:\n    image: [unclosed\n")
    ran = inproc("restart", "--services", "worker", cwd=root)
    assert ran.code == 1 and "docker-compose" in ran.err and "exit code -1" not in ran.err, ran.err
    assert len(ran.err.strip().splitlines()) == 1 and "Traceback" not in ran.err


def test_a_dependent_keeps_its_old_container_until_its_dependency_is_healthy(
    compose_stack: tuple[Path, str], docker_client: DockerClient, inproc: CLI
) -> None:
    """Stop late, sampled from the engine every 0.1 s while restart runs: whenever api's old
    container is no longer running, db's new container has already been seen healthy."""
    import subprocess
    import sys
    import time

    root, project = compose_stack
    before = ids(docker_client, project)
    assert inproc("rotate", "--secrets", "DB_PASSWORD", cwd=root).code == 0
    child = subprocess.Popen(
        [sys.executable, "-m", "rotation", "restart"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    samples = []  # (new db healthy, old api running)
    label = {"label": f"com.docker.compose.project={project}"}

    def healthy(container_id: str) -> bool:  # Podman's list leaves health out of Status: inspect it
        try:
            state = docker_client.api.inspect_container(container_id)["State"]
        except docker.errors.APIError as exc:  # Docker says 404; Podman 500 "no such container"
            if exc.status_code == 404 or "no such container" in str(exc):
                return False  # replaced between the list and the inspect
            raise
        return state.get("Status") == "running" and (state.get("Health") or {}).get("Status") == "healthy"

    while child.poll() is None:
        listed = docker_client.api.containers(all=True, filters=label)
        db_new_healthy = any(
            c["Labels"].get("com.docker.compose.service") == "db" and c["Id"] != before["db"] and healthy(c["Id"])
            for c in listed
        )
        api_running = any(c["Id"] == before["api"] and c["State"] == "running" for c in listed)
        samples.append((db_new_healthy, api_running))
        time.sleep(0.1)
    out, err = child.communicate()
    assert child.returncode == 0, out + err
    first_gone = next(i for i, (_, running) in enumerate(samples) if not running)
    assert any(healthy for healthy, _ in samples[: first_gone + 1]), "api's old container stopped before db was healthy"
    assert samples[0][1], "api's old container was not even running when the restart began"
    assert re.search(r"without a healthy container: api \d+\.\ds, db \d+\.\ds", out), out


def test_a_reload_signal_reaches_the_service_and_leaves_it_running(
    compose_stack: tuple[Path, str], docker_client: DockerClient
) -> None:
    """A certificate's `signal:` reload, sent through the engine: busybox httpd (db) rereads its
    configuration on SIGHUP and keeps running; `sleep` (gateway) dies of SIGUSR1, which proves the
    signal arrives; a service that is not running is one line."""
    from rotation.config import load
    from rotation.engines import engine_for
    from rotation.errors import EngineError

    root, project = compose_stack
    engine = engine_for(root, load(root / "secrets-config.yaml"))
    before = enginestack.containers(docker_client, project)
    engine.signal("db", "HUP")
    engine.signal("gateway", "USR1")
    deadline = time.monotonic() + 20
    gateway = before["gateway"]
    while gateway.status == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        gateway.reload()
    assert gateway.status == "exited", gateway.status
    db = enginestack.containers(docker_client, project)["db"]
    db.reload()
    assert db.id == before["db"].id and db.status == "running"
    with pytest.raises(EngineError, match=r"gateway .* is not running"):
        engine.signal("gateway", "HUP")

"""The demo stack of examples/demo, brought up on a real engine and walked through as its README
says: a rotation end to end, then a restart that cannot succeed and is rolled back."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from docker import DockerClient

from . import enginestack
from .conftest import CLI, REPO

pytestmark = pytest.mark.engine


def test_the_demo_rotates_end_to_end_and_rolls_back_a_restart_that_breaks_it(
    tmp_path: Path, docker_client: DockerClient, inproc: CLI
) -> None:
    project = f"rt{uuid.uuid4().hex[:8]}"
    root = tmp_path / "demo"
    shutil.copytree(REPO / "examples" / "demo", root)
    env = root / ".env"  # the README's image is pulled from Docker Hub; the tests use the local one
    env.write_text(env.read_text().replace("rotation-demo", project) + f"DEMO_IMAGE={enginestack.IMAGE}\n")
    config = root / "secrets-config.yaml"
    config.write_text(config.read_text().replace("rotation-demo", project))
    try:
        enginestack.compose(root, "-p", project, "up", "-d")
        enginestack.wait_healthy(docker_client, project)
        before = env.read_text()
        ran = inproc("precheck", "rotate", "restart", "verify", cwd=root)
        assert ran.code == 0, ran.text
        assert "restart: recreated db, api, in dependency order" in ran.out, ran.out
        rotated = env.read_text()
        assert rotated != before and "DB_PASSWORD=5d41402abc4b2a76b9719d911017c592" not in rotated
        assert set(enginestack.health(docker_client, project).values()) == {"healthy"}

        assert inproc("rotate", "--secrets", "DB_PASSWORD", cwd=root).code == 0
        broken = inproc("restart", "--services", "api", "--timeout", "10", cwd=root)
        assert broken.code == 1 and "ROLLED BACK run" in broken.err, broken.text
        assert env.read_text() == rotated  # as after the first rotation
        assert set(enginestack.health(docker_client, project).values()) == {"healthy"}
    finally:
        subprocess.run(["docker-compose", "-p", project, "down", "-t", "0"], cwd=root, capture_output=True)
        enginestack.remove_project(docker_client, project)

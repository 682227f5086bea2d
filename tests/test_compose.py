"""The compose backend on plain data: container attributes as the engine API returns them, compose errors."""

from __future__ import annotations

import pytest

from rotation.engines.compose import compose_failure
from rotation.engines.docker import state_of


class FakeContainer:
    """The attributes the engine API returns for a container, as Docker and Podman shape them."""

    def __init__(self, state: dict[str, object]) -> None:
        self.id = "c1"
        self.attrs = {"State": state, "RestartCount": 2}


@pytest.mark.parametrize(
    ("state", "healthy", "health"),
    [
        ({"Status": "running"}, True, None),  # Docker: no healthcheck, no Health key
        ({"Status": "running", "Health": {"Status": ""}}, True, None),  # Podman: empty status
        ({"Status": "running", "Health": {"Status": "healthy", "Log": [{"Output": "ok\n"}]}}, True, "healthy"),
        ({"Status": "running", "Health": {"Status": "unhealthy", "Log": [{"Output": "refused"}]}}, False, "unhealthy"),
        ({"Status": "exited", "ExitCode": 3, "OOMKilled": True}, False, None),
    ],
)
def test_engine_states_read_docker_and_podman_shapes(
    state: dict[str, object], healthy: bool, health: str | None
) -> None:
    read = state_of("svc", FakeContainer(state))  # type: ignore[arg-type]
    assert read.healthy is healthy and read.health == health and read.restarts == 2
    if state["Status"] == "exited":
        assert read.summary == "exited (code 3)" and read.oom_killed
    assert state_of("svc", None).state == "missing"


def test_a_compose_failure_names_the_error_line_not_the_help_after_it() -> None:
    output = (
        "The Compose file './docker-compose.yml' is invalid because:\n"
        "'name' does not match any of the regexes: '^x-'\n\n"
        "You might be seeing this error because you're using the wrong Compose file version.\n"
        "For more on the Compose file format versions, see https://docs.docker.com/compose/compose-file/\n"
    )
    message = str(compose_failure(["docker-compose", "-p", "x", "config"], output, 1))
    assert message == (
        "`docker-compose -p x ...` failed: The Compose file './docker-compose.yml' is invalid because: "
        "'name' does not match any of the regexes: '^x-'"
    )
    assert str(compose_failure(["docker", "compose", "up"], "", 3)).endswith("failed: exit code 3")


def test_the_manual_recreate_command_is_the_compose_command_for_this_project(tmp_path: object) -> None:
    import sys
    from pathlib import Path

    from rotation.config import ComposeSpec
    from rotation.engines.compose import ComposeEngine

    spec = ComposeSpec(command=f"{sys.executable} -m compose", project="localai", files=("a.yml", "b.yml"))
    engine = ComposeEngine(Path(str(tmp_path)), spec)
    assert engine.recreate_command(["db", "auth"]) == (
        f"{sys.executable} -m compose -p localai -f a.yml -f b.yml up -d --force-recreate db auth"
    )

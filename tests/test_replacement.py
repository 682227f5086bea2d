"""Which services may be replaced start-first, and the engine request that replaces one, without an engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rotation.composefiles import read
from rotation.engines.startfirst import aliases, create_body, nanoseconds
from rotation.errors import EngineError
from rotation.replacement import Footprint, footprint, strategy

ROOT = Path("/srv/stack")
FIRST = {"deploy": {"update_config": {"order": "start-first"}}}


@pytest.mark.parametrize(
    ("body", "order", "reason"),
    [
        (FIRST, "start-first", "declares deploy.update_config.order: start-first"),
        ({}, "stop-late", "declares no deploy.update_config.order"),
        ({"deploy": {"update_config": {"order": "stop-first"}}}, "stop-late", "declares order: stop-first"),
        ({**FIRST, "ports": ["127.0.0.1:8000:8000"]}, "stop-late", "publishes host port 8000"),
        ({**FIRST, "ports": [{"target": 80, "published": "8080"}]}, "stop-late", "publishes host port 8080"),
        ({**FIRST, "ports": ["8080"]}, "start-first", "declares"),  # the engine picks a free host port for each
        ({**FIRST, "networks": {"back": {"ipv4_address": "10.0.0.5"}}}, "stop-late", "has a fixed address"),
        ({**FIRST, "volumes": ["db-data:/var/lib/postgresql/data"]}, "stop-late", "writes db-data"),
        (
            {**FIRST, "volumes": ["./volumes/db/data:/var/lib/postgresql/data:Z"]},
            "stop-late",
            "writes /srv/stack/volumes",
        ),
        ({**FIRST, "volumes": ["./volumes/db/data:/data:ro"]}, "start-first", "declares"),  # a reader only
        (
            {**FIRST, "volumes": [{"type": "volume", "source": "db-data", "target": "/d", "read_only": True}]},
            "start-first",
            "",
        ),
        ({**FIRST, "volumes": ["cache:/cache"]}, "start-first", "declares"),  # not marked single-writer
        ({**FIRST, "network_mode": "host"}, "stop-late", "shares the host's network"),
        ({**FIRST, "network_mode": "service:db"}, "stop-late", "shares the network of service:db"),
        ({**FIRST, "network_mode": "bridge"}, "start-first", "declares"),
        ({"deploy": {"replicas": 2, "update_config": {"order": "start-first"}}}, "stop-late", "runs 2 replicas"),
    ],
)
def test_start_first_only_where_declared_and_two_containers_can_run(body: dict, order: str, reason: str) -> None:
    found = strategy(footprint(body, ROOT), ["db-data", "./volumes/db/data"], ROOT)
    assert found.order == order and reason in found.reason


def test_the_plan_reads_the_declaration_from_the_compose_files_as_compose_merges_them(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump({"services": {"api": {"image": "x", **FIRST}}}))
    (tmp_path / "compose.override.yaml").write_text(yaml.safe_dump({"services": {"api": {"ports": ["80:80"]}}}))
    readers = read(tmp_path, [])
    assert readers.footprints["api"] == Footprint(order="start-first", published=("80",))


@pytest.mark.parametrize(
    ("text", "nanos"), [("1s", 10**9), ("1m30s", 90 * 10**9), ("500ms", 5 * 10**8), ("10", 10**10)]
)
def test_compose_durations_become_the_engines_nanoseconds(text: str, nanos: int) -> None:
    assert nanoseconds(text) == nanos


def test_a_duration_compose_would_refuse_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match="'soon' is not a duration"):
        nanoseconds("soon")


OLD = {
    "Id": "0123456789abcdef0123",
    "Image": "sha256:abc",
    "Config": {
        "Hostname": "0123456789ab",
        "Image": "app:1",
        "Env": ["PATH=/bin", "TOKEN=old", "container=podman"],
        "Cmd": ["serve"],
        "Entrypoint": ["/init"],
        "WorkingDir": "/app",
        "User": "",
        "Labels": {"from.image": "yes", "com.docker.compose.config-hash": "old", "com.docker.compose.service": "api"},
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 10**9, "Retries": 3},
        "StopTimeout": 0,
    },
    "HostConfig": {
        "NetworkMode": "bridge",
        "Binds": ["/srv/stack/conf:/conf:ro"],
        "Ulimits": [{"Name": "RLIMIT_NOFILE", "Soft": 1024, "Hard": 1024}],
        "Init": True,
    },
    "Mounts": [
        {"Type": "bind", "Source": "/srv/stack/conf", "Destination": "/conf", "RW": False},
        {"Type": "volume", "Name": "f00d", "Destination": "/cache", "RW": True},
    ],
    "NetworkSettings": {"Networks": {"stack_default": {"Aliases": ["api", "0123456789ab"]}, "stack_back": {}}},
}
IMAGE = {
    "Entrypoint": ["/init"],
    "Cmd": ["serve"],
    "WorkingDir": "/app",
    "User": "",
    "Env": ["PATH=/bin"],
    "Labels": {"from.image": "yes"},
}


def test_a_replacement_gets_the_new_configuration_and_keeps_the_containers_own_settings() -> None:
    body = {
        "environment": {"TOKEN": "new$x", "DEBUG": True, "PORT": 8080, "UNSET": None},
        "healthcheck": {"test": "wget -q http://127.0.0.1/ok", "interval": "2s", "start_period": "5s"},
        "labels": {"traefik.enable": "true"},
    }
    request = create_body(OLD, IMAGE, body, "new-hash", "stack_default")
    assert request["Env"] == ["TOKEN=new$x", "DEBUG=true", "PORT=8080"]  # the engine adds the image's and its own
    assert request["Labels"] == {
        "com.docker.compose.config-hash": "new-hash",
        "com.docker.compose.service": "api",
        "traefik.enable": "true",
    }
    assert request["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q http://127.0.0.1/ok"],
        "Interval": 2 * 10**9,
        "Retries": 3,
        "StartPeriod": 5 * 10**9,
    }
    for inherited in ("Hostname", "Entrypoint", "Cmd", "WorkingDir", "User", "StopTimeout"):
        assert inherited not in request  # the image's (or the engine's) to decide, as before
    host = request["HostConfig"]
    assert host["NetworkMode"] == "stack_default" and host["Init"] is True
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 1024}]  # as Podman takes it
    assert host["Binds"] == ["/srv/stack/conf:/conf:ro", "f00d:/cache:rw"]  # the anonymous volume goes along
    assert request["NetworkingConfig"] == {"EndpointsConfig": {"stack_default": {}}}


def test_a_command_the_definition_sets_is_split_as_compose_splits_it() -> None:
    request = create_body(OLD, IMAGE, {"command": "redis-server --requirepass 'a b'"}, "h", "n")
    assert request["Cmd"] == ["redis-server", "--requirepass", "a b"]
    assert create_body(OLD, IMAGE, {"healthcheck": {"disable": True}}, "h", "n")["Healthcheck"] == {"Test": ["NONE"]}


def test_the_replacement_answers_to_the_services_names_and_its_container_name_not_the_old_id() -> None:
    assert aliases(OLD, "stack_default", "supabase-kong") == ["api", "supabase-kong"]
    assert aliases(OLD, "stack_back", "supabase-kong") == ["supabase-kong"]

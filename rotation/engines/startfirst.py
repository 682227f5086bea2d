"""A start-first replacement of one Compose service, beside its old container, container_name and all.

Compose cannot do it: `up --scale` refuses a service with `container_name` (every Supabase service
has one), and a recreate stops the old container before the new one starts. So the replacement is
made through the engine API from the service's new configuration, as compose would make it, and
takes the old container's place only once it is healthy:

1. It is created from the old container's settings, with what the new configuration decides
   (environment, command, entrypoint, healthcheck, labels, and the config hash compose computes,
   so that a later `compose up -d` recreates nothing) under a temporary name, on the service's
   networks without its names: no client reaches it yet.
2. It starts and must turn healthy in time; if it does not, it is removed.
3. It joins the networks under the service's names, so both containers answer.
4. The old container leaves the networks, is stopped after a short drain and removed, and the
   replacement takes its name.

An interrupted replacement (the process killed) is finished or undone by the next one.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shlex
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_exponential

from ..errors import EngineError
from .docker import NEXT, is_replacement, state_of
from .protocol import ServiceState

if TYPE_CHECKING:
    from docker.models.containers import Container

    from .compose import ComposeEngine, Origin

__all__ = ["DRAIN", "aliases", "create_body", "nanoseconds", "replace"]

log = logging.getLogger(__name__)

CONFIG_HASH = "com.docker.compose.config-hash"
DRAIN = 0.5  # seconds the old container runs on after leaving the networks: work in flight ends
DEFAULT_STOP = 10.0  # seconds compose gives a container to stop without stop_grace_period

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_NANOS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def nanoseconds(duration: object) -> int:
    """A compose duration (`1m30s`, `500ms`, `10`) in nanoseconds, as the engine API takes it."""
    text = str(duration).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return int(float(text) * 10**9)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise EngineError(f"'{text}' is not a duration compose understands")
    return int(sum(float(n) * _NANOS[u] for n, u in parts))


def _argv(value: object) -> list[str]:
    """A compose command or entrypoint as the engine takes it: a list, a string split as compose splits it."""
    if isinstance(value, list):
        return [str(item) for item in value]
    return shlex.split(str(value))


def _text(value: object) -> str:
    """A scalar as compose passes it to the engine (`true`, not `True`)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _pairs(value: object) -> dict[str, str | None]:
    """`environment:` or `labels:` as a mapping, from either of compose's two forms."""
    if isinstance(value, Mapping):
        return {str(k): None if v is None else _text(v) for k, v in value.items()}
    found: dict[str, str | None] = {}
    for item in value if isinstance(value, list) else []:
        key, sep, rest = str(item).partition("=")
        found[key] = rest if sep else None
    return found


def _healthcheck(raw: Mapping[str, Any], old: Mapping[str, Any] | None) -> dict[str, Any]:
    if raw.get("disable") in (True, "true"):
        return {"Test": ["NONE"]}
    check = dict(old or {})
    test = raw.get("test")
    if test is not None:
        check["Test"] = [str(t) for t in test] if isinstance(test, list) else ["CMD-SHELL", str(test)]
    for key, field in (("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod")):
        if raw.get(key) is not None:
            check[field] = nanoseconds(raw[key])
    if raw.get("retries") is not None:
        check["Retries"] = int(raw["retries"])
    return check


def create_body(
    old: Mapping[str, Any], image: Mapping[str, Any], body: Mapping[str, Any], config_hash: str, network: str
) -> dict[str, Any]:
    """The engine API's create request for a replacement of the container `old` (as inspected): its
    settings, less what the image `image` (its inspected Config) provides anyway, with the values the
    service's new compose definition `body` decides. It starts on `network` alone, without aliases.

    Only the container's own settings are carried over, as watchtower's GetCreateConfig does it,
    so that the image's defaults stay the image's. Anonymous volumes are handed on, as compose's
    recreate does.
    """
    config = dict(old.get("Config") or {})
    for key in ("WorkingDir", "User"):
        if config.get(key) == image.get(key):
            config.pop(key, None)
    if config.get("Hostname") == str(old.get("Id", ""))[:12]:
        config.pop("Hostname")  # the engine's default, the container's id: the new one gets its own
    if (config.get("Entrypoint") or None) == (image.get("Entrypoint") or None):
        config.pop("Entrypoint", None)
        if config.get("Cmd") == image.get("Cmd"):
            config.pop("Cmd", None)
    if not config.get("StopTimeout"):
        config.pop("StopTimeout", None)  # Podman reports 0 for "not set"
    if "command" in body:
        config["Cmd"] = _argv(body["command"])
    if "entrypoint" in body:
        config["Entrypoint"] = _argv(body["entrypoint"])
    if isinstance(body.get("healthcheck"), Mapping):
        config["Healthcheck"] = _healthcheck(body["healthcheck"], config.get("Healthcheck"))
    # The environment is the service's alone: the engine adds the image's (and Podman its own) again.
    config["Env"] = [f"{k}={v}" for k, v in _pairs(body.get("environment")).items() if v is not None]
    inherited = image.get("Labels") or {}
    labels = {k: v for k, v in (config.get("Labels") or {}).items() if inherited.get(k) != v}
    labels.update({k: v for k, v in _pairs(body.get("labels")).items() if v is not None})
    labels[CONFIG_HASH] = config_hash
    config["Labels"] = labels

    host = dict(old.get("HostConfig") or {})
    host["NetworkMode"] = network
    # Podman reports limits as RLIMIT_NOFILE, and takes them only as nofile.
    host["Ulimits"] = [
        {**limit, "Name": str(limit.get("Name", "")).lower().removeprefix("rlimit_")}
        for limit in host.get("Ulimits") or []
    ] or None
    covered = {str(b).split(":")[1] for b in host.get("Binds") or [] if ":" in str(b)}
    covered |= {str(m.get("Target")) for m in host.get("Mounts") or []}
    anonymous = [
        f"{m['Name']}:{m['Destination']}:{'rw' if m.get('RW', True) else 'ro'}"
        for m in old.get("Mounts") or []
        if m.get("Type") == "volume" and m.get("Name") and m.get("Destination") not in covered
    ]
    if anonymous:
        host["Binds"] = [*(host.get("Binds") or []), *anonymous]
    return {**config, "HostConfig": host, "NetworkingConfig": {"EndpointsConfig": {network: {}}}}


def aliases(old: Mapping[str, Any], network: str, name: str) -> list[str]:
    """The names the service answers to on `network`: the old container's aliases but its own id,
    and its container name, which clients may use and which the old container still holds."""
    endpoint = ((old.get("NetworkSettings") or {}).get("Networks") or {}).get(network) or {}
    own = {str(old.get("Id", ""))[:12], str((old.get("Config") or {}).get("Hostname") or "")}
    found = [a for a in endpoint.get("Aliases") or [] if a not in own]
    return list(dict.fromkeys([*found, name]))


def replace(engine: ComposeEngine, service: str, timeout: float) -> ServiceState:
    """Replace `service` start-first (the module's steps); the replacement's last state."""
    import docker

    deadline = time.time() + max(timeout, 0)
    old = _settled(engine, service)
    if old is None or old.status != "running":
        return _stop_late(engine, service, deadline, "it has no running container to keep serving")
    origin = engine.origins().get(service, engine.own_origin)
    body, config_hash = _configuration(engine, origin, service)
    api = engine.client.api
    try:
        wanted: dict[str, Any] = api.inspect_image(str(body.get("image") or old.attrs["Config"].get("Image")))  # type: ignore[no-untyped-call]
    except docker.errors.DockerException:
        wanted = {}
    if wanted.get("Id") != old.attrs.get("Image"):
        return _stop_late(engine, service, deadline, "its image is not the one its container runs")
    name = str(old.name)
    networks = list((old.attrs.get("NetworkSettings") or {}).get("Networks") or {})
    if not networks:
        return _stop_late(engine, service, deadline, "its container is on no network")
    try:
        image = wanted.get("Config") or {}
        request = create_body(old.attrs, image, body, config_hash, networks[0])
        created = str(api.create_container_from_config(request, name=f"{name}{NEXT}")["Id"])  # type: ignore[no-untyped-call]
    except docker.errors.DockerException as exc:
        raise EngineError(f"service {service}: the engine could not create its replacement: {_why(exc)}") from None
    new = engine.client.containers.get(created)
    try:
        for network in networks[1:]:
            api.connect_container_to_network(created, network)
        new.start()
        state = _watch(engine, service, created, deadline)
        if not state.healthy:
            _remove(new)
            return state
        for network in networks:  # the same endpoint cannot change its aliases: leave and join again
            api.disconnect_container_from_network(created, network)
            api.connect_container_to_network(created, network, aliases=aliases(old.attrs, network, name))
    except docker.errors.DockerException as exc:
        _remove(new)
        raise EngineError(f"service {service}: its replacement failed before serving: {_why(exc)}") from None
    left: list[str] = []
    try:
        for network in networks:
            api.disconnect_container_from_network(str(old.id), network)
            left.append(network)
    except docker.errors.DockerException as exc:
        _rejoin(engine, old, left, name)
        _remove(new)
        raise EngineError(f"service {service}: its old container could not leave the network: {_why(exc)}") from None
    serving = engine.client.info().get("SystemTime")
    time.sleep(DRAIN)
    try:
        old.stop(timeout=_grace(body))
        old.remove()
        new.rename(name)
    except docker.errors.DockerException as exc:
        raise EngineError(
            f"service {service}: its replacement serves as {name}{NEXT}, but the old container {name} could "
            f"not be removed ({_why(exc)}); remove it and rename the replacement by hand"
        ) from None
    new.reload()
    state = state_of(service, new)
    return dataclasses.replace(state, serving_since=serving or state.passed_at)


def _why(exc: BaseException) -> str:
    return str(getattr(exc, "explanation", None) or exc)[:300]


def _grace(body: Mapping[str, Any]) -> int:
    grace = body.get("stop_grace_period")
    return max(1, round(nanoseconds(grace) / 10**9)) if grace is not None else int(DEFAULT_STOP)


def _unescaped(node: Any) -> Any:
    """`compose config` prints a literal `$` as `$$`, so that its output reads back the same; the
    engine takes it as the one character."""
    if isinstance(node, str):
        return node.replace("$$", "$")
    if isinstance(node, list):
        return [_unescaped(item) for item in node]
    if isinstance(node, dict):
        return {key: _unescaped(value) for key, value in node.items()}
    return node


def _configuration(engine: ComposeEngine, origin: Origin, service: str) -> tuple[dict[str, Any], str]:
    """The service's new definition, interpolated from the env files now, and compose's hash of it.
    The text holds secret values: it stays in memory and is never shown."""
    try:
        model = yaml.safe_load(engine.compose(origin, "config"))
    except yaml.YAMLError:
        raise EngineError("compose config printed something that is not YAML") from None
    body = _unescaped(((model or {}).get("services") or {}).get(service))
    hashed = engine.compose(origin, "config", f"--hash={service}").split()
    if not isinstance(body, dict) or len(hashed) != 2 or hashed[0] != service:
        raise EngineError(f"service {service}: compose did not describe it (config --hash={service})")
    return body, hashed[1]


def _settled(engine: ComposeEngine, service: str) -> Container | None:
    """The service's container, once an interrupted replacement is finished or undone: a replacement
    left beside a container that still serves is removed; one whose predecessor had left serves on
    and takes its name."""
    import docker

    found = engine.every_container(service)
    current = [c for c in found if not is_replacement(c.name)]
    spare = [c for c in found if is_replacement(c.name)]
    if not spare:
        return current[-1] if current else None
    old = current[-1] if current else None
    if old is not None and old.status == "running" and (old.attrs.get("NetworkSettings") or {}).get("Networks"):
        for container in spare:
            _remove(container)
        return old
    running = [c for c in spare if c.status == "running"]
    if not running:
        for container in spare:
            _remove(container)
        return old
    log.warning("service %s: finishing a replacement an earlier run left half-way", service)
    try:
        if old is not None:
            old.remove(force=True)
        name = str(running[-1].name).removesuffix(NEXT)
        running[-1].rename(name)
    except docker.errors.DockerException as exc:
        raise EngineError(f"service {service}: an earlier replacement could not be finished: {_why(exc)}") from None
    running[-1].reload()
    return running[-1]


def _watch(engine: ComposeEngine, service: str, container_id: str, deadline: float) -> ServiceState:
    """Poll the replacement until it is healthy, has stopped or turned unhealthy (a name that does
    not resolve yet is no verdict), or time is up."""
    import docker

    def read() -> ServiceState:
        try:
            return state_of(service, engine.client.containers.get(container_id))
        except docker.errors.NotFound:
            return ServiceState(service, "missing")

    def settled(state: ServiceState) -> bool:
        return state.healthy or state.state == "missing" or (state.failing and not state.unresolved)

    result: ServiceState = Retrying(
        stop=stop_after_delay(max(deadline - time.time(), 0)),
        wait=wait_exponential(multiplier=0.05, min=0.05, max=0.5),
        retry=retry_if_result(lambda state: not settled(state)),
        retry_error_callback=lambda retry: retry.outcome.result() if retry.outcome else read(),
    )(read)
    return result


def _rejoin(engine: ComposeEngine, old: Container, networks: list[str], name: str) -> None:
    """Put the old container back on the networks it left, under its names: it serves on, as before."""
    import docker

    for network in networks:
        try:
            engine.client.api.connect_container_to_network(
                str(old.id), network, aliases=aliases(old.attrs, network, name)
            )
        except docker.errors.DockerException as exc:
            log.warning("could not put %s back on %s: %s", name, network, _why(exc))


def _remove(container: Container) -> None:
    import docker

    try:
        container.remove(force=True)
    except docker.errors.DockerException as exc:
        log.warning("could not remove %s: %s", container.name, _why(exc))


def _stop_late(engine: ComposeEngine, service: str, deadline: float, why: str) -> ServiceState:
    log.warning("service %s: replaced stop-late: %s", service, why)
    previous = engine.state(service).container_id
    engine.recreate([service])
    return engine.wait_healthy(service, previous, deadline - time.time())

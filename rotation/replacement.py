"""How each service is replaced on Compose: start-first beside its old container, or stop-late.

Compose ignores `deploy:` outside Swarm, so a service's `deploy.update_config.order: start-first` is
ours to honour, and the same file then means the same thing on Swarm, where `order` is documented
(https://docs.docker.com/reference/compose-file/deploy/#update_config). A service runs twice for a
moment only where two containers can: not when it publishes a host port (the second cannot bind
it), has a fixed address or no network of its own (`network_mode`), runs several replicas, or
writes a volume the stack marks single-writer (`compose.single_writer`, a database's data).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["SWARM", "Footprint", "Order", "Strategy", "footprint", "strategy"]

Order = Literal["start-first", "stop-late", "swarm"]


@dataclass(frozen=True, slots=True)
class Footprint:
    """What decides whether a service may run twice: its declared update order, the host ports it
    publishes, whether it has a fixed address, and the volumes it writes (names, or absolute paths
    of bind mounts)."""

    order: str | None = None
    published: tuple[str, ...] = ()
    fixed_address: bool = False
    writes: tuple[str, ...] = ()
    network_mode: str | None = None  # host, none, service:NAME, container:NAME: no networks of its own
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class Strategy:
    """How a service is replaced, and why, for the plan and the restart to show."""

    order: Order
    reason: str
    declared: str | None = None  # the order the service declares, if any

    @property
    def notable(self) -> bool:
        """Worth a word in a plan: start-first, or declared so and refused (stop-late by default is not)."""
        return self.order != "stop-late" or self.declared == "start-first"

    def to_json(self) -> dict[str, str | None]:
        return {"order": self.order, "reason": self.reason, "declared": self.declared}


SWARM = Strategy("swarm", "Swarm's rolling update follows the service's deploy.update_config")


def _mapping(value: Any) -> Mapping[Any, Any]:
    return value if isinstance(value, Mapping) else {}


def _published(entry: Any) -> str | None:
    """The host port a `ports:` entry binds, in short (`8080:80`, `127.0.0.1:8080:80/tcp`) or long
    syntax; None for one that names only the container port (the engine picks a free host port)."""
    if isinstance(entry, Mapping):
        published = entry.get("published")
        return str(published) if published not in (None, "") else None
    parts = str(entry).split("/", 1)[0].rsplit(":", 2)
    return parts[-2] if len(parts) >= 2 and parts[-2] else None


def _written(entry: Any, directory: Path) -> str | None:
    """The volume name or absolute host path a `volumes:` entry writes; None for a read-only one, a
    tmpfs or an anonymous volume (each container gets its own)."""
    if isinstance(entry, Mapping):
        if entry.get("read_only") in (True, "true") or entry.get("type") == "tmpfs":
            return None
        source = entry.get("source")
    else:
        parts = str(entry).split(":")
        if len(parts) < 2 or (len(parts) > 2 and "ro" in parts[2].split(",")):
            return None
        source = parts[0]
    if not isinstance(source, str) or not source:
        return None
    return _located(source, directory)


def _located(source: str, directory: Path) -> str:
    """A named volume as named; a bind mount's path made absolute against the compose directory."""
    if source.startswith((".", "/", "~")):
        return os.path.normpath(directory / os.path.expanduser(source))
    return source


def footprint(body: Mapping[str, Any], directory: Path) -> Footprint:
    """The footprint of one service's compose definition, its relative paths against `directory`."""
    order = _mapping(_mapping(_mapping(body.get("deploy")).get("update_config"))).get("order")
    ports = body.get("ports") or []
    volumes = body.get("volumes") or []
    ports, volumes = (ports if isinstance(ports, list) else []), (volumes if isinstance(volumes, list) else [])
    networks = body.get("networks")
    fixed = isinstance(networks, Mapping) and any(
        isinstance(n, Mapping) and (n.get("ipv4_address") or n.get("ipv6_address")) for n in networks.values()
    )
    mode = body.get("network_mode")
    replicas = _mapping(body.get("deploy")).get("replicas", body.get("scale", 1))
    return Footprint(
        order=str(order) if order is not None else None,
        published=tuple(p for p in map(_published, ports) if p),
        fixed_address=bool(fixed or body.get("mac_address")),
        writes=tuple(w for v in volumes if (w := _written(v, directory))),
        network_mode=str(mode) if mode not in (None, "", "bridge", "default") else None,
        replicas=int(replicas) if str(replicas).isdigit() else 1,
    )


def strategy(found: Footprint, single_writer: Collection[str], root: Path) -> Strategy:
    """Start-first where the service declares it and can run twice; stop-late, with the reason,
    everywhere else. `single_writer` holds volume names and paths (relative to `root`) that only
    one container may write at a time."""
    declared = found.order
    if declared != "start-first":
        why = f"declares order: {declared}" if declared else "declares no deploy.update_config.order"
        return Strategy("stop-late", why, declared)
    if found.replicas > 1:
        return Strategy("stop-late", f"runs {found.replicas} replicas, which compose replaces itself", declared)
    if found.network_mode:
        where = found.network_mode.split(":", 1)[0]
        modes = {"host": "shares the host's network: two containers cannot bind its ports", "none": "has no network"}
        return Strategy("stop-late", modes.get(where, f"shares the network of {found.network_mode}"), declared)
    if found.published:
        return Strategy(
            "stop-late", f"publishes host port {found.published[0]}: two containers cannot bind it", declared
        )
    if found.fixed_address:
        return Strategy("stop-late", "has a fixed address: two containers cannot hold it", declared)
    marked = {_located(name, root) for name in single_writer}
    shared = [w for w in found.writes if w in marked]
    if shared:
        return Strategy("stop-late", f"writes {shared[0]}, which compose.single_writer marks single-writer", declared)
    return Strategy("start-first", "declares deploy.update_config.order: start-first", declared)

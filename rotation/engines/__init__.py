"""Container engines behind one protocol, and the one place that picks the engine for a stack.

`protocol` holds the `Engine` interface and its data; `docker` the Docker API half that every
Docker-based engine reuses (lookup by label, state, health waits, exec, logs); `compose` the
Compose engine on top of it, and `swarm` the Docker Swarm engine (`engine: swarm`). Nothing else
in the tool picks an engine.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from .protocol import CLIENT_GRACE, Engine, ExecResult, Service, ServiceState, instant

__all__ = ["CLIENT_GRACE", "Engine", "ExecResult", "Service", "ServiceState", "engine_for", "instant"]


def engine_for(root: Path, config: Config) -> Engine:
    """The engine the configuration describes for the stack at `root`."""
    if config.engine == "swarm":
        from .swarm import SwarmEngine  # deferred: commands that never touch an engine start faster

        return SwarmEngine(root, config)
    from .compose import ComposeEngine

    return ComposeEngine(root, config.compose)

"""Container engines behind one protocol, and the one place that picks the engine for a stack.

`protocol` holds the `Engine` interface and its data; `docker` the Docker API half that every
Docker-based engine reuses (lookup by label, state, health waits, exec, logs); `compose` the
Compose engine on top of it. A second engine (Swarm, say) is one more module here and one more
branch in `engine_for`; nothing else in the tool names an engine.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from .protocol import Engine, ExecResult, Service, ServiceState, instant

__all__ = ["Engine", "ExecResult", "Service", "ServiceState", "engine_for", "instant"]


def engine_for(root: Path, config: Config) -> Engine:
    """The engine the configuration describes for the stack at `root`."""
    from .compose import ComposeEngine  # deferred: commands that never touch an engine start faster

    return ComposeEngine(root, config.compose)

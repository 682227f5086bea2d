"""Container engines behind one protocol, and the one place that picks the engine for a stack.

`protocol` holds the `Engine` interface and its data; `docker` the Docker API half that every
Docker-based engine reuses (lookup by label, state, health waits, exec, logs); `compose` the
Compose engine on top of it, and `swarm` the Docker Swarm engine (`engine: swarm`). Nothing else
in the tool picks an engine.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from .protocol import CLIENT_GRACE, Engine, ExecResult, Service, ServiceState, instant

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["CLIENT_GRACE", "ENGINES", "Engine", "ExecResult", "Service", "ServiceState", "engine_for", "instant"]

# `engine:` of the configuration -> the module and class that implement it, imported on first use
# (as pip's commands_dict): commands that never touch an engine start without docker's SDK. Each
# class builds itself for a stack with `for_stack(root, config)`.
ENGINES: dict[str, tuple[str, str]] = {
    "compose": ("compose", "ComposeEngine"),
    "swarm": ("swarm", "SwarmEngine"),
}


def engine_for(root: Path, config: Config) -> Engine:
    """The engine the configuration describes for the stack at `root`."""
    module, name = ENGINES[config.engine]
    kind = getattr(importlib.import_module(f".{module}", __name__), name)
    engine: Engine = kind.for_stack(root, config)
    return engine

"""Modules loaded on first use, so that `--help`, `--list` and completion import no use case."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

__all__ = ["lazy"]


def lazy(name: str) -> ModuleType:
    """The module `name`, executed only when one of its attributes is first read (importlib's
    LazyLoader, as pip defers its commands); one already imported is returned as it is."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module

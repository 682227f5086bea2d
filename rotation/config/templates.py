"""`${VAR}` in the configuration's templates, expanded from the stack's env files, then the
process environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from ..errors import ConfigError
from ..interpolation import REFERENCE


def interpolate(value: str, env: Mapping[str, str | None]) -> str:
    """Expand `${VAR}` from the stack's env files, then the process environment."""

    def lookup(match: re.Match[str]) -> str:
        found = env.get(match[1]) or os.environ.get(match[1])
        if found is None:
            raise ConfigError(f"${{{match[1]}}} is not set in the stack's env files or the environment")
        return found

    return REFERENCE.sub(lookup, value)

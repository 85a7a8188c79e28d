"""``${NAME}`` in a config file's string values is replaced by the environment variable ``NAME``.

This is how a secret that lives inside a list (an OIDC provider's ``client_secret``) or inside a
longer value (the password in a ``dsn``) comes from the environment, where ``SIDECAR_*``
overrides, which replace a whole key, cannot reach. Only config files are expanded, never values
that already come from the environment. ``$${`` writes a literal ``${``. A reference to a variable
that is not set stops the load, naming the key and the variable: an empty client secret or a DSN
without its password would fail later, and less clearly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_references(
    data: Any, environ: Mapping[str, str], *, where: str = ""
) -> tuple[Any, list[tuple[str, str]]]:
    """``data`` with every ``${NAME}`` replaced, and the (key path, reason) of each unset one."""
    problems: list[tuple[str, str]] = []

    def text(value: str, key: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:
                return "${"
            if name not in environ:
                problems.append((key, f"environment variable {name} is not set (referenced as ${{{name}}})"))
                return ""
            return environ[name]

        return _REFERENCE.sub(substitute, value)

    def walk(value: Any, key: str) -> Any:
        if isinstance(value, str):
            return text(value, key)
        if isinstance(value, dict):
            return {k: walk(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(value)]
        return value

    return walk(data, where), problems

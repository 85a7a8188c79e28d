"""The ordered list of strategies, filtered by ``selfservice.methods.<name>.enabled``.

Order matters: it is the order of the UI nodes and of asking "is this submission yours?".
A new strategy is one module plus one line in ``_FACTORIES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar.config.model import Config
from sidecar.schema.registry import SchemaRegistry
from sidecar.security.ratelimit import RateLimiter
from sidecar.strategies.base import LoginStrategy, RegistrationStrategy
from sidecar.strategies.password import PasswordIdentities, PasswordStrategy
from sidecar.strategies.profile import ProfileStrategy


@dataclass(frozen=True, slots=True)
class StrategyDeps:
    config: Config
    identities: PasswordIdentities
    schemas: SchemaRegistry
    limiter: RateLimiter


_FACTORIES: tuple[tuple[str, Callable[[StrategyDeps], Any]], ...] = (
    ("profile", lambda d: ProfileStrategy(d.config, d.schemas)),
    ("password", lambda d: PasswordStrategy(d.config, d.identities, d.schemas, d.limiter)),
)


@dataclass(frozen=True, slots=True)
class StrategyRegistry:
    login: tuple[LoginStrategy, ...]
    registration: tuple[RegistrationStrategy, ...]


def _enabled(config: Config, name: str) -> bool:
    method = getattr(config.selfservice.methods, name, None)
    return bool(getattr(method, "enabled", False))


def build_registry(deps: StrategyDeps) -> StrategyRegistry:
    built = [factory(deps) for name, factory in _FACTORIES if _enabled(deps.config, name)]
    return StrategyRegistry(
        login=tuple(s for s in built if hasattr(s, "login_nodes")),
        registration=tuple(s for s in built if hasattr(s, "registration_nodes")),
    )

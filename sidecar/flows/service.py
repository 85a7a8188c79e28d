"""The self-service flows, built once from config and the narrow services they use."""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.config.model import Config
from sidecar.flows.login import LoginFlows
from sidecar.flows.logout import LogoutFlows
from sidecar.flows.registration import RegistrationFlows
from sidecar.flows.store import FlowStore
from sidecar.kv.store import KeyValueStore
from sidecar.schema.registry import SchemaRegistry
from sidecar.security.ratelimit import RateLimiter
from sidecar.session.manager import SessionManager
from sidecar.strategies.password import PasswordIdentities
from sidecar.strategies.registry import StrategyDeps, build_registry


@dataclass(frozen=True, slots=True)
class SelfServiceFlows:
    login: LoginFlows
    registration: RegistrationFlows
    logout: LogoutFlows
    limiter: RateLimiter


def build_flows(
    config: Config,
    kv: KeyValueStore,
    identities: PasswordIdentities,
    schemas: SchemaRegistry,
    sessions: SessionManager,
) -> SelfServiceFlows:
    store = FlowStore(kv)
    limiter = RateLimiter(kv, config.security.rate_limit)
    registry = build_registry(StrategyDeps(config, identities, schemas, limiter))
    return SelfServiceFlows(
        login=LoginFlows(config, store, registry.login, sessions),
        registration=RegistrationFlows(config, store, registry.registration, sessions),
        logout=LogoutFlows(config, sessions),
        limiter=limiter,
    )

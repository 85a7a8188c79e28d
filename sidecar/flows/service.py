"""The self-service flows, built once from config and the narrow services they use."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from sidecar.config.model import Config, RateLimit
from sidecar.flows.login import LoginFlows
from sidecar.flows.logout import LogoutFlows
from sidecar.flows.recovery import RecoveryFlows, SettingsAfterRecovery
from sidecar.flows.registration import RegistrationFlows
from sidecar.flows.settings import SettingsFlows
from sidecar.flows.store import FlowStore
from sidecar.flows.verification import VerificationFlows
from sidecar.kv.store import KeyValueStore
from sidecar.schema.registry import SchemaRegistry
from sidecar.security.ratelimit import RateLimiter
from sidecar.security.throttle import Throttle
from sidecar.session.manager import SessionManager
from sidecar.strategies.challenge import AddressDirectory, ChallengeDeps, Mailer
from sidecar.strategies.oidc.callback import OidcCallbacks, oidc_callbacks
from sidecar.strategies.password import PasswordIdentities
from sidecar.strategies.registry import StrategyDeps, build_registry


class FlowIdentities(PasswordIdentities, Protocol):
    """What the flows and strategies use of ``IdentityManager``."""

    async def delete(self, identity_id: uuid.UUID) -> None: ...


@dataclass(frozen=True, slots=True)
class SelfServiceFlows:
    login: LoginFlows
    registration: RegistrationFlows
    logout: LogoutFlows
    throttle: Throttle
    recovery: RecoveryFlows | None = None
    verification: VerificationFlows | None = None
    settings: SettingsFlows | None = None
    oidc: OidcCallbacks | None = None


def build_flows(
    config: Config,
    kv: KeyValueStore,
    identities: FlowIdentities,
    schemas: SchemaRegistry,
    sessions: SessionManager,
    *,
    courier: Mailer | None = None,
    addresses: AddressDirectory | None = None,
) -> SelfServiceFlows:
    store = FlowStore(kv)
    throttle = Throttle(kv, config.security.rate_limit)
    challenge = None
    if courier is not None and addresses is not None:
        challenge = ChallengeDeps(addresses, courier, kv, RateLimiter(kv, send_limits(config)))
    registry = build_registry(StrategyDeps(config, identities, schemas, throttle, kv=kv, challenge=challenge))
    recovery = RecoveryFlows(config, store, registry.recovery, sessions=sessions, kv=kv)
    verification = VerificationFlows(config, store, registry.verification, kv=kv)
    registration = RegistrationFlows(
        config, store, registry.registration, sessions, discard=identities.delete
    )
    registration.after_registration = verification.after_registration
    settings = SettingsFlows(config, store, registry.settings, sessions, identities.get)
    recovery.settings = SettingsAfterRecovery(settings)
    login = LoginFlows(config, store, registry.login, sessions, identities.get)
    oidc = oidc_callbacks(config, registry.login, kv, store, login, registration, settings)
    return SelfServiceFlows(
        login=login,
        registration=registration,
        logout=LogoutFlows(config, sessions),
        throttle=throttle,
        recovery=recovery,
        verification=verification,
        settings=settings,
        oidc=oidc,
    )


def send_limits(config: Config) -> RateLimit:
    """Mail-bombing limits: messages per address and per client IP in the rate-limit window."""
    rl = config.security.rate_limit
    return rl.model_copy(update={"per_identifier": rl.send_per_address, "per_ip": rl.send_per_ip})

"""What the strategy registry hands to each strategy's ``build``, and what ``build`` returns."""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.config.model import Config
from sidecar.flows.strategy import (
    LoginStrategy,
    RecoveryStrategy,
    RegistrationStrategy,
    SettingsStrategy,
    VerificationStrategy,
)
from sidecar.identity.manager import IdentityManager
from sidecar.kv.store import KeyValueStore
from sidecar.schema.registry import SchemaRegistry
from sidecar.security.breaches import BreachCheck
from sidecar.security.jsonnet import JsonnetSandbox
from sidecar.security.throttle import Throttle
from sidecar.strategies.address_challenge import ChallengeDeps


@dataclass(frozen=True, slots=True)
class StrategyDeps:
    """Everything any strategy may be built from; each ``build`` picks the few it uses and hands
    them to a constructor that takes narrow protocols."""

    config: Config
    identities: IdentityManager
    schemas: SchemaRegistry
    throttle: Throttle
    """Brute-force defence on credential submissions (per identifier and per client IP)."""
    kv: KeyValueStore
    """One-time state: consumed TOTP steps, used backup codes, WebAuthn challenges, OIDC states."""
    jsonnet: JsonnetSandbox
    """The server process's Jsonnet pool: the OIDC and SAML claims mappers run on it."""
    challenge: ChallengeDeps | None = None
    """Addresses, courier and send limits for the methods that mail a secret (code, link)."""
    breaches: BreachCheck | None = None
    """The Have I Been Pwned range check, when ``haveibeenpwned_enabled``."""


@dataclass(frozen=True, slots=True)
class Roles:
    """The flows one built strategy takes part in, typed by each flow's protocol."""

    login: LoginStrategy | None = None
    registration: RegistrationStrategy | None = None
    settings: SettingsStrategy | None = None
    recovery: RecoveryStrategy | None = None
    verification: VerificationStrategy | None = None

"""The ordered list of strategies, filtered by ``selfservice.methods.<name>.enabled``.

Order matters: it is the order of the UI nodes and of asking "is this submission yours?".
A new strategy is one module plus one line in ``_FACTORIES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sidecar.config.model import Config
from sidecar.kv.store import KeyValueStore
from sidecar.schema.registry import SchemaRegistry
from sidecar.security.throttle import Throttle
from sidecar.strategies.base import (
    LoginStrategy,
    RecoveryStrategy,
    RegistrationStrategy,
    SettingsStrategy,
    VerificationStrategy,
)
from sidecar.strategies.challenge import ChallengeDeps
from sidecar.strategies.code import CodeStrategy
from sidecar.strategies.code_login import CodeLoginStrategy
from sidecar.strategies.link import LinkStrategy
from sidecar.strategies.lookup_secret import LookupSecretStrategy
from sidecar.strategies.oidc.accounts import OidcIdentities
from sidecar.strategies.oidc.strategy import OidcStrategy
from sidecar.strategies.passkey import PasskeyStrategy
from sidecar.strategies.password import PasswordIdentities, PasswordStrategy
from sidecar.strategies.profile import ProfileStrategy
from sidecar.strategies.totp import TotpStrategy
from sidecar.strategies.webauthn import WebAuthnStrategy


@dataclass(frozen=True, slots=True)
class StrategyDeps:
    config: Config
    identities: PasswordIdentities
    schemas: SchemaRegistry
    throttle: Throttle
    kv: KeyValueStore | None = None
    """One-time state of second factors (consumed TOTP steps, used backup codes)."""

    @property
    def store(self) -> KeyValueStore:
        if self.kv is None:
            raise RuntimeError("the totp and lookup_secret strategies need a KeyValueStore")
        return self.kv

    challenge: ChallengeDeps | None = None
    """Addresses, courier and one-time secrets for recovery and verification (code, link)."""


_FACTORIES: tuple[tuple[str, Callable[[StrategyDeps], Any]], ...] = (
    ("profile", lambda d: ProfileStrategy(d.config, d.schemas, d.identities)),
    ("password", lambda d: PasswordStrategy(d.config, d.identities, d.schemas, d.throttle)),
    # IdentityManager is both PasswordIdentities and OidcIdentities.
    ("oidc", lambda d: OidcStrategy(d.config, cast(OidcIdentities, d.identities), d.schemas, d.store)),
    ("totp", lambda d: TotpStrategy(d.config, d.identities, d.schemas, d.store, d.throttle)),
    ("lookup_secret", lambda d: LookupSecretStrategy(d.identities, d.store, d.throttle)),
    # IdentityManager is also the KeyIdentities the WebAuthn strategies use.
    (
        "webauthn",
        lambda d: WebAuthnStrategy(d.config, cast(Any, d.identities), d.schemas, d.store, d.throttle),
    ),
    ("passkey", lambda d: PasskeyStrategy(d.config, cast(Any, d.identities), d.schemas, d.store, d.throttle)),
    ("code", lambda d: CodeStrategy(d.config, d.challenge) if d.challenge else None),
    ("link", lambda d: LinkStrategy(d.config, d.challenge) if d.challenge else None),
    # Passwordless login and registration by code (recovery/verification is CodeStrategy's).
    ("code", lambda d: _code_login(d)),
)


def _code_login(d: StrategyDeps) -> CodeLoginStrategy | None:
    code = d.config.selfservice.methods.code
    if d.challenge is None or not (code.passwordless_enabled or code.mfa_enabled):
        return None
    return CodeLoginStrategy(d.config, cast(Any, d.identities), d.schemas, d.challenge)


@dataclass(frozen=True, slots=True)
class StrategyRegistry:
    login: tuple[LoginStrategy, ...]
    registration: tuple[RegistrationStrategy, ...]
    settings: tuple[SettingsStrategy, ...] = ()
    recovery: tuple[RecoveryStrategy, ...] = ()
    verification: tuple[VerificationStrategy, ...] = ()


def _enabled(config: Config, name: str) -> bool:
    method = getattr(config.selfservice.methods, name, None)
    return bool(getattr(method, "enabled", False))


def build_registry(deps: StrategyDeps) -> StrategyRegistry:
    built = [factory(deps) for name, factory in _FACTORIES if _enabled(deps.config, name)]
    built = [s for s in built if s is not None]
    return StrategyRegistry(
        login=tuple(s for s in built if hasattr(s, "login_nodes")),
        registration=tuple(s for s in built if hasattr(s, "registration_nodes")),
        settings=tuple(s for s in built if hasattr(s, "settings_nodes")),
        recovery=tuple(s for s in built if hasattr(s, "recovery_nodes")),
        verification=tuple(s for s in built if hasattr(s, "verification_nodes")),
    )

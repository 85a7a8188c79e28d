"""The ordered list of strategies, filtered by ``selfservice.methods.<name>.enabled``.

Order matters: it is the order of the UI nodes and of asking "is this submission yours?". Each
class builds itself from ``StrategyDeps`` (``None`` when its method is disabled) and declares the
flows it serves (``Roles``). A new strategy is one module plus one line in ``STRATEGIES``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, cast

from sidecar.flows.strategy import (
    LoginStrategy,
    RecoveryStrategy,
    RegistrationStrategy,
    SettingsStrategy,
    VerificationStrategy,
)
from sidecar.identity.model import Identity
from sidecar.session.aal import Assurance
from sidecar.strategies.code import CodeStrategy
from sidecar.strategies.code_login import CodeLoginStrategy
from sidecar.strategies.deps import Roles, StrategyDeps
from sidecar.strategies.link import LinkStrategy
from sidecar.strategies.lookup_secret import LookupSecretStrategy
from sidecar.strategies.oidc.strategy import OidcStrategy
from sidecar.strategies.passkey import PasskeyStrategy
from sidecar.strategies.password import PasswordStrategy
from sidecar.strategies.profile import ProfileStrategy
from sidecar.strategies.saml.method import SamlMethod
from sidecar.strategies.totp import TotpStrategy
from sidecar.strategies.webauthn import WebAuthnStrategy

if TYPE_CHECKING:
    from sidecar.strategies.saml.strategy import SamlStrategy


class StrategyClass(Protocol):
    """What the registry asks of a strategy class."""

    id: ClassVar[str]
    counts_toward_aal: ClassVar[bool]

    @staticmethod
    def second_factor_ready(identity: Identity) -> bool: ...

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None: ...


STRATEGIES: tuple[type[StrategyClass], ...] = (
    ProfileStrategy,
    PasswordStrategy,
    OidcStrategy,
    SamlMethod,  # SamlStrategy, imported only when enabled
    TotpStrategy,
    LookupSecretStrategy,
    WebAuthnStrategy,
    PasskeyStrategy,
    CodeStrategy,  # recovery and verification by code
    LinkStrategy,
    CodeLoginStrategy,  # passwordless login and registration by code
)


@dataclass(frozen=True, slots=True)
class StrategyRegistry:
    login: tuple[LoginStrategy, ...]
    registration: tuple[RegistrationStrategy, ...]
    settings: tuple[SettingsStrategy, ...] = ()
    recovery: tuple[RecoveryStrategy, ...] = ()
    verification: tuple[VerificationStrategy, ...] = ()
    oidc: OidcStrategy | None = None
    """Social sign-in, when enabled: its callback handler and HTTP client are wired apart."""
    saml: SamlStrategy | None = None
    """SAML single sign-on, when enabled: its endpoints are wired apart."""


def build_registry(
    deps: StrategyDeps, strategies: Sequence[type[StrategyClass]] = STRATEGIES
) -> StrategyRegistry:
    pairs = [(cls, roles) for cls in strategies if (roles := cls.build(deps)) is not None]
    built = [roles for _, roles in pairs]
    saml = next((roles.login for cls, roles in pairs if cls is SamlMethod), None)
    return StrategyRegistry(
        login=tuple(r.login for r in built if r.login is not None),
        registration=tuple(r.registration for r in built if r.registration is not None),
        settings=tuple(r.settings for r in built if r.settings is not None),
        recovery=tuple(r.recovery for r in built if r.recovery is not None),
        verification=tuple(r.verification for r in built if r.verification is not None),
        oidc=next((r.login for r in built if isinstance(r.login, OidcStrategy)), None),
        # SamlMethod builds a SamlStrategy (no isinstance: the class is not imported with SAML off).
        saml=cast("SamlStrategy", saml) if saml is not None else None,
    )


def assurance(strategies: Sequence[type[StrategyClass]] = STRATEGIES) -> Assurance:
    """The levels identities can reach, from every method that counts toward AAL, enabled or not
    (Kratos counts every strategy: a disabled second factor still holds its user to aal2)."""
    return Assurance([(cls.id, cls.second_factor_ready) for cls in strategies if cls.counts_toward_aal])

"""The self-service flows as one value, for the API layer (built in ``sidecar.app``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from sidecar.flows.login import LoginFlows
from sidecar.flows.logout import LogoutFlows
from sidecar.flows.model import FlowKind
from sidecar.flows.outcome import Client, Outcome
from sidecar.flows.recovery import RecoveryFlows
from sidecar.flows.registration import RegistrationFlows
from sidecar.flows.settings import SettingsFlows
from sidecar.flows.verification import VerificationFlows
from sidecar.security.throttle import Throttle
from sidecar.session.token_exchange import TokenExchanges


class ProviderCallbacks(Protocol):
    """Where a social sign-in comes back from the provider (``sidecar.strategies.oidc.callback``):
    the flow it continues in, and that flow's outcome."""

    async def handle(
        self, provider_id: str, params: Mapping[str, str], client: Client
    ) -> tuple[FlowKind, Outcome]: ...


@dataclass(frozen=True, slots=True)
class SelfServiceFlows:
    login: LoginFlows
    registration: RegistrationFlows
    logout: LogoutFlows
    throttle: Throttle
    recovery: RecoveryFlows | None = None
    verification: VerificationFlows | None = None
    settings: SettingsFlows | None = None
    oidc: ProviderCallbacks | None = None
    exchanges: TokenExchanges | None = None

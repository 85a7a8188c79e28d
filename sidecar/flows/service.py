"""The self-service flows as one value, for the API layer (built in ``sidecar.app``)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
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


class SamlCallbacks(Protocol):
    """The SAML service provider's endpoints (``sidecar.strategies.saml.acs``)."""

    async def metadata(self, connection_id: str) -> str: ...

    async def post_form(self, connection_id: str, relay_state: str | None) -> tuple[str, dict[str, str]]: ...

    async def admit(self, message: str, ip: str | None) -> None:
        """Count one ACS (``response``) or SLO (``logout_request``) request from ``ip``;
        ``TooManyRequests`` (429, ``Retry-After``) past the per-IP limit."""
        ...

    def refused_early(self, message: str, reason: str) -> None:
        """Count a message the HTTP layer refused before handing it over (``too_large``)."""
        ...

    async def precheck(self, connection_id: str, saml_response: str | None) -> None:
        """Refuse an oversized or malformed response cheaply, before it is parked."""
        ...

    def verifying(self) -> AbstractAsyncContextManager[None]:
        """One slot of the bound on signature checks; 503 (``Retry-After``) when it is full."""
        ...

    async def park(self, fields: dict[str, str]) -> str: ...

    async def unpark(self, handle: str | None) -> dict[str, str]: ...

    async def consume(
        self, connection_id: str, saml_response: str | None, relay_state: str | None, client: Client
    ) -> tuple[FlowKind, Outcome]: ...

    async def logout_from_idp(self, connection_id: str, message: str, binding: str, query: str | None) -> str:
        """Revoke the sessions a LogoutRequest names; the URL of the LogoutResponse."""
        ...

    async def logged_out(self, relay_state: str | None) -> str | None:
        """Where the answer to our LogoutRequest sends the browser (None: the default)."""
        ...


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
    saml: SamlCallbacks | None = None

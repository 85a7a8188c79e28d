"""Where a verified federated sign-in (an OIDC callback, a SAML assertion) continues, as Kratos
does: a login with an unknown ``provider:subject`` becomes a registration, a registration of a
known one becomes a login, and a registration whose address belongs to an existing account
becomes a login flow that asks the user to sign in to that account first (message 1010016),
then links the provider account (``jit.FederatedAccounts.after_login``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from sidecar import errors
from sidecar.flows import messages
from sidecar.flows.model import Flow, FlowKind, FlowType
from sidecar.flows.outcome import AlreadySignedIn, Client, Outcome, ShowFlow
from sidecar.flows.store import FlowStore
from sidecar.security import csrf
from sidecar.strategies.federation.accounts import CALLBACK, Verified
from sidecar.strategies.federation.jit import FederatedAccounts


class Submits(Protocol):
    async def submit(self, flow_id: uuid.UUID | None, body: Mapping[str, Any], client: Client) -> Outcome: ...


class StartsBrowserFlow(Submits, Protocol):
    async def init(
        self, flow_type: FlowType, client: Client, *, request_url: str, return_to: str | None = None
    ) -> ShowFlow | AlreadySignedIn: ...


class MapsClaims(Protocol):
    async def __call__(self, verified: Verified) -> Verified: ...


class SignInContinuation:
    """Continues a verified sign-in in the login or registration flow that fits."""

    def __init__(
        self,
        store: FlowStore,
        login: StartsBrowserFlow,
        registration: StartsBrowserFlow,
        settings: Submits | None,
        *,
        base_url: str,
        registration_enabled: bool,
    ) -> None:
        self._base = base_url
        self._store = store
        self._flows: dict[str, Any] = {"login": login, "registration": registration, "settings": settings}
        self._registration_enabled = registration_enabled

    def serves(self, kind: str) -> bool:
        return self._flows.get(kind) is not None

    async def returning_to(self, kind: str, flow_id: uuid.UUID, client: Client) -> Flow:
        """The flow a provider's answer comes back to (named by the state the answer carries): it
        exists, is one this continuation serves, and a browser flow belongs to this browser (its
        CSRF cookie), which stands in for the CSRF token a form would have sent."""
        flow = await self._store.get(kind, flow_id)  # type: ignore[arg-type]
        if flow is None or not self.serves(kind):
            raise errors.NotFound("The sign-in flow could not be found. Please start again.")
        if flow.type == "browser" and not csrf.same_token(flow.csrf_token, client.csrf_token):
            raise errors.CSRFViolation(
                details={"reject_reason": "The sign-in flow belongs to another browser."}
            )
        return flow

    async def fresh_login(self, client: Client) -> Flow | AlreadySignedIn:
        """A new browser login flow, for a sign-in the provider started (SAML IdP-initiated)."""
        outcome = await self._flows["login"].init(
            "browser", client, request_url=f"{self._base}/self-service/login/browser"
        )
        return outcome if isinstance(outcome, AlreadySignedIn) else outcome.flow

    async def proceed(
        self,
        flow: Flow,
        verified: Verified,
        client: Client,
        accounts: FederatedAccounts,
        map_claims: MapsClaims,
        label: str,
    ) -> tuple[FlowKind, Outcome]:
        """``client`` must already carry the flow's CSRF token: the caller proved the browser."""
        body: dict[str, Any] = {"method": accounts.kind, "provider": verified.provider, CALLBACK: verified}
        if flow.kind == "settings":
            return "settings", await self._flows["settings"].submit(flow.id, body, client)
        if await accounts.find_identity(verified) is not None:
            return await self._continue(flow, "login", body, client)
        if not self._registration_enabled:
            raise errors.FlowDisabled(
                "No account is linked to this provider account and registration is disabled."
            )
        verified = await map_claims(verified)
        body[CALLBACK] = verified
        duplicate = await accounts.find_duplicate(flow, verified)
        if duplicate is not None:
            owner, value = duplicate
            target, login = await self._switch(flow, "login", client, force_new=True)
            if not isinstance(login, Flow):
                return target, login
            accounts.remember_link(login, owner, verified)
            login.ui.messages.append(messages.oidc_link_notice(value, label))
            await self._store.save(login)
            return "login", ShowFlow(login)
        return await self._continue(flow, "registration", body, client)

    async def _continue(
        self, flow: Flow, kind: FlowKind, body: Mapping[str, Any], client: Client
    ) -> tuple[FlowKind, Outcome]:
        target, found = await self._switch(flow, kind, client)
        if not isinstance(found, Flow):
            return target, found
        return target, await self._flows[target].submit(found.id, body, client)

    async def _switch(
        self, flow: Flow, kind: FlowKind, client: Client, *, force_new: bool = False
    ) -> tuple[FlowKind, Any]:
        """The flow of ``kind`` to continue in: this one, or a new browser flow keeping return_to."""
        if flow.kind == kind and not force_new:
            return kind, flow
        request_url = f"{self._base}/self-service/{kind}/{flow.type}"
        outcome = await self._flows[kind].init(
            flow.type, client, request_url=request_url, return_to=flow.return_to
        )
        if isinstance(outcome, AlreadySignedIn):
            return kind, outcome
        return kind, outcome.flow

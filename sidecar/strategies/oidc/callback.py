"""The way back from the provider: ``/self-service/methods/oidc/callback/{provider}``.

The ``state`` is taken (single use) and must name this provider; the flow it names must belong to
this browser (its CSRF cookie), which stands in for the CSRF token a form would carry. After the
code exchange the sign-in continues in the flow that fits, as Kratos does: a login with an
unknown ``provider:subject`` becomes a registration, a registration of a known one becomes a
login, and a registration whose address belongs to an existing account becomes a login flow that
asks the user to sign in to that account first (message 1010016), then links the provider.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from sidecar import errors
from sidecar.config.model import Config
from sidecar.flows import messages
from sidecar.flows.model import Flow, FlowKind, FlowType
from sidecar.flows.outcome import AlreadySignedIn, Client, Outcome, ShowFlow
from sidecar.flows.store import FlowStore
from sidecar.kv.store import KeyValueStore
from sidecar.security import csrf
from sidecar.strategies.oidc.accounts import CALLBACK
from sidecar.strategies.oidc.state import StateStore
from sidecar.strategies.oidc.strategy import OidcStrategy


class Submits(Protocol):
    async def submit(self, flow_id: uuid.UUID | None, body: Mapping[str, Any], client: Client) -> Outcome: ...


class StartsBrowserFlow(Submits, Protocol):
    async def init(
        self, flow_type: FlowType, client: Client, *, request_url: str, return_to: str | None = None
    ) -> ShowFlow | AlreadySignedIn: ...


class OidcCallbacks:
    def __init__(
        self,
        strategy: OidcStrategy,
        states: StateStore,
        store: FlowStore,
        login: StartsBrowserFlow,
        registration: StartsBrowserFlow,
        settings: Submits | None,
        *,
        base_url: str,
        registration_enabled: bool,
    ) -> None:
        self._base = base_url
        self._strategy = strategy
        self._states = states
        self._store = store
        self._flows: dict[str, Any] = {"login": login, "registration": registration, "settings": settings}
        self._registration_enabled = registration_enabled

    @property
    def strategy(self) -> OidcStrategy:
        return self._strategy

    async def handle(
        self, provider_id: str, params: Mapping[str, str], client: Client
    ) -> tuple[FlowKind, Outcome]:
        record = await self._states.take(params.get("state"))
        if record is None or record.provider != provider_id:
            text = "The sign-in request is invalid or was already used. Please start again."
            raise errors.BadRequest(
                text,
                reason=text,
                details={"hint": "the OAuth 2.0 state is missing, unknown, used or for another provider"},
            )
        kind: FlowKind = record.flow_kind  # type: ignore[assignment]
        flow = await self._store.get(kind, record.flow_uuid)
        if flow is None or self._flows.get(kind) is None:
            raise errors.NotFound("The sign-in flow could not be found. Please start again.")
        if flow.type == "browser" and not csrf.same_token(flow.csrf_token, client.csrf_token):
            raise errors.CSRFViolation(
                details={"reject_reason": "The sign-in flow belongs to another browser."}
            )
        if params.get("error"):
            description = params.get("error_description") or params["error"]
            text = f"The identity provider did not sign you in: {description[:200]}"
            raise errors.BadRequest(text, reason=text, details={"error": params["error"][:64]})
        code = params.get("code")
        if not code:
            raise errors.BadRequest("The identity provider returned no authorization code.")
        verified = await self._strategy.signin.verify_callback(record, code)
        # The state proved this navigation continues the browser's own flow: it stands in for the
        # CSRF token a form would have sent.
        trusted = replace(client, csrf_submitted=csrf.mask(flow.csrf_token) if flow.csrf_token else None)
        body: dict[str, Any] = {"method": "oidc", "provider": provider_id, CALLBACK: verified}
        if kind == "settings":
            return kind, await self._flows["settings"].submit(flow.id, body, trusted)
        existing = await self._strategy.find_identity(verified)
        if existing is not None:
            return await self._continue(flow, "login", body, trusted)
        if not self._registration_enabled:
            raise errors.FlowDisabled(
                "No account is linked to this provider account and registration is disabled."
            )
        verified = await self._strategy.map_claims(verified)
        body[CALLBACK] = verified
        duplicate = await self._strategy.find_duplicate(flow, verified)
        if duplicate is not None:
            owner, value = duplicate
            target, login = await self._switch(flow, "login", trusted, force_new=True)
            if not isinstance(login, Flow):
                return target, login
            self._strategy.remember_link(login, owner, verified)
            login.ui.messages.append(
                messages.oidc_link_notice(value, self._strategy.providers[provider_id].label)
            )
            await self._store.save(login)
            return "login", ShowFlow(login)
        return await self._continue(flow, "registration", body, trusted)

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


def oidc_callbacks(
    config: Config,
    strategy: OidcStrategy,
    kv: KeyValueStore,
    store: FlowStore,
    login: StartsBrowserFlow,
    registration: StartsBrowserFlow,
    settings: Submits | None,
) -> OidcCallbacks:
    """The callback handler of the enabled oidc strategy."""
    return OidcCallbacks(
        strategy,
        StateStore(kv),
        store,
        login,
        registration,
        settings,
        base_url=config.public_base_url,
        registration_enabled=config.selfservice.flows.registration.enabled,
    )

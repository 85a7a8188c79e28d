"""The way back from the provider: ``/self-service/methods/oidc/callback/{provider}``.

The ``state`` is taken (single use) and must name this provider; the flow it names must belong to
this browser (its CSRF cookie), which stands in for the CSRF token a form would carry. After the
code exchange the sign-in continues in the flow that fits (``federation.continuation``, shared
with SAML).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from sidecar import errors
from sidecar.flows.model import FlowKind
from sidecar.flows.outcome import Client, Completed, FlowReplaced, Outcome, ShowFlow
from sidecar.kv.store import KeyValueStore
from sidecar.security import csrf
from sidecar.session.token_exchange import TokenExchanges
from sidecar.strategies.federation.continuation import SignInContinuation
from sidecar.strategies.oidc.state import StateStore
from sidecar.strategies.oidc.strategy import OidcStrategy


class OidcCallbacks:
    def __init__(
        self,
        strategy: OidcStrategy,
        states: StateStore,
        continuation: SignInContinuation,
        exchanges: TokenExchanges | None = None,
    ) -> None:
        self._exchanges = exchanges
        self._strategy = strategy
        self._states = states
        self._continuation = continuation

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
        flow = await self._continuation.returning_to(record.flow_kind, record.flow_uuid, client)
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
        if flow.type == "api":
            # Native social sign-in: the browser only carries the app's API flow (the state was
            # issued to it); its cookies, and any session they hold, are not the app's.
            trusted = replace(
                client, browser_markers=False, session=None, session_token=None, csrf_token=None
            )
        kind, outcome = await self._continuation.proceed(
            flow,
            verified,
            trusted,
            self._strategy.accounts,
            self._strategy.map_claims,
            self._strategy.providers[provider_id].label,
        )
        moved = outcome.flow if isinstance(outcome, ShowFlow | FlowReplaced | Completed) else None
        if self._exchanges is not None and moved is not None and moved.id != flow.id:
            # Kratos' MoveToNewFlow (oidc/strategy_login.go, strategy_registration.go): a login
            # that became a registration, or back, keeps the app's exchange codes.
            await self._exchanges.move(flow.id, moved.id)
        return kind, outcome


def oidc_callbacks(
    strategy: OidcStrategy,
    kv: KeyValueStore,
    continuation: SignInContinuation,
    exchanges: TokenExchanges | None = None,
) -> OidcCallbacks:
    """The callback handler of the enabled oidc strategy."""
    return OidcCallbacks(strategy, StateStore(kv), continuation, exchanges)

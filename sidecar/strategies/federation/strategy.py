"""What a federated strategy (``oidc``, ``saml``) shows and answers the same way: one submit button
``provider`` per provider (or SAML connection) on login and registration, the same choice of which
providers a flow offers, which submissions are its own, and the link made after a login.

Kept in one place because the two must not drift: a flow started for an organization offers only
that organization's providers of either protocol, and a button of one never reaches the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.flows import messages, nodes
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.strategy import LoginStrategy, RegistrationStrategy
from sidecar.identity.model import Identity
from sidecar.strategies.federation.jit import Connection, FederatedAccounts


class FederatedStrategy(LoginStrategy, RegistrationStrategy):
    """The base of ``OidcStrategy`` and ``SamlStrategy``; each sets ``facts`` and ``accounts`` when
    it is built."""

    organizations = True

    facts: Mapping[str, Connection]
    """Every provider (connection) of the method by id, in configuration order."""
    accounts: FederatedAccounts

    # --- nodes ----------------------------------------------------------------------------------

    def offered(self, flow: Flow) -> list[Connection]:
        """Kratos: an organization's providers only in a flow for that organization, and the
        others only outside one."""
        wanted = str(flow.organization_id) if flow.organization_id else ""
        return [c for c in self.facts.values() if (c.organization_id or "").lower() == wanted]

    def login_nodes(self, flow: Flow) -> list[Node]:
        return [
            nodes.input_node(
                "provider", self.id, "submit", value=c.id, label=messages.oidc_sign_in_with(c.label, c.id)
            )
            for c in self.offered(flow)
        ]

    def identification_nodes(self, flow: Flow) -> list[Node]:
        return self.login_nodes(flow)

    def registration_nodes(self, flow: Flow) -> list[Node]:
        return [
            nodes.input_node(
                "provider", self.id, "submit", value=c.id, label=messages.oidc_sign_up_with(c.label, c.id)
            )
            for c in self.offered(flow)
        ]

    def profile_nodes(self, flow: Flow, traits: Mapping[str, Any] | None = None) -> list[Node]:
        # Kratos (oidc/strategy_registration.go): social sign-up is offered on both screens.
        return self.registration_nodes(flow)

    # --- submissions ------------------------------------------------------------------------------

    def responsible(self, body: Mapping[str, Any], *fields: str) -> bool:
        """Whether ``body`` is for this method: its ``method``, or without one (a provider button)
        a provider of ours in one of ``fields``; OIDC and SAML buttons share the name ``provider``."""
        method = body.get("method")
        if method == self.id:
            return True
        return method in (None, "") and any(
            isinstance(v := body.get(f), str) and v in self.facts for f in fields
        )

    async def after_login(self, flow: Flow, identity: Identity, method: str) -> None:
        await self.accounts.link_pending(flow, identity)


def form_traits(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """The traits the registration form sent along with a provider button (none: empty)."""
    raw = body.get("traits")
    return raw if isinstance(raw, Mapping) else {}

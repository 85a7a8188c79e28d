"""The ``oidc`` strategy: social sign-in for login, registration and settings (Kratos
``selfservice/strategy/oidc``).

A browser submission with ``provider`` (or settings ``link``) leaves for the provider: 303, or 422
``browser_location_change_required`` for SPAs, raised as ``BrowserLocationChangeRequired``. The
callback (``callback.py``) comes back into the flow with a ``Verified`` under ``CALLBACK``. Native
apps (API flows) send the provider's ``id_token`` + ``id_token_nonce`` instead, for providers that
allow it. The credential identifier is ``provider:subject``: an email address never signs anyone in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from sidecar.config.model import Config
from sidecar.flows import messages, nodes, via
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client, FlowInvalid
from sidecar.flows.strategy import (
    NOT_RESPONSIBLE,
    NotResponsible,
    SettingsContext,
    SettingsStrategy,
    SettingsUpdate,
)
from sidecar.identity.model import Identity
from sidecar.kv.store import KeyValueStore
from sidecar.schema.registry import SchemaRegistry
from sidecar.security.jsonnet import JsonnetSandbox
from sidecar.session.model import ProviderSignIn as SignedInVia
from sidecar.session.token_exchange import FLOW_MARK
from sidecar.strategies.deps import Roles, StrategyDeps
from sidecar.strategies.federation import accounts
from sidecar.strategies.federation.accounts import CALLBACK, FederatedIdentities, Verified
from sidecar.strategies.federation.jit import Connection, FederatedAccounts, active
from sidecar.strategies.federation.strategy import FederatedStrategy, form_traits
from sidecar.strategies.oidc.providers import Provider
from sidecar.strategies.oidc.signin import ProviderSignIn
from sidecar.strategies.settings_rules import require_privileged


def _leaves_for_provider(flow: Flow, body: Mapping[str, Any]) -> bool:
    """A browser flow goes to the provider; an API flow too when it was created with a session
    token exchange code (Kratos' native social sign-in) and brings no ``id_token``."""
    if flow.type == "browser":
        return True
    return bool(flow.internal.get(FLOW_MARK)) and not body.get("id_token")


class OidcStrategy(FederatedStrategy, SettingsStrategy):
    id = "oidc"

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None:
        if not deps.config.selfservice.methods.oidc.enabled:
            return None
        strategy = cls(deps.config, deps.identities, deps.schemas, deps.kv, deps.jsonnet)
        return Roles(login=strategy, registration=strategy, settings=strategy)

    def __init__(
        self,
        config: Config,
        identities: FederatedIdentities,
        schemas: SchemaRegistry,
        kv: KeyValueStore,
        jsonnet: JsonnetSandbox,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.signin = ProviderSignIn(config, kv, jsonnet, http)
        self.providers = self.signin.providers
        self.client = self.signin.client
        self._identities = identities
        self.facts = {
            p.id: Connection(p.id, p.label, p.config.organization_id, p.trust_email_verified)
            for p in self.providers.values()
        }
        self.accounts = FederatedAccounts("oidc", identities, schemas, self.facts.get)
        self._registration_enabled = config.selfservice.flows.registration.enabled
        self._code_login = config.selfservice.methods.code.passwordless_enabled

    def provider(self, provider_id: Any) -> Provider:
        return self.signin.provider(provider_id)

    async def map_claims(self, verified: Verified) -> Verified:
        return await self.signin.map_claims(verified)

    # --- nodes ----------------------------------------------------------------------------------

    def login_credential_nodes(self, flow: Flow, identity: Identity | None) -> list[Node] | None:
        # Kratos oidc/strategy_login.go: the providers linked to the identity, or all of them.
        if identity is None:
            return self.login_nodes(flow)
        linked = accounts.linked_providers(identity, self.id)
        shown = [n for n in self.login_nodes(flow) if n["attributes"].get("value") in linked]
        return shown or None

    def settings_nodes(self, flow: Flow, identity: Identity) -> list[Node]:
        linked = accounts.linked_providers(identity, self.id)
        out: list[Node] = []
        for p in self.providers.values():
            if p.id not in linked:
                out.append(
                    nodes.input_node(
                        "link", "oidc", "submit", value=p.id, label=messages.oidc_link(p.label, p.id)
                    )
                )
            elif accounts.other_first_factors(identity, self.id, p.id, code_login=self._code_login) > 0:
                out.append(
                    nodes.input_node(
                        "unlink", "oidc", "submit", value=p.id, label=messages.oidc_unlink(p.label, p.id)
                    )
                )
        return out

    async def find_identity(self, verified: Verified) -> Identity | None:
        return await self.accounts.find_identity(verified)

    # --- login ------------------------------------------------------------------------------------

    async def login(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity | NotResponsible:
        if not self.responsible(body, "provider"):
            return NOT_RESPONSIBLE
        provider = self.provider(body.get("provider"))
        flow.active = self.id
        verified = body.get(CALLBACK)
        if not isinstance(verified, Verified):
            if _leaves_for_provider(flow, body):
                await self.signin.start(flow, provider, body)
            verified = await self.signin.verify_native(provider, body)
        # Kratos (oidc/strategy_login.go CompletedLoginForWithProvider): the session names the
        # provider; the login flow takes this when it issues the session.
        via.remember(flow, SignedInVia(provider=verified.provider))
        identity = await self.find_identity(verified)
        if identity is None and flow.type == "api" and self._registration_enabled:
            return await self.accounts.create(flow, await self.map_claims(verified), {})
        return await self.accounts.signed_in(verified) if identity is None else active(identity)

    # --- registration -----------------------------------------------------------------------------

    async def register(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> Identity | NotResponsible:
        if not self.responsible(body, "provider"):
            return NOT_RESPONSIBLE
        provider = self.provider(body.get("provider"))
        flow.active = self.id
        traits = form_traits(body)
        verified = body.get(CALLBACK)
        if not isinstance(verified, Verified):
            pending = self.accounts.pending(flow, provider.id)
            if pending is not None:
                verified = pending
            elif _leaves_for_provider(flow, body):
                await self.signin.start(flow, provider, body, traits)
            else:
                verified = await self.signin.verify_native(provider, body)
                if await self.find_identity(verified) is not None:
                    raise FlowInvalid([messages.oidc_linked_elsewhere(provider.label)])
        via.remember(flow, SignedInVia(provider=verified.provider))
        return await self.accounts.create(flow, await self.map_claims(verified), traits)

    # --- settings ---------------------------------------------------------------------------------

    async def update_settings(
        self, flow: Flow, body: Mapping[str, Any], ctx: SettingsContext
    ) -> SettingsUpdate | NotResponsible:
        verified = body.get(CALLBACK)
        if not isinstance(verified, Verified) and not self.responsible(body, "link", "unlink"):
            return NOT_RESPONSIBLE
        identity = ctx.identity
        if isinstance(verified, Verified):
            require_privileged(ctx)
            await ctx.save_hooks(identity)
            updated = await self.accounts.link_to(identity, verified)
            return SettingsUpdate(updated)
        unlink = body.get("unlink")
        if unlink not in (None, ""):
            provider = self.provider(unlink)
            require_privileged(ctx)
            if provider.id not in accounts.linked_providers(identity, self.id):
                raise FlowInvalid([messages.generic(f"{provider.label} is not linked to your account.")])
            if accounts.other_first_factors(identity, self.id, provider.id, code_login=self._code_login) == 0:
                raise FlowInvalid([messages.oidc_unlink_last()])
            remaining = accounts.credential_without(identity, provider.id, self.id)
            await ctx.save_hooks(identity)
            if remaining is None:
                updated = await self._identities.remove_credential(identity.id, "oidc")
            else:
                updated = await self._identities.save_credential(identity.id, remaining)
            return SettingsUpdate(updated)
        provider = self.provider(body.get("link"))
        require_privileged(ctx)
        if provider.id in accounts.linked_providers(identity, self.id):
            raise FlowInvalid([messages.generic(f"{provider.label} is already linked to your account.")])
        await self.signin.start(flow, provider, body)

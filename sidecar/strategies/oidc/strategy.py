"""The ``oidc`` strategy: social sign-in for login, registration and settings (Kratos
``selfservice/strategy/oidc``).

A browser submission with ``provider`` (or settings ``link``) leaves for the provider: 303, or 422
``browser_location_change_required`` for SPAs, raised as ``BrowserLocationChangeRequired``. The
callback (``callback.py``) comes back into the flow with a ``Verified`` under ``CALLBACK``. Native
apps (API flows) send the provider's ``id_token`` + ``id_token_nonce`` instead, for providers that
allow it. The credential identifier is ``provider:subject``: an email address never signs anyone in.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import httpx

from sidecar import errors
from sidecar.config.model import Config
from sidecar.flows import messages, nodes
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client, FlowInvalid
from sidecar.flows.strategy import (
    NOT_RESPONSIBLE,
    LoginStrategy,
    NotResponsible,
    RegistrationStrategy,
    SettingsContext,
    SettingsStrategy,
    SettingsUpdate,
)
from sidecar.identity.manager import IdentitySpec
from sidecar.identity.model import Identity
from sidecar.kv.store import KeyValueStore
from sidecar.schema.registry import SchemaRegistry
from sidecar.strategies.deps import Roles, StrategyDeps
from sidecar.strategies.oidc import accounts
from sidecar.strategies.oidc.accounts import CALLBACK, OidcIdentities, Verified
from sidecar.strategies.oidc.providers import Provider
from sidecar.strategies.oidc.signin import ProviderSignIn
from sidecar.strategies.settings_rules import require_privileged
from sidecar.strategies.traits import flatten, trait_nodes, validation_messages

PENDING = "oidc_pending"
"""``flow.internal``: a verified sign-up waiting for the user to complete missing traits."""
LINK = "oidc_link"
"""``flow.internal``: a provider account to link once the user signs in to the existing account."""


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Traits typed by the user override the mapper's; empty form fields do not."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        elif value not in ("", None):
            out[key] = value
    return out


class OidcStrategy(LoginStrategy, RegistrationStrategy, SettingsStrategy):
    id = "oidc"
    organizations = True

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None:
        if not deps.config.selfservice.methods.oidc.enabled:
            return None
        strategy = cls(deps.config, deps.identities, deps.schemas, deps.kv)
        return Roles(login=strategy, registration=strategy, settings=strategy)

    def __init__(
        self,
        config: Config,
        identities: OidcIdentities,
        schemas: SchemaRegistry,
        kv: KeyValueStore,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.signin = ProviderSignIn(config, kv, http)
        self.providers = self.signin.providers
        self.client = self.signin.client
        self._identities = identities
        self._schemas = schemas
        self._registration_enabled = config.selfservice.flows.registration.enabled
        self._code_login = config.selfservice.methods.code.passwordless_enabled

    def provider(self, provider_id: Any) -> Provider:
        return self.signin.provider(provider_id)

    async def map_claims(self, verified: Verified) -> Verified:
        return await self.signin.map_claims(verified)

    # --- nodes ----------------------------------------------------------------------------------

    def _offered(self, flow: Flow) -> list[Provider]:
        """Kratos: an organization's providers only in a flow for that organization, and the
        others only outside one."""
        wanted = str(flow.organization_id) if flow.organization_id else None
        return [
            p for p in self.providers.values() if (p.config.organization_id or "").lower() == (wanted or "")
        ]

    def login_nodes(self, flow: Flow) -> list[Node]:
        return [
            nodes.input_node(
                "provider", "oidc", "submit", value=p.id, label=messages.oidc_sign_in_with(p.label, p.id)
            )
            for p in self._offered(flow)
        ]

    def identification_nodes(self, flow: Flow) -> list[Node]:
        return self.login_nodes(flow)

    def login_credential_nodes(self, flow: Flow, identity: Identity | None) -> list[Node] | None:
        # Kratos oidc/strategy_login.go: the providers linked to the identity, or all of them.
        if identity is None:
            return self.login_nodes(flow)
        linked = accounts.linked_providers(identity)
        shown = [n for n in self.login_nodes(flow) if n["attributes"].get("value") in linked]
        return shown or None

    def registration_nodes(self, flow: Flow) -> list[Node]:
        return [
            nodes.input_node(
                "provider", "oidc", "submit", value=p.id, label=messages.oidc_sign_up_with(p.label, p.id)
            )
            for p in self._offered(flow)
        ]

    def profile_nodes(self, flow: Flow, traits: Mapping[str, Any] | None = None) -> list[Node]:
        # Kratos (oidc/strategy_registration.go): social sign-up is offered on both screens.
        return self.registration_nodes(flow)

    def settings_nodes(self, flow: Flow, identity: Identity) -> list[Node]:
        linked = accounts.linked_providers(identity)
        out: list[Node] = []
        for p in self.providers.values():
            if p.id not in linked:
                out.append(
                    nodes.input_node(
                        "link", "oidc", "submit", value=p.id, label=messages.oidc_link(p.label, p.id)
                    )
                )
            elif accounts.other_first_factors(identity, p.id, code_login=self._code_login) > 0:
                out.append(
                    nodes.input_node(
                        "unlink", "oidc", "submit", value=p.id, label=messages.oidc_unlink(p.label, p.id)
                    )
                )
        return out

    def _responsible(self, body: Mapping[str, Any], *fields: str) -> bool:
        method = body.get("method")
        if method == self.id:
            return True
        return method in (None, "") and any(body.get(f) not in (None, "") for f in fields)

    async def find_identity(self, verified: Verified) -> Identity | None:
        return await self._identities.find_by_credential("oidc", verified.identifier)

    async def find_duplicate(self, flow: Flow, verified: Verified) -> tuple[Identity, str] | None:
        mapped = verified.require_mapped()
        schema = self._schemas.get(flow.identity_schema) if flow.identity_schema else self._schemas.default()
        traits = _merge(mapped.traits, verified.form_traits)
        return await accounts.find_existing_owner(self._identities, schema, traits)

    def remember_link(self, flow: Flow, owner: Identity, verified: Verified) -> None:
        flow.internal[LINK] = {"identity_id": str(owner.id), **verified.to_record()}

    # --- login ------------------------------------------------------------------------------------

    async def login(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity | NotResponsible:
        if not self._responsible(body, "provider"):
            return NOT_RESPONSIBLE
        provider = self.provider(body.get("provider"))
        flow.active = self.id
        verified = body.get(CALLBACK)
        if not isinstance(verified, Verified):
            if flow.type == "browser":
                await self.signin.start(flow, provider, body)
            verified = await self.signin.verify_native(provider, body)
        identity = await self.find_identity(verified)
        if identity is None:
            if flow.type != "api" or not self._registration_enabled:
                raise FlowInvalid(
                    [messages.generic(f"No account is linked to this {provider.label} account.")]
                )
            identity = await self._create(flow, await self.map_claims(verified), {})
        if identity.state != "active":
            raise FlowInvalid([messages.generic("Your account is disabled.")])
        return identity

    async def after_login(self, flow: Flow, identity: Identity, method: str) -> None:
        """After signing in to the existing account, link the provider account that found it."""
        pending = flow.internal.get(LINK)
        if not isinstance(pending, Mapping):
            return
        if pending.get("identity_id") != str(identity.id):
            raise FlowInvalid([messages.oidc_link_mismatch()])
        verified = Verified.from_record(pending)
        try:
            await self._identities.save_credential(identity.id, accounts.credential_with(identity, verified))
        except errors.Conflict:
            label = (
                self.providers[verified.provider].label if verified.provider in self.providers else "provider"
            )
            raise FlowInvalid([messages.oidc_linked_elsewhere(label)]) from None
        flow.internal.pop(LINK, None)

    # --- registration -----------------------------------------------------------------------------

    async def register(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> Identity | NotResponsible:
        if not self._responsible(body, "provider"):
            return NOT_RESPONSIBLE
        provider = self.provider(body.get("provider"))
        flow.active = self.id
        raw_traits = body.get("traits")
        form_traits: Mapping[str, Any] = raw_traits if isinstance(raw_traits, Mapping) else {}
        verified = body.get(CALLBACK)
        if not isinstance(verified, Verified):
            pending = flow.internal.get(PENDING)
            if isinstance(pending, Mapping) and pending.get("provider") == provider.id:
                verified = Verified.from_record(pending)
            elif flow.type == "browser":
                await self.signin.start(flow, provider, body, form_traits)
            else:
                verified = await self.signin.verify_native(provider, body)
                if await self.find_identity(verified) is not None:
                    raise FlowInvalid([messages.oidc_linked_elsewhere(provider.label)])
        return await self._create(flow, await self.map_claims(verified), form_traits)

    async def _create(self, flow: Flow, verified: Verified, form_traits: Mapping[str, Any]) -> Identity:
        mapped = verified.require_mapped()
        provider = self.providers[verified.provider]
        schema = self._schemas.get(flow.identity_schema) if flow.identity_schema else self._schemas.default()
        traits = _merge(_merge(mapped.traits, verified.form_traits), form_traits)
        problems = validation_messages(schema, traits)
        if problems:
            # Kratos: the registration form comes back, pre-filled, for the user to complete.
            flow.internal[PENDING] = verified.to_record()
            flow.ui.nodes = [nodes.csrf_node()] if flow.type == "browser" else []
            flow.ui.nodes += trait_nodes(schema, "oidc")
            flow.ui.nodes.append(
                nodes.input_node(
                    "provider",
                    "oidc",
                    "submit",
                    value=provider.id,
                    label=messages.oidc_sign_up_with(provider.label, provider.id),
                )
            )
            raise FlowInvalid(node_messages=problems, values=flatten(traits))
        if await accounts.find_existing_owner(self._identities, schema, traits) is not None:
            raise FlowInvalid([messages.oidc_duplicate_sign_in_to_link()], values=flatten(traits))
        organization = provider.config.organization_id
        spec = IdentitySpec(
            traits=traits,
            schema_id=schema.id,
            # Just-in-time: an account made by an organization's sign-on belongs to it.
            organization_id=uuid.UUID(organization) if organization else None,
            metadata_public=mapped.metadata_public,
            metadata_admin=mapped.metadata_admin,
            credentials={
                "oidc": {"config": {"providers": [{"provider": provider.id, "subject": verified.subject}]}}
            },
            verifiable_addresses=accounts.verified_addresses(
                schema, traits, verified, trust_email_verified=provider.trust_email_verified
            ),
        )
        try:
            identity = await self._identities.create(spec)
        except errors.Conflict:
            raise FlowInvalid([messages.oidc_duplicate_sign_in_to_link()], values=flatten(traits)) from None
        except errors.ValidationError as exc:
            raise FlowInvalid([messages.generic(exc.reason or exc.message)], values=flatten(traits)) from None
        flow.internal.pop(PENDING, None)
        if verified.tokens:
            try:
                identity = await self._identities.save_credential(
                    identity.id, accounts.credential_with(identity, verified)
                )
            except Exception:
                await self._identities.delete(identity.id)  # all or nothing (flows/registration.py)
                raise
        return identity

    # --- settings ---------------------------------------------------------------------------------

    async def update_settings(
        self, flow: Flow, body: Mapping[str, Any], ctx: SettingsContext
    ) -> SettingsUpdate | NotResponsible:
        verified = body.get(CALLBACK)
        if not isinstance(verified, Verified) and not self._responsible(body, "link", "unlink"):
            return NOT_RESPONSIBLE
        identity = ctx.identity
        if isinstance(verified, Verified):
            require_privileged(ctx)
            owner = await self.find_identity(verified)
            label = self.providers[verified.provider].label
            if owner is not None and owner.id != identity.id:
                raise FlowInvalid([messages.oidc_linked_elsewhere(label)])
            try:
                updated = await self._identities.save_credential(
                    identity.id, accounts.credential_with(identity, verified)
                )
            except errors.Conflict:
                raise FlowInvalid([messages.oidc_linked_elsewhere(label)]) from None
            return SettingsUpdate(updated)
        unlink = body.get("unlink")
        if unlink not in (None, ""):
            provider = self.provider(unlink)
            require_privileged(ctx)
            if provider.id not in accounts.linked_providers(identity):
                raise FlowInvalid([messages.generic(f"{provider.label} is not linked to your account.")])
            if accounts.other_first_factors(identity, provider.id, code_login=self._code_login) == 0:
                raise FlowInvalid([messages.oidc_unlink_last()])
            remaining = accounts.credential_without(identity, provider.id)
            if remaining is None:
                updated = await self._identities.remove_credential(identity.id, "oidc")
            else:
                updated = await self._identities.save_credential(identity.id, remaining)
            return SettingsUpdate(updated)
        provider = self.provider(body.get("link"))
        require_privileged(ctx)
        if provider.id in accounts.linked_providers(identity):
            raise FlowInvalid([messages.generic(f"{provider.label} is already linked to your account.")])
        await self.signin.start(flow, provider, body)

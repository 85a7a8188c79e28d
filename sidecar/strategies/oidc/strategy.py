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
from datetime import timedelta
from typing import Any, NoReturn

import httpx

from sidecar import errors
from sidecar.config.model import Config
from sidecar.flows import nodes
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client, FlowInvalid
from sidecar.identity.manager import IdentitySpec
from sidecar.identity.model import Identity, utcnow
from sidecar.kv.store import KeyValueStore
from sidecar.schema.registry import SchemaRegistry
from sidecar.security.cipher import cipher_from
from sidecar.strategies.base import NOT_RESPONSIBLE, NotResponsible, SettingsContext, SettingsUpdate
from sidecar.strategies.oidc import accounts, texts
from sidecar.strategies.oidc.accounts import CALLBACK, OidcIdentities, Verified
from sidecar.strategies.oidc.client import OidcClient, TokenInvalid, TokenSet
from sidecar.strategies.oidc.mapper import MapperError, load_mapper, run_mapper
from sidecar.strategies.oidc.providers import Provider, resolve
from sidecar.strategies.oidc.state import RedirectState, StateStore, new_secret
from sidecar.strategies.settings_rules import require_privileged
from sidecar.strategies.traits import flatten, trait_nodes, validation_messages

PENDING = "oidc_pending"
"""``flow.internal``: a verified sign-up waiting for the user to complete missing traits."""
LINK = "oidc_link"
"""``flow.internal``: a provider account to link once the user signs in to the existing account."""
UPSTREAM_PARAMETERS = ("login_hint", "hd", "prompt", "auth_type")


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Traits typed by the user override the mapper's; empty form fields do not."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        elif value not in ("", None):
            out[key] = value
    return out


class OidcStrategy:
    id = "oidc"

    def __init__(
        self,
        config: Config,
        identities: OidcIdentities,
        schemas: SchemaRegistry,
        kv: KeyValueStore,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        method = config.selfservice.methods.oidc.config
        self.providers: dict[str, Provider] = {p.id: resolve(p) for p in method.providers}
        self._mappers = {p.id: load_mapper(p.mapper_url) for p in method.providers}
        self._mapper_timeout = method.mapper_timeout.total_seconds()
        self._base = (method.base_redirect_uri or config.public_base_url).rstrip("/")
        self._identities = identities
        self._schemas = schemas
        self._states = StateStore(kv)
        self._cipher = cipher_from(config.secrets.cipher)
        self._registration_enabled = config.selfservice.flows.registration.enabled
        self._code_login = config.selfservice.methods.code.passwordless_enabled
        self.client = OidcClient(
            http or httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
        )

    def redirect_uri(self, provider_id: str) -> str:
        return f"{self._base}/self-service/methods/oidc/callback/{provider_id}"

    def provider(self, provider_id: Any) -> Provider:
        found = self.providers.get(provider_id) if isinstance(provider_id, str) else None
        if found is None:
            raise FlowInvalid([texts.generic(f"Unknown sign-in provider {str(provider_id)[:64]!r}.")])
        return found

    # --- nodes ----------------------------------------------------------------------------------

    def login_nodes(self, flow: Flow) -> list[Node]:
        return [
            nodes.input_node(
                "provider", "oidc", "submit", value=p.id, label=texts.sign_in_with(p.label, p.id)
            )
            for p in self.providers.values()
        ]

    def registration_nodes(self, flow: Flow) -> list[Node]:
        return [
            nodes.input_node(
                "provider", "oidc", "submit", value=p.id, label=texts.sign_up_with(p.label, p.id)
            )
            for p in self.providers.values()
        ]

    def settings_nodes(self, flow: Flow, identity: Identity) -> list[Node]:
        linked = accounts.linked_providers(identity)
        out: list[Node] = []
        for p in self.providers.values():
            if p.id not in linked:
                out.append(
                    nodes.input_node("link", "oidc", "submit", value=p.id, label=texts.link(p.label, p.id))
                )
            elif accounts.other_first_factors(identity, p.id, code_login=self._code_login) > 0:
                out.append(
                    nodes.input_node(
                        "unlink", "oidc", "submit", value=p.id, label=texts.unlink(p.label, p.id)
                    )
                )
        return out

    # --- leaving for the provider -----------------------------------------------------------------

    def _responsible(self, body: Mapping[str, Any], *fields: str) -> bool:
        method = body.get("method")
        if method == self.id:
            return True
        return method in (None, "") and any(body.get(f) not in (None, "") for f in fields)

    async def _redirect(
        self, flow: Flow, provider: Provider, body: Mapping[str, Any], traits: Mapping[str, Any] | None = None
    ) -> NoReturn:
        endpoints = await self.client.endpoints(provider)
        record = RedirectState(
            flow_kind=flow.kind,
            flow_id=str(flow.id),
            provider=provider.id,
            nonce=new_secret(),
            code_verifier=new_secret() + new_secret(),
            redirect_uri=self.redirect_uri(provider.id),
            traits=dict(traits or {}),
            transient_payload=flow.transient_payload,
        )
        state = await self._states.put(record, max(flow.expires_at - utcnow(), timedelta(minutes=1)))
        upstream = body.get("upstream_parameters")
        extra = (
            {k: str(v) for k, v in upstream.items() if k in UPSTREAM_PARAMETERS and isinstance(v, str)}
            if isinstance(upstream, Mapping)
            else {}
        )
        url = self.client.authorization_url(
            provider,
            endpoints,
            redirect_uri=record.redirect_uri,
            state=state,
            nonce=record.nonce,
            code_verifier=record.code_verifier,
            extra=extra,
        )
        raise errors.BrowserLocationChangeRequired(extra={"redirect_browser_to": url})

    # --- coming back ------------------------------------------------------------------------------

    def _seal(
        self, provider: Provider, tokens: TokenSet | None, id_token: str | None = None
    ) -> dict[str, str]:
        """The provider's tokens, encrypted; nothing at all without ``secrets.cipher``."""
        if not provider.store_tokens or self._cipher is None:
            return {}
        values = {"id_token": id_token or (tokens.id_token if tokens else None)}
        if tokens is not None:
            values["access_token"] = tokens.access_token
            values["refresh_token"] = tokens.refresh_token
        return {f"initial_{k}": self._cipher.encrypt(v) for k, v in values.items() if v}

    async def verify_callback(self, record: RedirectState, code: str) -> Verified:
        """Exchange the code (PKCE) and check what came back (ID token, nonce)."""
        provider = self.providers.get(record.provider)
        if provider is None:
            raise errors.BadRequest("The sign-in provider of this request is no longer configured.")
        endpoints = await self.client.endpoints(provider)
        tokens = await self.client.exchange(
            provider,
            endpoints,
            code=code,
            code_verifier=record.code_verifier,
            redirect_uri=record.redirect_uri,
        )
        if provider.is_oidc:
            if not tokens.id_token:
                raise TokenInvalid("The identity provider returned no ID token.")
            claims = await self.client.verify_id_token(
                provider, endpoints, tokens.id_token, nonce=record.nonce
            )
            if tokens.access_token:
                info = await self.client.userinfo(provider, endpoints, tokens.access_token)
                if info.get("sub") == claims["sub"]:  # OpenID Connect Core §5.3.2
                    claims = {**info, **claims}
        else:
            if not tokens.access_token:
                raise TokenInvalid("The identity provider returned no access token.")
            claims = await self.client.github_profile(provider, endpoints, tokens.access_token)
        if not claims.get("sub"):
            raise TokenInvalid("The identity provider named no subject.")
        return Verified(
            provider.id, str(claims["sub"]), claims, self._seal(provider, tokens), dict(record.traits)
        )

    async def _verify_native(self, provider: Provider, body: Mapping[str, Any]) -> Verified:
        id_token, nonce = body.get("id_token"), body.get("id_token_nonce")
        if not provider.native_id_token:
            raise FlowInvalid(
                [texts.generic(f"{provider.label} does not support signing in with an ID token.")]
            )
        if not isinstance(id_token, str) or not id_token:
            raise FlowInvalid(
                [texts.generic("API flows sign in with the provider's id_token (and id_token_nonce).")]
            )
        if not isinstance(nonce, str) or not nonce:
            raise FlowInvalid([texts.generic("id_token_nonce is required with id_token.")])
        endpoints = await self.client.endpoints(provider)
        try:
            claims = await self.client.verify_id_token(
                provider,
                endpoints,
                id_token,
                nonce=nonce,
                audiences=provider.audiences,
                hashed_nonce=provider.hashed_nonce,
            )
        except TokenInvalid as exc:
            raise FlowInvalid([texts.generic(exc.message)]) from None
        return Verified(provider.id, str(claims["sub"]), claims, self._seal(provider, None, id_token))

    async def map_claims(self, verified: Verified) -> Verified:
        """Run the provider's mapper once; the result travels with the verified sign-in."""
        if verified.mapped is not None:
            return verified
        try:
            mapped = await run_mapper(
                self._mappers[verified.provider], verified.claims, timeout=self._mapper_timeout
            )
        except MapperError as exc:
            text = "The sign-in provider's data could not be mapped to an account."
            raise errors.BadRequest(text, reason=text, details={"hint": str(exc)[:500]}) from None
        return Verified(
            verified.provider,
            verified.subject,
            verified.claims,
            verified.tokens,
            verified.form_traits,
            mapped,
        )

    async def find_identity(self, verified: Verified) -> Identity | None:
        return await self._identities.find_by_credential("oidc", verified.identifier)

    async def find_duplicate(self, flow: Flow, verified: Verified) -> tuple[Identity, str] | None:
        assert verified.mapped is not None
        schema = self._schemas.get(flow.identity_schema) if flow.identity_schema else self._schemas.default()
        traits = _merge(verified.mapped.traits, verified.form_traits)
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
                await self._redirect(flow, provider, body)
            verified = await self._verify_native(provider, body)
        identity = await self.find_identity(verified)
        if identity is None:
            if flow.type != "api" or not self._registration_enabled:
                raise FlowInvalid([texts.generic(f"No account is linked to this {provider.label} account.")])
            identity = await self._create(flow, await self.map_claims(verified), {})
        if identity.state != "active":
            raise FlowInvalid([texts.generic("Your account is disabled.")])
        return identity

    async def after_login(self, flow: Flow, identity: Identity, method: str) -> None:
        """After signing in to the existing account, link the provider account that found it."""
        pending = flow.internal.get(LINK)
        if not isinstance(pending, Mapping):
            return
        if pending.get("identity_id") != str(identity.id):
            raise FlowInvalid([texts.link_mismatch()])
        verified = Verified.from_record(pending)
        try:
            await self._identities.save_credential(identity.id, accounts.credential_with(identity, verified))
        except errors.Conflict:
            label = (
                self.providers[verified.provider].label if verified.provider in self.providers else "provider"
            )
            raise FlowInvalid([texts.linked_elsewhere(label)]) from None
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
                await self._redirect(flow, provider, body, form_traits)
            else:
                verified = await self._verify_native(provider, body)
                if await self.find_identity(verified) is not None:
                    raise FlowInvalid([texts.linked_elsewhere(provider.label)])
        return await self._create(flow, await self.map_claims(verified), form_traits)

    async def _create(self, flow: Flow, verified: Verified, form_traits: Mapping[str, Any]) -> Identity:
        assert verified.mapped is not None
        provider = self.providers[verified.provider]
        schema = self._schemas.get(flow.identity_schema) if flow.identity_schema else self._schemas.default()
        traits = _merge(_merge(verified.mapped.traits, verified.form_traits), form_traits)
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
                    label=texts.sign_up_with(provider.label, provider.id),
                )
            )
            raise FlowInvalid(node_messages=problems, values=flatten(traits))
        if await accounts.find_existing_owner(self._identities, schema, traits) is not None:
            raise FlowInvalid([texts.duplicate_sign_in_to_link()], values=flatten(traits))
        spec = IdentitySpec(
            traits=traits,
            schema_id=schema.id,
            metadata_public=verified.mapped.metadata_public,
            metadata_admin=verified.mapped.metadata_admin,
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
            raise FlowInvalid([texts.duplicate_sign_in_to_link()], values=flatten(traits)) from None
        except errors.ValidationError as exc:
            raise FlowInvalid([texts.generic(exc.reason or exc.message)], values=flatten(traits)) from None
        flow.internal.pop(PENDING, None)
        if verified.tokens:
            identity = await self._identities.save_credential(
                identity.id, accounts.credential_with(identity, verified)
            )
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
                raise FlowInvalid([texts.linked_elsewhere(label)])
            try:
                updated = await self._identities.save_credential(
                    identity.id, accounts.credential_with(identity, verified)
                )
            except errors.Conflict:
                raise FlowInvalid([texts.linked_elsewhere(label)]) from None
            return SettingsUpdate(updated)
        unlink = body.get("unlink")
        if unlink not in (None, ""):
            provider = self.provider(unlink)
            require_privileged(ctx)
            if provider.id not in accounts.linked_providers(identity):
                raise FlowInvalid([texts.generic(f"{provider.label} is not linked to your account.")])
            if accounts.other_first_factors(identity, provider.id, code_login=self._code_login) == 0:
                raise FlowInvalid([texts.unlink_last()])
            remaining = accounts.credential_without(identity, provider.id)
            if remaining is None:
                updated = await self._identities.remove_credential(identity.id, "oidc")
            else:
                updated = await self._identities.save_credential(identity.id, remaining)
            return SettingsUpdate(updated)
        provider = self.provider(body.get("link"))
        require_privileged(ctx)
        if provider.id in accounts.linked_providers(identity):
            raise FlowInvalid([texts.generic(f"{provider.label} is already linked to your account.")])
        await self._redirect(flow, provider, body)

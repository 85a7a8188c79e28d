"""Talking to providers for the ``oidc`` strategy: the redirect out (with a single-use
``state``, a ``nonce`` and PKCE), the way back (code exchange and ID token checks), native
apps' ID tokens, sealing the provider's tokens, and running the claims mapper."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, NoReturn

import httpx

from sidecar import errors
from sidecar.config.model import Config
from sidecar.flows import messages
from sidecar.flows.model import Flow
from sidecar.flows.outcome import FlowInvalid
from sidecar.identity.model import utcnow
from sidecar.kv.store import KeyValueStore
from sidecar.security.cipher import cipher_from
from sidecar.security.jsonnet import JsonnetSandbox
from sidecar.strategies.federation.accounts import Verified
from sidecar.strategies.federation.mapper import MapperError, load_mapper, run_mapper
from sidecar.strategies.oidc.client import OidcClient, TokenInvalid, TokenSet
from sidecar.strategies.oidc.providers import Provider, resolve
from sidecar.strategies.oidc.state import RedirectState, StateStore, new_secret

UPSTREAM_PARAMETERS = ("login_hint", "hd", "prompt", "auth_type")


def _load_mapper(provider_id: str, url: str | None) -> str:
    try:
        return load_mapper(url)
    except ValueError as exc:
        raise ValueError(f"oidc provider {provider_id!r}: {exc}") from None


class ProviderSignIn:
    def __init__(
        self,
        config: Config,
        kv: KeyValueStore,
        jsonnet: JsonnetSandbox,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        method = config.selfservice.methods.oidc.config
        self._jsonnet = jsonnet
        self.providers: dict[str, Provider] = {p.id: resolve(p) for p in method.providers}
        self._mappers = {p.id: _load_mapper(p.id, p.mapper_url) for p in method.providers}
        self._mapper_timeout = method.mapper_timeout.total_seconds()
        self._base = (method.base_redirect_uri or config.public_base_url).rstrip("/")
        self.states = StateStore(kv)
        self._cipher = cipher_from(config.secrets.cipher)
        self.client = OidcClient(
            http or httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
        )

    def redirect_uri(self, provider_id: str) -> str:
        return f"{self._base}/self-service/methods/oidc/callback/{provider_id}"

    def provider(self, provider_id: Any) -> Provider:
        found = self.providers.get(provider_id) if isinstance(provider_id, str) else None
        if found is None:
            raise FlowInvalid([messages.generic(f"Unknown sign-in provider {str(provider_id)[:64]!r}.")])
        return found

    async def start(
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
        state = await self.states.put(record, max(flow.expires_at - utcnow(), timedelta(minutes=1)))
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

    # --- coming back --------------------------------------------------------------------------------

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

    async def verify_native(self, provider: Provider, body: Mapping[str, Any]) -> Verified:
        id_token, nonce = body.get("id_token"), body.get("id_token_nonce")
        if not provider.native_id_token:
            raise FlowInvalid(
                [messages.generic(f"{provider.label} does not support signing in with an ID token.")]
            )
        if not isinstance(id_token, str) or not id_token:
            raise FlowInvalid(
                [messages.generic("API flows sign in with the provider's id_token (and id_token_nonce).")]
            )
        if not isinstance(nonce, str) or not nonce:
            raise FlowInvalid([messages.generic("id_token_nonce is required with id_token.")])
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
            raise FlowInvalid([messages.generic(exc.message)]) from None
        return Verified(provider.id, str(claims["sub"]), claims, self._seal(provider, None, id_token))

    async def map_claims(self, verified: Verified) -> Verified:
        """Run the provider's mapper once; the result travels with the verified sign-in."""
        if verified.mapped is not None:
            return verified
        try:
            mapped = await run_mapper(
                self._jsonnet, self._mappers[verified.provider], verified.claims, timeout=self._mapper_timeout
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

    def sso_starts(self) -> dict[str, Callable[[Flow, str], Awaitable[None]]]:
        """Per organization id, the sign-in with its (first) provider, with ``login_hint``."""
        starts: dict[str, Callable[[Flow, str], Awaitable[None]]] = {}
        for provider in self.providers.values():
            org = (provider.config.organization_id or "").lower()
            if org and org not in starts:
                starts[org] = self._starter(provider)
        return starts

    def _starter(self, provider: Provider) -> Callable[[Flow, str], Awaitable[None]]:
        async def start(flow: Flow, identifier: str) -> None:
            await self.start(flow, provider, {"upstream_parameters": {"login_hint": identifier}})

        return start

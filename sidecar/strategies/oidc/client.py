"""The OAuth2 / OpenID Connect protocol: discovery, authorization URL, code exchange, ID tokens.

Request building comes from authlib's framework-free core (RFC 6749 parameters, RFC 7636 PKCE);
JOSE from joserfc (authlib's JOSE successor, see ``security/jwt.py``); HTTP from an injected
``httpx.AsyncClient``. ID tokens are checked as OpenID Connect Core §3.1.3.7 asks: signature
against the issuer's JWKS, ``iss``, ``aud`` (and ``azp`` with several audiences), ``exp``/``iat``
and the ``nonce`` bound to the flow. The JWKS is cached and fetched again when a token names an
unknown ``kid`` (key rotation), at most every ``JWKS_MIN_REFETCH``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from sidecar import errors
from sidecar.strategies.oidc.providers import Provider, client_secret, expected_issuer, github_claims

DISCOVERY_TTL = 3600.0
JWKS_TTL = 600.0
JWKS_MIN_REFETCH = 1.0
CLOCK_LEEWAY = 30
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
MAX_RESPONSE = 1024 * 1024


class TokenInvalid(errors.BadRequest):
    """The provider's answer failed a check (signature, issuer, audience, expiry, nonce)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, reason=message, details={"hint": hint} if hint else None)


@dataclass(frozen=True, slots=True)
class Endpoints:
    authorization: str
    token: str
    issuer: str | None = None
    jwks_uri: str | None = None
    userinfo: str | None = None


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str | None
    refresh_token: str | None
    id_token: str | None
    raw: Mapping[str, Any]


def _unreachable(provider: Provider, exc: Exception) -> errors.BadGateway:
    text = f"The identity provider {provider.label} could not be reached, please try again later."
    return errors.BadGateway(
        text, reason=text, details={"provider": provider.id, "cause": type(exc).__name__}
    )


class OidcClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http
        self._discovery: dict[str, tuple[float, dict[str, Any]]] = {}
        self._jwks: dict[str, tuple[float, KeySet]] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- HTTP ---------------------------------------------------------------------------------

    async def _json(self, provider: Provider, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise _unreachable(provider, exc) from None
        if len(response.content) > MAX_RESPONSE:
            raise errors.BadGateway(f"The identity provider {provider.label} sent too large an answer.")
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or body is None:
            detail = body.get("error") if isinstance(body, dict) else None
            text = f"The identity provider {provider.label} refused the request" + (
                f": {detail}" if isinstance(detail, str) else f" (HTTP {response.status_code})."
            )
            raise errors.BadGateway(
                text, reason=text, details={"provider": provider.id, "status": response.status_code}
            )
        return body

    # --- discovery and keys ---------------------------------------------------------------------

    async def _discover(self, provider: Provider) -> dict[str, Any]:
        issuer = provider.issuer
        if issuer is None:
            raise errors.InternalError(
                f"The identity provider {provider.label} has no issuer URL to discover."
            )
        cached = self._discovery.get(issuer)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        doc = await self._json(provider, "GET", issuer + "/.well-known/openid-configuration")
        if not isinstance(doc, dict) or not isinstance(doc.get("issuer"), str):
            raise errors.BadGateway(
                f"The identity provider {provider.label} has no valid discovery document."
            )
        if doc["issuer"].rstrip("/") != provider.issuer and "{tenantid}" not in doc["issuer"]:
            # OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
            raise errors.BadGateway(
                f"The identity provider {provider.label} announced issuer {doc['issuer']!r}, "
                f"expected {provider.issuer!r}."
            )
        self._discovery[issuer] = (time.monotonic() + DISCOVERY_TTL, doc)
        return doc

    async def endpoints(self, provider: Provider) -> Endpoints:
        if not provider.is_oidc:
            if not provider.auth_url or not provider.token_url:
                raise errors.InternalError(f"oidc provider {provider.id} has no auth_url/token_url")
            return Endpoints(provider.auth_url, provider.token_url)
        doc = await self._discover(provider)
        auth = provider.auth_url or doc.get("authorization_endpoint")
        token = provider.token_url or doc.get("token_endpoint")
        if not isinstance(auth, str) or not isinstance(token, str):
            raise errors.BadGateway(f"The identity provider {provider.label} announced no endpoints.")
        return Endpoints(
            authorization=auth,
            token=token,
            issuer=str(doc["issuer"]).rstrip("/"),
            jwks_uri=doc.get("jwks_uri") if isinstance(doc.get("jwks_uri"), str) else None,
            userinfo=doc.get("userinfo_endpoint") if isinstance(doc.get("userinfo_endpoint"), str) else None,
        )

    async def _keys(self, provider: Provider, uri: str, *, refresh: bool = False) -> KeySet:
        now = time.monotonic()
        cached = self._jwks.get(uri)  # (fetched at, keys)
        if cached is not None:
            age = now - cached[0]
            if age < (JWKS_MIN_REFETCH if refresh else JWKS_TTL):
                return cached[1]
        doc = await self._json(provider, "GET", uri)
        try:
            keys = KeySet.import_key_set(doc)
        except (JoseError, ValueError, TypeError, KeyError):
            raise errors.BadGateway(
                f"The identity provider {provider.label} published an invalid JWKS."
            ) from None
        self._jwks[uri] = (now, keys)
        return keys

    # --- the code flow --------------------------------------------------------------------------

    def authorization_url(
        self,
        provider: Provider,
        endpoints: Endpoints,
        *,
        redirect_uri: str,
        state: str,
        nonce: str,
        code_verifier: str,
        extra: Mapping[str, str] | None = None,
    ) -> str:
        params: dict[str, Any] = {
            "code_challenge": create_s256_code_challenge(code_verifier),
            "code_challenge_method": "S256",
        }
        if provider.is_oidc:
            params["nonce"] = nonce
        if provider.response_mode:
            params["response_mode"] = provider.response_mode
        if provider.requested_claims:
            params["claims"] = json.dumps(provider.requested_claims, separators=(",", ":"))
        params.update(extra or {})
        url: str = prepare_grant_uri(
            endpoints.authorization,
            provider.client_id,
            "code",
            redirect_uri=redirect_uri,
            scope=" ".join(provider.scope),
            state=state,
            **params,
        )
        return url

    async def exchange(
        self, provider: Provider, endpoints: Endpoints, *, code: str, code_verifier: str, redirect_uri: str
    ) -> TokenSet:
        fields: dict[str, Any] = {"code": code, "code_verifier": code_verifier}
        secret = client_secret(provider)
        auth: httpx.BasicAuth | None = None
        if provider.token_auth == "client_secret_basic" and secret is not None:
            auth = httpx.BasicAuth(provider.client_id, secret)
        else:
            fields["client_id"] = provider.client_id
            if secret is not None:
                fields["client_secret"] = secret
        body = prepare_token_request("authorization_code", redirect_uri=redirect_uri, **fields)
        raw = await self._json(
            provider,
            "POST",
            endpoints.token,
            content=body,
            auth=auth,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        )
        if not isinstance(raw, dict) or "error" in raw:
            error = raw.get("error") if isinstance(raw, dict) else None
            raise errors.BadGateway(f"The identity provider {provider.label} refused the code: {error}")

        def text(name: str) -> str | None:
            value = raw.get(name)
            return value if isinstance(value, str) and value else None

        return TokenSet(text("access_token"), text("refresh_token"), text("id_token"), raw)

    # --- ID tokens and profiles -------------------------------------------------------------------

    async def verify_id_token(
        self,
        provider: Provider,
        endpoints: Endpoints,
        id_token: str,
        *,
        nonce: str | None,
        audiences: Sequence[str] | None = None,
        hashed_nonce: bool = False,
    ) -> dict[str, Any]:
        if not endpoints.jwks_uri or not endpoints.issuer:
            raise errors.BadGateway(f"The identity provider {provider.label} publishes no signing keys.")
        try:
            header = jws.extract_compact(id_token.encode()).protected
        except (JoseError, ValueError):
            raise TokenInvalid("The ID token is malformed.") from None
        if header.get("alg") not in ALGORITHMS:
            raise TokenInvalid(f"The ID token is signed with an unsupported algorithm {header.get('alg')!r}.")
        keys = await self._keys(provider, endpoints.jwks_uri)
        kid = header.get("kid")
        if kid and not any(k.kid == kid for k in keys.keys):
            keys = await self._keys(provider, endpoints.jwks_uri, refresh=True)
        try:
            token = jwt.decode(id_token, keys, algorithms=list(ALGORITHMS))
        except JoseError as exc:
            raise TokenInvalid("The ID token signature is invalid.", hint=type(exc).__name__) from None
        claims = dict(token.claims)
        issuer = expected_issuer(provider, endpoints.issuer, claims)
        if claims.get("iss") != issuer:
            raise TokenInvalid(
                "The ID token was issued by another issuer.", hint=f"iss {claims.get('iss')!r}"
            )
        allowed = tuple(audiences or (provider.client_id,))
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(a in allowed for a in auds):
            raise TokenInvalid("The ID token is meant for another client.", hint=f"aud {aud!r}")
        if len(auds) > 1 and claims.get("azp") not in allowed:
            raise TokenInvalid("The ID token is meant for another client.", hint="azp")
        registry = jwt.JWTClaimsRegistry(
            leeway=CLOCK_LEEWAY, exp={"essential": True}, iat={"essential": True}
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise TokenInvalid(
                "The ID token has expired or is not valid yet.", hint=type(exc).__name__
            ) from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise TokenInvalid("The ID token names no subject.")
        if nonce is not None:
            got = claims.get("nonce")
            accepted = {nonce, hashlib.sha256(nonce.encode()).hexdigest()} if hashed_nonce else {nonce}
            if not isinstance(got, str) or got not in accepted:
                raise TokenInvalid("The ID token does not belong to this sign-in (nonce mismatch).")
        return claims

    async def userinfo(self, provider: Provider, endpoints: Endpoints, access_token: str) -> dict[str, Any]:
        if not endpoints.userinfo:
            return {}
        body = await self._json(
            provider, "GET", endpoints.userinfo, headers={"Authorization": f"Bearer {access_token}"}
        )
        return dict(body) if isinstance(body, dict) else {}

    async def github_profile(
        self, provider: Provider, endpoints: Endpoints, access_token: str
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/vnd.github+json"}
        base = provider.api_url or "https://api.github.com"
        user = await self._json(provider, "GET", f"{base}/user", headers=headers)
        emails: Any = []
        if "user:email" in provider.scope or "user" in provider.scope:
            emails = await self._json(provider, "GET", f"{base}/user/emails", headers=headers)
        if not isinstance(user, dict) or not user.get("id"):
            raise errors.BadGateway(f"The identity provider {provider.label} returned no user.")
        return github_claims(user, emails if isinstance(emails, list) else [], endpoints.token)

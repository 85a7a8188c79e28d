"""Provider presets as data, and the few functions that differ per provider.

A preset says where a provider lives and how its profile is read: ``id_token`` (OpenID Connect:
the verified ID token, topped up by the UserInfo endpoint) or ``github`` (plain OAuth2: GitHub's
REST API). A config entry picks a preset with ``provider`` and may override any endpoint
(Kratos: ``issuer_url``, ``auth_url``, ``token_url``), e.g. for self-hosted GitLab or in tests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sidecar.config.model import OidcProvider

Profile = Literal["id_token", "github"]
TokenAuth = Literal["client_secret_basic", "client_secret_post"]


@dataclass(frozen=True, slots=True)
class Preset:
    label: str
    issuer: str | None = None
    auth_url: str | None = None
    token_url: str | None = None
    api_url: str | None = None
    scope: tuple[str, ...] = ("openid", "email", "profile")
    profile: Profile = "id_token"
    token_auth: TokenAuth = "client_secret_basic"
    response_mode: str | None = None
    native_id_token: bool = False
    """Native apps may sign in with an ID token they got from the provider's SDK (Kratos: Apple,
    Google)."""
    hashed_nonce: bool = False
    """The app hands the provider sha256(nonce) and the sidecar the nonce itself (Apple's SDK)."""


PRESETS: dict[str, Preset] = {
    "generic": Preset(label="", native_id_token=True),
    "google": Preset(label="Google", issuer="https://accounts.google.com", native_id_token=True),
    "microsoft": Preset(label="Microsoft", issuer="https://login.microsoftonline.com/{tenant}/v2.0"),
    "gitlab": Preset(label="GitLab", issuer="https://gitlab.com", scope=("openid", "email", "profile")),
    "apple": Preset(
        label="Apple",
        issuer="https://appleid.apple.com",
        scope=("openid", "email", "name"),
        token_auth="client_secret_post",
        response_mode="form_post",
        native_id_token=True,
        hashed_nonce=True,
    ),
    "github": Preset(
        label="GitHub",
        auth_url="https://github.com/login/oauth/authorize",
        token_url="https://github.com/login/oauth/access_token",
        api_url="https://api.github.com",
        scope=("user:email",),
        profile="github",
        token_auth="client_secret_post",
    ),
}


@dataclass(frozen=True, slots=True)
class Provider:
    """A configured provider with its preset applied: everything the protocol code needs."""

    id: str
    kind: str
    label: str
    client_id: str
    client_secret: str | None
    issuer: str | None
    auth_url: str | None
    token_url: str | None
    api_url: str | None
    scope: tuple[str, ...]
    profile: Profile
    token_auth: TokenAuth
    response_mode: str | None
    native_id_token: bool
    hashed_nonce: bool
    audiences: tuple[str, ...]
    requested_claims: Mapping[str, Any] | None
    trust_email_verified: bool
    store_tokens: bool
    config: OidcProvider

    @property
    def is_oidc(self) -> bool:
        return self.profile == "id_token"


def resolve(config: OidcProvider) -> Provider:
    """Apply the preset; raises ValueError (naming the provider) when the entry cannot work."""
    preset = PRESETS.get(config.provider)
    if preset is None:
        known = ", ".join(sorted(PRESETS))
        raise ValueError(f"oidc provider {config.id!r}: unknown provider {config.provider!r} ({known})")
    issuer = config.issuer_url or preset.issuer
    if issuer and "{tenant}" in issuer:
        issuer = issuer.replace("{tenant}", config.microsoft_tenant or "common")
    if preset.profile == "id_token" and not issuer:
        raise ValueError(f"oidc provider {config.id!r}: issuer_url is required for {config.provider}")
    return Provider(
        id=config.id,
        kind=config.provider,
        label=config.label or preset.label or config.id,
        client_id=config.client_id,
        client_secret=config.client_secret,
        issuer=issuer.rstrip("/") if issuer and preset.profile == "id_token" else issuer,
        auth_url=config.auth_url or preset.auth_url,
        token_url=config.token_url or preset.token_url,
        api_url=(config.api_url or preset.api_url or "").rstrip("/") or None,
        scope=tuple(config.scope) or preset.scope,
        profile=preset.profile,
        token_auth=preset.token_auth,
        response_mode=preset.response_mode,
        native_id_token=preset.native_id_token,
        hashed_nonce=preset.hashed_nonce,
        audiences=(config.client_id, *config.additional_id_token_audiences),
        requested_claims=config.requested_claims,
        trust_email_verified=config.trust_email_verified,
        store_tokens=config.store_tokens,
        config=config,
    )


def expected_issuer(provider: Provider, discovered: str, claims: Mapping[str, Any]) -> str:
    """The ``iss`` an ID token must carry. Microsoft's multi-tenant discovery says
    ``.../{tenantid}/v2.0``: the token's own ``tid`` fills it in (and must be a tenant id)."""
    if "{tenantid}" in discovered:
        tid = claims.get("tid")
        return discovered.replace("{tenantid}", tid) if isinstance(tid, str) and tid else discovered
    return discovered


def client_secret(provider: Provider, now: float | None = None) -> str | None:
    """The client secret to present: configured, or (Apple) a short-lived ES256 JWT."""
    cfg = provider.config
    if provider.kind != "apple" or not (cfg.apple_private_key and cfg.apple_team_id):
        return provider.client_secret
    from joserfc import jwt
    from joserfc.jwk import ECKey

    issued = int(now if now is not None else time.time())
    key = ECKey.import_key(cfg.apple_private_key)
    claims = {
        "iss": cfg.apple_team_id,
        "iat": issued,
        "exp": issued + 300,
        "aud": "https://appleid.apple.com",
        "sub": provider.client_id,
    }
    return jwt.encode({"alg": "ES256", "kid": cfg.apple_private_key_id or ""}, claims, key)


def github_claims(user: Mapping[str, Any], emails: list[Any], token_url: str) -> dict[str, Any]:
    """GitHub's user API as OpenID claims (Kratos ``provider_github.go``): the primary email and
    whether GitHub verified it."""
    primary = next(
        (
            e
            for e in emails
            if isinstance(e, Mapping) and e.get("primary") and isinstance(e.get("email"), str)
        ),
        None,
    )
    email = primary["email"] if primary else user.get("email")
    claims: dict[str, Any] = {
        "iss": token_url,
        "sub": str(user.get("id", "")),
        "name": user.get("name"),
        "nickname": user.get("login"),
        "preferred_username": user.get("login"),
        "picture": user.get("avatar_url"),
        "profile": user.get("html_url"),
        "website": user.get("blog"),
        "email": email,
        "email_verified": bool(primary and primary.get("verified")),
    }
    return {k: v for k, v in claims.items() if v not in (None, "")}


def form_action_origins(method_enabled: bool, providers: list[OidcProvider]) -> list[str]:
    """Where the pages' forms may be redirected (CSP ``form-action``): each provider's
    authorization endpoint, or its issuer when the endpoint comes from discovery."""
    if not method_enabled:
        return []
    out: list[str] = []
    for config in providers:
        try:
            provider = resolve(config)
        except ValueError:
            continue
        url = provider.auth_url or provider.issuer
        if url:
            out.append(url)
    return out

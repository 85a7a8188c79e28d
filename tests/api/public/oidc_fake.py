"""A small fake identity provider on a real 127.0.0.1 port, for token-level negative cases.

It speaks just enough OpenID Connect (discovery, authorize → code, token with PKCE, JWKS,
UserInfo) and GitHub's OAuth2 + user API. The "user" who signs in is whoever the test puts in
``next_user``; knobs let a test break one thing at a time (audience, expiry, nonce, issuer,
signature key, a token endpoint that fails).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.conftest import free_port
from tests.e2e.conftest import serve


def _key(kid: str) -> RSAKey:
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})
    return key


@dataclass
class FakeProvider:
    base: str
    client_id: str = "sidecar-client"
    client_secret: str = "sidecar-secret-0123456789"
    next_user: dict[str, Any] = field(default_factory=lambda: {"sub": "alice", "email": "alice@example.com"})
    id_token_overrides: dict[str, Any] = field(default_factory=dict)
    token_status: int = 200
    sign_with_unpublished_key: bool = False
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    access: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    keys: list[RSAKey] = field(default_factory=lambda: [_key("k1")])
    emails_override: list[dict[str, Any]] | None = None

    def rotate(self) -> None:
        """A new signing key, published alongside the old one (the old one goes away later)."""
        self.keys.insert(0, _key(f"k{len(self.keys) + 1}"))

    def id_token(self, claims: dict[str, Any], *, key: RSAKey | None = None) -> str:
        now = int(time.time())
        payload = {"iss": self.base, "aud": self.client_id, "iat": now, "exp": now + 300, **claims}
        signing = key or self.keys[0]
        return jwt.encode({"alg": "RS256", "kid": signing.kid}, payload, signing)

    # --- endpoints ------------------------------------------------------------------------------

    async def discovery(self, request: Request) -> Response:
        self.requests.append("discovery")
        return JSONResponse(
            {
                "issuer": self.base,
                "authorization_endpoint": f"{self.base}/auth",
                "token_endpoint": f"{self.base}/token",
                "jwks_uri": f"{self.base}/jwks",
                "userinfo_endpoint": f"{self.base}/userinfo",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def jwks(self, request: Request) -> Response:
        self.requests.append("jwks")
        return JSONResponse(KeySet(list(self.keys)).as_dict(private=False))

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != self.client_id or q.get("code_challenge_method") != "S256":
            return JSONResponse({"error": "invalid_request"}, 400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "user": dict(self.next_user),
            "nonce": q.get("nonce"),
            "challenge": q.get("code_challenge"),
            "redirect_uri": q.get("redirect_uri"),
        }
        target = f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}"
        return RedirectResponse(target, 303)

    async def token(self, request: Request) -> Response:
        self.requests.append("token")
        if self.token_status != 200:
            return JSONResponse({"error": "server_error"}, self.token_status)
        form = await request.form()
        grant = self.codes.pop(str(form.get("code")), None)  # a code works once
        if grant is None:
            return JSONResponse({"error": "invalid_grant"}, 400)
        verifier = str(form.get("code_verifier") or "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["challenge"] or form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant"}, 400)
        auth = request.headers.get("authorization", "")
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        posted = form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret
        if auth != f"Basic {basic}" and not posted:
            return JSONResponse({"error": "invalid_client"}, 401)
        access = secrets.token_urlsafe(16)
        self.access[access] = grant["user"]
        claims = {"sub": grant["user"]["sub"], "nonce": grant["nonce"], **self.id_token_overrides}
        stray = _key("stray") if self.sign_with_unpublished_key else None
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "Bearer",
                "refresh_token": "refresh-" + access,
                "id_token": self.id_token(claims, key=stray),
            }
        )

    async def userinfo(self, request: Request) -> Response:
        user = self.access.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        return JSONResponse(user) if user else JSONResponse({"error": "invalid_token"}, 401)

    async def github_user(self, request: Request) -> Response:
        user = self.access.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        if user is None:
            return JSONResponse({"message": "Bad credentials"}, 401)
        return JSONResponse(
            {
                "id": int(user["sub"]),
                "login": user.get("login", "octo"),
                "name": user.get("name"),
                "email": None,
            }
        )

    async def github_emails(self, request: Request) -> Response:
        user = self.access.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        if user is None:
            return JSONResponse({"message": "Bad credentials"}, 401)
        emails = self.emails_override or [{"email": user["email"], "primary": True, "verified": True}]
        return JSONResponse(emails)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/jwks", self.jwks),
                Route("/auth", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/userinfo", self.userinfo),
                Route("/login/oauth/authorize", self.authorize),
                Route("/login/oauth/access_token", self.token, methods=["POST"]),
                Route("/api/user", self.github_user),
                Route("/api/user/emails", self.github_emails),
            ]
        )


@contextlib.contextmanager
def fake_provider() -> Iterator[FakeProvider]:
    port = free_port()
    fake = FakeProvider(base=f"http://127.0.0.1:{port}")

    @contextlib.asynccontextmanager
    async def make_app() -> Any:
        yield fake.app()

    with serve(port, make_app):
        yield fake

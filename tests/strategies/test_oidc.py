"""The oidc strategy's parts without HTTP servers: presets, the token cipher, the Jsonnet mapper,
and ID-token checks against a JWKS served through ``httpx.MockTransport``."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from sidecar import errors
from sidecar.config.model import OidcProvider
from sidecar.security.cipher import Cipher, CipherError
from sidecar.security.jsonnet import JsonnetSandbox
from sidecar.strategies.federation.mapper import DEFAULT_MAPPER, MapperError, load_mapper, run_mapper
from sidecar.strategies.oidc.client import OidcClient, TokenInvalid
from sidecar.strategies.oidc.providers import (
    PRESETS,
    client_secret,
    form_action_origins,
    github_claims,
    resolve,
)

ISSUER = "https://op.example.test"
LOOPING_MAPPER = (  # 10^9 additions: only the deadline stops it
    "std.foldl(function(a, b) std.foldl(function(c, d) c + d, std.range(0, 10000), a),"
    " std.range(0, 100000), 0)"
)


def config(**kw: Any) -> OidcProvider:
    return OidcProvider.model_validate({"id": "p", "client_id": "cid", **kw})


# --- presets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "issuer", "oidc"),
    [
        pytest.param("google", "https://accounts.google.com", True, id="google"),
        pytest.param("microsoft", "https://login.microsoftonline.com/common/v2.0", True, id="microsoft"),
        pytest.param("gitlab", "https://gitlab.com", True, id="gitlab"),
        pytest.param("apple", "https://appleid.apple.com", True, id="apple"),
        pytest.param("github", None, False, id="github"),
    ],
)
def test_presets(kind: str, issuer: str | None, oidc: bool) -> None:
    provider = resolve(config(provider=kind))
    assert provider.issuer == issuer and provider.is_oidc is oidc
    assert provider.label == PRESETS[kind].label


def test_overrides_and_errors() -> None:
    assert resolve(config(provider="microsoft", microsoft_tenant="contoso")).issuer == (
        "https://login.microsoftonline.com/contoso/v2.0"
    )
    gitlab = resolve(config(provider="gitlab", issuer_url="https://git.example.test/", scope=["openid"]))
    assert gitlab.issuer == "https://git.example.test" and gitlab.scope == ("openid",)
    github = resolve(config(provider="github", api_url="https://ghe.example.test/api/v3/"))
    assert github.api_url == "https://ghe.example.test/api/v3" and github.token_auth == "client_secret_post"
    with pytest.raises(ValueError, match="issuer_url is required"):
        resolve(config(provider="generic"))
    with pytest.raises(ValueError, match="unknown provider 'myspace'"):
        resolve(config(provider="myspace"))
    origins = form_action_origins(
        True, [config(provider="github"), config(provider="generic", issuer_url=ISSUER)]
    )
    assert origins == ["https://github.com/login/oauth/authorize", ISSUER]
    assert form_action_origins(False, [config(provider="github")]) == []


def test_apple_client_secret_is_a_signed_jwt() -> None:
    key = ECKey.generate_key("P-256")
    pem = key.as_pem(private=True).decode()
    apple = resolve(
        config(provider="apple", apple_team_id="TEAM", apple_private_key_id="KID", apple_private_key=pem)
    )
    token = jwt.decode(client_secret(apple, now=1_700_000_000) or "", key)
    assert token.header["kid"] == "KID"
    assert token.claims["iss"] == "TEAM" and token.claims["sub"] == "cid"
    assert token.claims["aud"] == "https://appleid.apple.com" and token.claims["exp"] == 1_700_000_300


def test_github_claims_take_the_primary_email() -> None:
    user = {
        "id": 7,
        "login": "octo",
        "name": "Octo",
        "avatar_url": "https://a/x.png",
        "email": "public@x.test",
    }
    emails = [
        {"email": "other@x.test", "primary": False, "verified": True},
        {"email": "main@x.test", "primary": True, "verified": False},
    ]
    claims = github_claims(user, emails, "https://github.com/login/oauth/access_token")
    assert claims["sub"] == "7" and claims["email"] == "main@x.test" and claims["email_verified"] is False
    assert claims["nickname"] == "octo" and claims["picture"] == "https://a/x.png"
    assert github_claims(user, [], "t")["email"] == "public@x.test"


# --- cipher -----------------------------------------------------------------------------------------


def test_cipher_round_trip_rotation_and_tampering() -> None:
    old, new = "a" * 32, "b" * 32
    sealed = Cipher([old]).encrypt("token-value")
    assert "token-value" not in sealed and Cipher([old]).encrypt("token-value") != sealed
    assert Cipher([new, old]).decrypt(sealed) == "token-value"  # rotated: old values still open
    with pytest.raises(CipherError):
        Cipher([new]).decrypt(sealed)
    tampered = sealed[:-2] + ("00" if sealed[-2:] != "00" else "11")
    with pytest.raises(CipherError):
        Cipher([old]).decrypt(tampered)
    with pytest.raises(CipherError):
        Cipher([old]).decrypt("not hex")
    with pytest.raises(ValueError):
        Cipher(["short"])


# --- mapper -----------------------------------------------------------------------------------------


@pytest.fixture
async def sandbox() -> AsyncIterator[JsonnetSandbox]:
    pool = JsonnetSandbox(1, 4)
    try:
        yield pool
    finally:
        await pool.close()


async def test_mapper_maps_claims(sandbox: JsonnetSandbox, tmp_path: Path) -> None:
    source = """
    local claims = std.extVar('claims');
    {identity: {traits: {email: claims.email}, metadata_public: {sub: claims.sub},
                verified_addresses: [{via: 'email', value: claims.email}]}}
    """
    path = tmp_path / "m.jsonnet"
    path.write_text(source)
    encoded = "base64://" + base64.b64encode(source.encode()).decode()
    assert load_mapper(f"file://{path}") == source == load_mapper(encoded)
    mapped = await run_mapper(
        sandbox, load_mapper(f"file://{path}"), {"email": "a@x.test", "sub": "1"}, timeout=5
    )
    assert mapped.traits == {"email": "a@x.test"} and mapped.metadata_public == {"sub": "1"}
    assert mapped.verified_addresses == (("email", "a@x.test"),)
    assert (await run_mapper(sandbox, DEFAULT_MAPPER, {"sub": "1"}, timeout=5)).traits == {}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param("local f(x) = f(x + 1); f(0)", "failed", id="deep-recursion"),
        pytest.param(
            LOOPING_MAPPER,
            "did not finish",
            id="loop",
        ),
        pytest.param("error 'nope'", "nope", id="error"),
        pytest.param("{identity: {traits: 'x'}}", "traits", id="bad-shape"),
        pytest.param("import '/etc/passwd'", "import not available /etc/passwd", id="import"),
        pytest.param("std.range(0, 1e9)", "crashed|did not finish", id="memory"),
        pytest.param("{", "failed", id="syntax"),
    ],
)
async def test_mapper_failures_are_clean_and_the_pool_recovers(
    sandbox: JsonnetSandbox, source: str, message: str
) -> None:
    with pytest.raises(MapperError, match=message):
        await run_mapper(sandbox, source, {}, timeout=1)
    mapped = await run_mapper(sandbox, DEFAULT_MAPPER, {"email": "a@x.test"}, timeout=5)
    assert mapped.traits == {"email": "a@x.test"}


def test_mapper_url_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported scheme"):
        load_mapper("https://example.test/mapper.jsonnet")
    with pytest.raises(ValueError, match="cannot read"):
        load_mapper(f"file://{tmp_path}/missing.jsonnet")


# --- ID tokens -------------------------------------------------------------------------------------


class Jwks:
    """A provider's discovery + JWKS behind MockTransport, counting JWKS fetches."""

    def __init__(self) -> None:
        self.keys = [RSAKey.generate_key(2048, parameters={"kid": "a"})]
        self.fetches = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "authorization_endpoint": f"{ISSUER}/authorize",
                    "token_endpoint": f"{ISSUER}/token",
                    "jwks_uri": f"{ISSUER}/jwks",
                },
            )
        self.fetches += 1
        return httpx.Response(200, json=KeySet(list(self.keys)).as_dict(private=False))

    def sign(self, key: Any = None, alg: str = "RS256", **claims: Any) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        body = {"iss": ISSUER, "aud": "cid", "sub": "s", "iat": now, "exp": now + 60, "nonce": "n", **claims}
        return jwt.encode({"alg": alg, "kid": getattr(key, "kid", None) or "x"}, body, key)


@pytest.fixture
def jwks() -> Jwks:
    return Jwks()


async def verify(jwks: Jwks, token: str, **kw: Any) -> dict[str, Any]:
    kind = kw.pop("provider", "generic")
    provider = resolve(config(provider=kind, issuer_url=ISSUER, additional_id_token_audiences=["ios-app"]))
    client = OidcClient(httpx.AsyncClient(transport=httpx.MockTransport(jwks.handler)))
    endpoints = await client.endpoints(provider)
    kw.setdefault("nonce", "n")
    return await client.verify_id_token(provider, endpoints, token, **kw)


async def test_valid_token_and_audiences(jwks: Jwks) -> None:
    assert (await verify(jwks, jwks.sign()))["sub"] == "s"
    token = jwks.sign(aud=["ios-app", "x"], azp="ios-app")
    assert (await verify(jwks, token, audiences=("cid", "ios-app")))["sub"] == "s"
    hashed = jwks.sign(nonce=hashlib.sha256(b"raw").hexdigest())
    assert (await verify(jwks, hashed, nonce="raw", hashed_nonce=True))["sub"] == "s"


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"aud": "another"}, id="audience"),
        pytest.param({"aud": ["cid", "x"]}, id="azp-missing"),
        pytest.param({"iss": "https://evil.test"}, id="issuer"),
        pytest.param({"exp": int(time.time()) - 120}, id="expired"),
        pytest.param({"nonce": "other"}, id="nonce"),
        pytest.param({"iat": None}, id="no-iat"),
    ],
)
async def test_claim_checks(jwks: Jwks, claims: dict[str, Any]) -> None:
    token = jwks.sign(**{k: v for k, v in claims.items() if v is not None})
    if "iat" in claims:
        now = int(time.time())
        token = jwt.encode(
            {"alg": "RS256", "kid": "a"},
            {"iss": ISSUER, "aud": "cid", "sub": "s", "exp": now + 60, "nonce": "n"},
            jwks.keys[0],
        )
    with pytest.raises(TokenInvalid):
        await verify(jwks, token)


async def test_signature_checks(jwks: Jwks) -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "a"})
    with pytest.raises(TokenInvalid, match="signature"):
        await verify(jwks, jwks.sign(key=stranger))
    hmac = OctKey.import_key(b"cid-secret-0123456789abcdef012345")
    with pytest.raises(TokenInvalid, match="unsupported algorithm"):
        await verify(jwks, jwks.sign(key=hmac, alg="HS256"))
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps({"sub": "s"}).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenInvalid):
        await verify(jwks, f"{header}.{payload}.")
    with pytest.raises(TokenInvalid, match="malformed"):
        await verify(jwks, "garbage")


async def test_key_rotation_refetches_once(jwks: Jwks) -> None:
    provider = resolve(config(provider="generic", issuer_url=ISSUER))
    client = OidcClient(httpx.AsyncClient(transport=httpx.MockTransport(jwks.handler)))
    endpoints = await client.endpoints(provider)
    await client.verify_id_token(provider, endpoints, jwks.sign(), nonce="n")
    await client.verify_id_token(provider, endpoints, jwks.sign(), nonce="n")
    assert jwks.fetches == 1  # cached
    jwks.keys.insert(0, RSAKey.generate_key(2048, parameters={"kid": "b"}))
    time.sleep(1.05)
    await client.verify_id_token(provider, endpoints, jwks.sign(), nonce="n")
    assert jwks.fetches == 2


async def test_discovery_must_name_its_issuer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"issuer": "https://other.test", "authorization_endpoint": "x"})

    client = OidcClient(httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    with pytest.raises(errors.BadGateway, match="announced issuer"):
        await client.endpoints(resolve(config(provider="generic", issuer_url=ISSUER)))


async def test_authorization_url_carries_pkce_nonce_and_claims(jwks: Jwks) -> None:
    provider = resolve(
        config(
            provider="generic",
            issuer_url=ISSUER,
            requested_claims={"id_token": {"email": {"essential": True}}},
        )
    )
    client = OidcClient(httpx.AsyncClient(transport=httpx.MockTransport(jwks.handler)))
    url = client.authorization_url(
        provider,
        await client.endpoints(provider),
        redirect_uri="https://rp.test/cb",
        state="st",
        nonce="no",
        code_verifier="v" * 64,
        extra={"login_hint": "a@x.test"},
    )
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    challenge = base64.urlsafe_b64encode(hashlib.sha256(b"v" * 64).digest()).rstrip(b"=").decode()
    assert query["code_challenge"] == challenge and query["code_challenge_method"] == "S256"
    assert query["nonce"] == "no" and query["state"] == "st" and query["login_hint"] == "a@x.test"
    assert json.loads(query["claims"]) == {"id_token": {"email": {"essential": True}}}

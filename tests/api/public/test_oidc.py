"""Social sign-in over raw HTTP against a fake provider on a real port, redirects followed by hand.

Browser → ``POST /self-service/login`` (303 to the provider) → the provider (303 back with
``code`` + ``state``) → ``/self-service/methods/oidc/callback/<id>`` (303 with a session cookie).
Every negative case checks that nothing was written: no identity, no session.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sidecar.security.cipher import Cipher
from tests.api.public.conftest import PASSWORD, Harness, HarnessFactory
from tests.api.public.helpers import JSON, browser_flow, message_ids, node_value, register_browser
from tests.api.public.oidc_fake import FakeProvider, fake_provider
from tests.conftest import free_port
from tests.ops.test_metrics import value

CIPHER = "0123456789abcdef0123456789abcdef"
LOOPING_MAPPER = (  # 10^9 additions: only the deadline stops it
    "std.foldl(function(a, b) std.foldl(function(c, d) c + d, std.range(0, 10000), a),"
    " std.range(0, 100000), 0)"
)
MAPPER = """
local claims = std.extVar('claims');
{
  identity: {
    traits: {
      [if 'email' in claims then 'email' else null]: claims.email,
      [if 'given_name' in claims then 'name' else null]: { first: claims.given_name },
    },
    metadata_public: { upstream_sub: claims.sub },
    metadata_admin: { iss: claims.iss },
  },
}
"""


def b64(source: str) -> str:
    return "base64://" + base64.b64encode(source.encode()).decode()


def provider(fake: FakeProvider, id_: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": id_,
        "provider": "generic",
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "issuer_url": fake.base,
        "mapper_url": b64(MAPPER),
        **extra,
    }


def oidc_overrides(fake: FakeProvider) -> dict[str, Any]:
    closed = free_port()
    providers = [
        provider(fake, "fake", trust_email_verified=True, label="Fake ID"),
        provider(fake, "other"),
        provider(
            fake,
            "loop",
            mapper_url=b64(LOOPING_MAPPER),
        ),
        provider(fake, "broken", mapper_url=b64("error 'no thanks'")),
        {**provider(fake, "down"), "issuer_url": f"http://127.0.0.1:{closed}"},
        {
            "id": "gh",
            "provider": "github",
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
            "auth_url": f"{fake.base}/login/oauth/authorize",
            "token_url": f"{fake.base}/login/oauth/access_token",
            "api_url": f"{fake.base}/api",
            "mapper_url": b64(MAPPER),
            "trust_email_verified": True,
        },
    ]
    return {
        "secrets": {"cipher": [CIPHER]},
        "selfservice": {
            "allowed_return_urls": ["http://127.0.0.1:4433/app"],
            "methods": {
                "oidc": {"enabled": True, "config": {"providers": providers, "mapper_timeout": "5s"}}
            },
        },
    }


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with fake_provider() as provider_:
        yield provider_


@pytest.fixture
async def h(harness_factory: HarnessFactory, fake: FakeProvider) -> Harness:
    return await harness_factory(**oidc_overrides(fake))


@pytest.fixture
async def net() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def start(client: httpx.AsyncClient, kind: str, provider_id: str, **extra: str) -> httpx.Response:
    flow = await browser_flow(client, kind)
    body = {"csrf_token": node_value(flow, "csrf_token"), "provider": provider_id, **extra}
    return await client.post(f"/.auth/self-service/{kind}?flow={flow['id']}", data=body)


async def sign_in(
    h: Harness, net: httpx.AsyncClient, provider_id: str = "fake", *, client: httpx.AsyncClient | None = None
) -> httpx.Response:
    """The whole dance; returns the callback's response."""
    client = client or h.client
    leave = await start(client, "login", provider_id)
    assert leave.status_code == 303, leave.text
    at_provider = await net.get(leave.headers["location"])
    assert at_provider.status_code == 303, at_provider.text
    return await client.get(at_provider.headers["location"])


async def error_of(client: httpx.AsyncClient, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert "/ui/error?id=" in location, location
    error_id = parse_qs(urlsplit(location).query)["id"][0]
    r = await client.get("/.auth/self-service/errors", params={"id": error_id})
    assert r.status_code == 200
    error: dict[str, Any] = r.json()["error"]
    return error


async def identities(h: Harness) -> list[dict[str, Any]]:
    r = await h.admin.get("/admin/identities", params={"include_credential": "oidc"})
    assert r.status_code == 200
    found: list[dict[str, Any]] = r.json()
    return found


async def whoami(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/.auth/sessions/whoami", headers=JSON)


# --- the happy paths ---------------------------------------------------------------------------------


async def test_first_sign_in_registers_and_the_second_signs_in(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    fake.next_user = {
        "sub": "alice",
        "email": "Alice@Example.com",
        "email_verified": True,
        "given_name": "Al",
    }
    done = await sign_in(h, net)
    assert done.status_code == 303 and done.headers["location"] == "http://127.0.0.1:4433/"
    me = (await whoami(h.client)).json()
    identity = me["identity"]
    assert identity["traits"] == {"email": "Alice@Example.com", "name": {"first": "Al"}}
    assert identity["metadata_public"] == {"upstream_sub": "alice"}
    assert "metadata_admin" not in identity or identity["metadata_admin"] is None
    assert "credentials" not in identity
    assert identity["verifiable_addresses"][0]["verified"] is True  # trusted provider
    assert [m["method"] for m in me["authentication_methods"]] == ["oidc"]

    [stored] = await identities(h)
    oidc = stored["credentials"]["oidc"]
    assert oidc["identifiers"] == ["fake:alice"]
    entry = oidc["config"]["providers"][0]
    assert entry["provider"] == "fake" and entry["subject"] == "alice"
    # Upstream tokens are kept encrypted (AES-GCM with secrets.cipher), never in clear.
    access = entry["initial_access_token"]
    assert access not in fake.access
    assert Cipher([CIPHER]).decrypt(access) in fake.access
    assert stored["metadata_admin"] == {"iss": fake.base}

    browser = h.new_client()
    again = await sign_in(h, net, client=browser)
    assert again.status_code == 303
    assert (await whoami(browser)).json()["identity"]["id"] == identity["id"]
    assert len(await identities(h)) == 1


async def test_spa_gets_browser_location_change_required(h: Harness, fake: FakeProvider) -> None:
    flow = await browser_flow(h.client, "login")
    body = {"csrf_token": node_value(flow, "csrf_token"), "method": "oidc", "provider": "fake"}
    r = await h.client.post(f"/.auth/self-service/login?flow={flow['id']}", json=body, headers=JSON)
    assert r.status_code == 422
    assert r.json()["error"]["id"] == "browser_location_change_required"
    url = urlsplit(r.json()["redirect_browser_to"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{fake.base}/auth"
    assert query["redirect_uri"] == "http://127.0.0.1:4433/.auth/self-service/methods/oidc/callback/fake"
    assert query["code_challenge_method"] == "S256" and query["response_type"] == "code"
    assert len(query["state"]) >= 40 and len(query["nonce"]) >= 40
    assert query["scope"] == "openid email profile"


async def test_nodes_offer_one_button_per_provider(h: Harness) -> None:
    login = await browser_flow(h.client, "login")
    buttons = [n for n in login["ui"]["nodes"] if n["group"] == "oidc"]
    assert [n["attributes"]["value"] for n in buttons] == ["fake", "other", "loop", "broken", "down", "gh"]
    first = buttons[0]
    assert first["attributes"]["name"] == "provider" and first["attributes"]["type"] == "submit"
    assert (
        first["meta"]["label"]["id"] == 1010002 and first["meta"]["label"]["text"] == "Sign in with Fake ID"
    )
    registration = await browser_flow(h.client, "registration")
    labels = [n["meta"]["label"]["id"] for n in registration["ui"]["nodes"] if n["group"] == "oidc"]
    assert set(labels) == {1040002}


async def test_registration_flow_of_a_known_subject_signs_in(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    fake.next_user = {"sub": "reg", "email": "reg@example.com"}
    assert (await sign_in(h, net)).status_code == 303
    browser = h.new_client()
    leave = await start(browser, "registration", "fake")
    back = await net.get(leave.headers["location"])
    done = await browser.get(back.headers["location"])
    assert done.status_code == 303
    assert (await whoami(browser)).status_code == 200
    assert len(await identities(h)) == 1


async def test_missing_traits_show_the_registration_form_prefilled(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    fake.next_user = {"sub": "noemail", "given_name": "Nemo"}
    done = await sign_in(h, net)
    assert done.status_code == 303 and "/ui/registration?flow=" in done.headers["location"]
    flow_id = parse_qs(urlsplit(done.headers["location"]).query)["flow"][0]
    flow = (await h.client.get("/.auth/self-service/registration/flows", params={"id": flow_id})).json()
    names = {n["attributes"]["name"]: n for n in flow["ui"]["nodes"]}
    assert names["traits.email"]["group"] == "oidc" and 4000002 in message_ids(flow)
    assert names["traits.name.first"]["attributes"]["value"] == "Nemo"
    assert names["provider"]["attributes"]["value"] == "fake"
    assert await identities(h) == []

    body = {
        "csrf_token": node_value(flow, "csrf_token"),
        "traits.email": "nemo@example.com",
        "traits.name.first": "Nemo",
        "provider": "fake",
    }
    r = await h.client.post(f"/.auth/self-service/registration?flow={flow_id}", data=body)
    assert r.status_code == 303, r.text
    me = (await whoami(h.client)).json()
    assert me["identity"]["traits"]["email"] == "nemo@example.com"
    [stored] = await identities(h)
    assert stored["credentials"]["oidc"]["identifiers"] == ["fake:noemail"]


async def test_github_oauth2_with_the_user_api(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    fake.next_user = {"sub": "4242", "email": "octo@example.com", "name": "Octo Cat", "login": "octo"}
    done = await sign_in(h, net, "gh")
    assert done.status_code == 303, done.text
    identity = (await whoami(h.client)).json()["identity"]
    assert identity["traits"]["email"] == "octo@example.com"
    assert identity["verifiable_addresses"][0]["verified"] is True
    [stored] = await identities(h)
    assert stored["credentials"]["oidc"]["identifiers"] == ["gh:4242"]
    assert "discovery" not in fake.requests  # plain OAuth2: no OIDC discovery


async def test_same_subject_at_two_providers_is_two_identities(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    fake.next_user = {"sub": "shared", "email": "one@example.com"}
    assert (await sign_in(h, net, "fake")).status_code == 303
    fake.next_user = {"sub": "shared", "email": "two@example.com"}
    assert (await sign_in(h, net, "other", client=h.new_client())).status_code == 303
    found = await identities(h)
    assert sorted(i["credentials"]["oidc"]["identifiers"][0] for i in found) == [
        "fake:shared",
        "other:shared",
    ]


async def test_untrusted_provider_does_not_verify_the_address(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    fake.next_user = {"sub": "u1", "email": "u1@example.com", "email_verified": True}
    assert (await sign_in(h, net, "other")).status_code == 303
    identity = (await whoami(h.client)).json()["identity"]
    assert identity["verifiable_addresses"][0]["verified"] is False


async def test_signing_key_rotation_is_picked_up(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    fake.next_user = {"sub": "rot", "email": "rot@example.com"}
    assert (await sign_in(h, net)).status_code == 303
    fake.rotate()
    await asyncio.sleep(1.1)  # unknown kids refetch the JWKS at most once a second
    browser = h.new_client()
    done = await sign_in(h, net, client=browser)
    assert done.status_code == 303 and "/ui/error" not in done.headers["location"]
    assert (await whoami(browser)).status_code == 200
    assert fake.requests.count("jwks") == 2


async def test_form_post_callback_continues_as_get(h: Harness) -> None:
    r = await h.client.post(
        "/.auth/self-service/methods/oidc/callback/fake", data={"code": "c", "state": "s", "junk": "x"}
    )
    assert r.status_code == 303
    assert r.headers["location"].endswith("/self-service/methods/oidc/callback/fake?code=c&state=s")


# --- what must fail, and write nothing ----------------------------------------------------------------


@pytest.mark.parametrize("state", ["", "not-a-state"], ids=["missing", "unknown"])
async def test_bad_state_is_refused(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient, state: str
) -> None:
    leave = await start(h.client, "login", "fake")
    back = urlsplit((await net.get(leave.headers["location"])).headers["location"])
    code = parse_qs(back.query)["code"][0]
    r = await h.client.get(back.path, params={"code": code, "state": state} if state else {"code": code})
    assert (await error_of(h.client, r))["code"] == 400
    assert await identities(h) == [] and (await whoami(h.client)).status_code == 401


async def test_state_of_another_provider_is_refused(h: Harness, net: httpx.AsyncClient) -> None:
    leave = await start(h.client, "login", "fake")
    back = urlsplit((await net.get(leave.headers["location"])).headers["location"])
    r = await h.client.get(back.path.replace("/fake", "/other") + "?" + back.query)
    assert (await error_of(h.client, r))["code"] == 400
    assert await identities(h) == []


async def test_callback_in_another_browser_is_refused(h: Harness, net: httpx.AsyncClient) -> None:
    leave = await start(h.client, "login", "fake")
    back = (await net.get(leave.headers["location"])).headers["location"]
    other = h.new_client()
    r = await other.get(back)
    assert (await error_of(other, r))["code"] == 403
    assert await identities(h) == []


async def test_replayed_callback_and_replayed_code(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    leave = await start(h.client, "login", "fake")
    back = (await net.get(leave.headers["location"])).headers["location"]
    assert (await h.client.get(back)).status_code == 303
    replay = await h.client.get(back)  # the state is single use
    assert (await error_of(h.client, replay))["code"] == 400

    browser = h.new_client()
    leave2 = await start(browser, "login", "fake")
    fresh = urlsplit((await net.get(leave2.headers["location"])).headers["location"])
    old_code = parse_qs(urlsplit(back).query)["code"][0]
    state = parse_qs(fresh.query)["state"][0]
    r = await browser.get(fresh.path, params={"code": old_code, "state": state})
    assert (await error_of(browser, r))["code"] == 502  # the provider refuses a used code
    assert (await whoami(browser)).status_code == 401
    assert len(await identities(h)) == 1


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"nonce": "someone-elses-nonce"}, id="nonce-mismatch"),
        pytest.param({"aud": "another-client"}, id="wrong-audience"),
        pytest.param({"aud": ["sidecar-client", "x"], "azp": "x"}, id="wrong-azp"),
        pytest.param({"iss": "https://evil.example"}, id="wrong-issuer"),
        pytest.param({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, id="expired"),
        pytest.param({"sub": ""}, id="no-subject"),
    ],
)
async def test_bad_id_tokens_are_refused(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient, overrides: dict[str, Any]
) -> None:
    fake.id_token_overrides = overrides
    error = await error_of(h.client, await sign_in(h, net))
    assert error["code"] == 400
    assert await identities(h) == [] and (await whoami(h.client)).status_code == 401


async def test_id_token_signed_with_an_unknown_key_is_refused(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    fake.sign_with_unpublished_key = True
    assert (await error_of(h.client, await sign_in(h, net)))["code"] == 400
    assert await identities(h) == []


async def test_provider_down_gives_a_clear_error(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    leave = await start(h.client, "login", "down")
    error = await error_of(h.client, leave)
    assert error["code"] == 502 and "could not be reached" in error["message"]

    fake.token_status = 503
    error = await error_of(h.client, await sign_in(h, net))
    assert error["code"] == 502
    assert await identities(h) == []


async def test_the_mapper_runs_on_the_servers_jsonnet_pool(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    pool = h.services.jsonnet
    before = dict(pool.outcomes)
    fake.next_user = {"sub": "p", "email": "p@example.com"}
    assert (await sign_in(h, net)).status_code == 303
    assert pool.outcomes == {**before, "ok": before["ok"] + 1}
    text = (await h.services.metrics.render())[0].decode()
    assert value(text, "sidecar_jsonnet_evaluations_total", outcome="ok") == pool.outcomes["ok"]


@pytest.mark.parametrize(
    ("provider_id", "outcome", "hint"),
    [
        pytest.param("loop", "timeout", "the claims mapper did not finish within 5s", id="loop"),
        pytest.param(
            "broken",
            "error",
            "the claims mapper failed: RUNTIME ERROR: no thanks\n\tmapper.jsonnet:1:1-18\t$\n\t"
            "During evaluation\t\n",
            id="error",
        ),
    ],
)
async def test_failing_mapper_gives_a_clean_error_and_the_pool_recovers(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient, provider_id: str, outcome: str, hint: str
) -> None:
    pool = h.services.jsonnet
    before, replaced = dict(pool.outcomes), pool.replacements
    fake.next_user = {"sub": "m", "email": "m@example.com"}
    error = await error_of(h.client, await sign_in(h, net, provider_id))
    assert (error["code"], error["status"]) == (400, "Bad Request")
    assert error["reason"] == "The sign-in provider's data could not be mapped to an account."
    assert error["details"]["hint"] == hint  # go-jsonnet's text, as Kratos reports it
    assert pool.outcomes[outcome] == before[outcome] + 1
    # Only the looping mapper cost its worker (killed at the CPU deadline, replaced on next use).
    assert pool.replacements == replaced + (provider_id == "loop")
    assert await identities(h) == []
    fake.next_user = {"sub": "n", "email": "n@example.com"}
    assert (await sign_in(h, net, client=h.new_client())).status_code == 303
    assert pool.outcomes["ok"] == before["ok"] + 1


async def test_provider_error_is_shown(h: Harness, net: httpx.AsyncClient) -> None:
    leave = await start(h.client, "login", "fake")
    back = urlsplit((await net.get(leave.headers["location"])).headers["location"])
    state = parse_qs(back.query)["state"][0]
    r = await h.client.get(back.path, params={"state": state, "error": "access_denied"})
    error = await error_of(h.client, r)
    assert error["code"] == 400 and "access_denied" in error["message"]


# --- existing accounts: never taken over, linked only after signing in --------------------------------


async def login_flow_after(h: Harness, done: httpx.Response) -> dict[str, Any]:
    """The login flow a callback redirected to (``/ui/login?flow=<id>``)."""
    flow_id = parse_qs(urlsplit(done.headers["location"]).query)["flow"][0]
    flow: dict[str, Any] = (
        await h.client.get("/.auth/self-service/login/flows", params={"id": flow_id})
    ).json()
    return flow


async def sign_in_with_password(
    h: Harness, flow: dict[str, Any], identifier: str, password: str
) -> httpx.Response:
    body = {
        "csrf_token": node_value(flow, "csrf_token"),
        "method": "password",
        "identifier": identifier,
        "password": password,
    }
    return await h.client.post(f"/.auth/self-service/login?flow={flow['id']}", data=body, headers=JSON)


async def test_existing_email_is_not_taken_over(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    assert (await register_browser(h.new_client(), "victim@example.com")).status_code == 200
    fake.next_user = {"sub": "mallory", "email": "victim@example.com", "email_verified": True}
    done = await sign_in(h, net)
    assert done.status_code == 303 and "/ui/login?flow=" in done.headers["location"]
    assert (await whoami(h.client)).status_code == 401
    flow = await login_flow_after(h, done)
    assert 1010016 in message_ids(flow)

    # The attacker cannot sign in to the victim's account, so nothing gets linked.
    r = await sign_in_with_password(h, flow, "victim@example.com", "not-the-password-1234")
    assert r.status_code == 400 and 4000006 in message_ids(r.json())
    [victim] = await identities(h)
    assert "oidc" not in victim.get("credentials", {})
    assert (await whoami(h.client)).status_code == 401


async def test_owner_links_the_provider_by_signing_in(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    assert (await register_browser(h.new_client(), "owner@example.com")).status_code == 200
    fake.next_user = {"sub": "owner-at-fake", "email": "owner@example.com"}
    done = await sign_in(h, net)
    r = await sign_in_with_password(h, await login_flow_after(h, done), "owner@example.com", PASSWORD)
    assert r.status_code == 200, r.text
    [owner] = await identities(h)
    assert owner["credentials"]["oidc"]["identifiers"] == ["fake:owner-at-fake"]

    browser = h.new_client()
    assert (await sign_in(h, net, client=browser)).status_code == 303
    assert (await whoami(browser)).json()["identity"]["id"] == owner["id"]


async def test_link_flow_refuses_another_account(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    assert (await register_browser(h.new_client(), "target@example.com")).status_code == 200
    assert (await register_browser(h.new_client(), "intruder@example.com")).status_code == 200
    fake.next_user = {"sub": "t", "email": "target@example.com"}
    done = await sign_in(h, net)
    r = await sign_in_with_password(h, await login_flow_after(h, done), "intruder@example.com", PASSWORD)
    assert r.status_code == 400 and 4010009 in message_ids(r.json())
    assert all("oidc" not in i.get("credentials", {}) for i in await identities(h))


# --- settings: link and unlink ---------------------------------------------------------------------------


async def settings_flow(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/.auth/self-service/settings/browser", headers=JSON)
    assert r.status_code == 200, r.text
    flow: dict[str, Any] = r.json()
    return flow


async def test_settings_link_and_unlink(h: Harness, fake: FakeProvider, net: httpx.AsyncClient) -> None:
    assert (await register_browser(h.client, "settings@example.com")).status_code == 200
    flow = await settings_flow(h.client)
    links = [n["attributes"]["value"] for n in flow["ui"]["nodes"] if n["attributes"]["name"] == "link"]
    assert "other" in links
    body = {"csrf_token": node_value(flow, "csrf_token"), "link": "other"}
    leave = await h.client.post(f"/.auth/self-service/settings?flow={flow['id']}", data=body)
    assert leave.status_code == 303 and leave.headers["location"].startswith(fake.base)
    fake.next_user = {"sub": "linked-sub", "email": "elsewhere@example.com"}
    back = await net.get(leave.headers["location"])
    done = await h.client.get(back.headers["location"])
    assert done.status_code == 303 and "/ui/settings?flow=" in done.headers["location"], done.text
    flow = (await h.client.get("/.auth/self-service/settings/flows", params={"id": flow["id"]})).json()
    assert flow["state"] == "success"
    unlinks = [n for n in flow["ui"]["nodes"] if n["attributes"]["name"] == "unlink"]
    assert [n["attributes"]["value"] for n in unlinks] == ["other"]
    assert unlinks[0]["meta"]["label"]["id"] == 1050003
    [me] = await identities(h)
    assert me["credentials"]["oidc"]["identifiers"] == ["other:linked-sub"]

    body = {"csrf_token": node_value(flow, "csrf_token"), "method": "oidc", "unlink": "other"}
    r = await h.client.post(f"/.auth/self-service/settings?flow={flow['id']}", json=body, headers=JSON)
    assert r.status_code == 200, r.text
    [me] = await identities(h)
    assert "oidc" not in me.get("credentials", {})


async def test_unlinking_the_last_credential_is_refused(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    fake.next_user = {"sub": "only", "email": "only@example.com"}
    assert (await sign_in(h, net)).status_code == 303
    flow = await settings_flow(h.client)
    assert not [n for n in flow["ui"]["nodes"] if n["attributes"]["name"] == "unlink"]
    body = {"csrf_token": node_value(flow, "csrf_token"), "method": "oidc", "unlink": "fake"}
    r = await h.client.post(f"/.auth/self-service/settings?flow={flow['id']}", json=body, headers=JSON)
    assert r.status_code == 400 and 4000001 in message_ids(r.json())
    [me] = await identities(h)
    assert me["credentials"]["oidc"]["identifiers"] == ["fake:only"]


# --- native apps: id_token ------------------------------------------------------------------------------


async def test_native_id_token_sign_in(h: Harness, fake: FakeProvider) -> None:
    flow = (await h.client.get("/.auth/self-service/login/api")).json()
    token = fake.id_token({"sub": "native", "nonce": "n-123", "email": "native@example.com"})
    body = {"method": "oidc", "provider": "fake", "id_token": token, "id_token_nonce": "n-123"}
    r = await h.client.post(f"/.auth/self-service/login?flow={flow['id']}", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["session"]["identity"]["traits"]["email"] == "native@example.com"
    [stored] = await identities(h)
    assert stored["credentials"]["oidc"]["identifiers"] == ["fake:native"]


@pytest.mark.parametrize(
    ("claims", "nonce"),
    [
        pytest.param({"nonce": "n-1"}, "n-2", id="nonce-mismatch"),
        pytest.param({"nonce": "n-1", "aud": "other-app"}, "n-1", id="wrong-audience"),
        pytest.param({"nonce": "n-1", "exp": int(time.time()) - 600}, "n-1", id="expired"),
        pytest.param({"nonce": "n-1"}, "", id="nonce-missing"),
    ],
)
async def test_native_id_token_checks(
    h: Harness, fake: FakeProvider, claims: dict[str, Any], nonce: str
) -> None:
    flow = (await h.client.get("/.auth/self-service/login/api")).json()
    token = fake.id_token({"sub": "native", "email": "native@example.com", **claims})
    body = {"method": "oidc", "provider": "fake", "id_token": token, "id_token_nonce": nonce}
    r = await h.client.post(f"/.auth/self-service/login?flow={flow['id']}", json=body)
    assert r.status_code == 400 and 4000001 in message_ids(r.json())
    assert await identities(h) == []


async def test_return_to_survives_the_round_trip(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    fake.next_user = {"sub": "rt", "email": "rt@example.com"}
    flow = await browser_flow(h.client, "login", "?return_to=http://127.0.0.1:4433/app/inbox")
    body = {"csrf_token": node_value(flow, "csrf_token"), "provider": "fake"}
    leave = await h.client.post(f"/.auth/self-service/login?flow={flow['id']}", data=body)
    back = await net.get(leave.headers["location"])
    done = await h.client.get(back.headers["location"])
    # A login of an unknown subject became a registration, which keeps return_to.
    assert done.status_code == 303 and done.headers["location"] == "http://127.0.0.1:4433/app/inbox"


async def test_settings_cannot_link_an_account_owned_by_someone_else(
    h: Harness, fake: FakeProvider, net: httpx.AsyncClient
) -> None:
    fake.next_user = {"sub": "taken", "email": "first@example.com"}
    assert (await sign_in(h, net, "other", client=h.new_client())).status_code == 303
    assert (await register_browser(h.client, "second@example.com")).status_code == 200
    flow = await settings_flow(h.client)
    body = {"csrf_token": node_value(flow, "csrf_token"), "link": "other"}
    leave = await h.client.post(f"/.auth/self-service/settings?flow={flow['id']}", data=body)
    back = await net.get(leave.headers["location"])
    done = await h.client.get(back.headers["location"])
    assert done.status_code == 303 and "/ui/settings?flow=" in done.headers["location"]
    flow = (await h.client.get("/.auth/self-service/settings/flows", params={"id": flow["id"]})).json()
    assert 4000007 in message_ids(flow) and flow["state"] != "success"
    second = next(i for i in await identities(h) if i["traits"]["email"] == "second@example.com")
    assert "oidc" not in second.get("credentials", {})


async def test_native_id_token_registration(h: Harness, fake: FakeProvider) -> None:
    flow = (await h.client.get("/.auth/self-service/registration/api")).json()
    token = fake.id_token({"sub": "native-reg", "nonce": "n-9", "email": "nreg@example.com"})
    body = {"method": "oidc", "provider": "fake", "id_token": token, "id_token_nonce": "n-9"}
    r = await h.client.post(f"/.auth/self-service/registration?flow={flow['id']}", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["identity"]["traits"]["email"] == "nreg@example.com" and r.json()["session_token"]
    again = (await h.client.get("/.auth/self-service/registration/api")).json()
    r = await h.client.post(f"/.auth/self-service/registration?flow={again['id']}", json=body)
    assert r.status_code == 400 and 4000007 in message_ids(r.json())  # that account exists: sign in
    assert len(await identities(h)) == 1

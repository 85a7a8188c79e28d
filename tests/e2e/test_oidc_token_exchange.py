"""Native social sign-in: the session-token exchange, through ``sidecar serve`` and a real OpenID
Connect provider (panva's ``oidc-provider``), with the official ``ory-kratos-client`` SDK as the app.

Kratos v25.4.0: ``selfservice/flow/login/handler.go`` and ``registration/handler.go`` create the
exchanger when an API flow is created with ``return_session_token_exchange_code=true`` and return its
``init_code`` as ``session_token_exchange_code``; ``selfservice/strategy/oidc/strategy.go`` lets that
API flow leave for the provider (422 ``browser_location_change_required``) and checks the callback
against the code; ``session/manager_http.go`` ``MaybeRedirectAPICodeFlow`` sends the browser to the
flow's ``return_to`` with ``?code=<return_to_code>``; ``session/handler.go`` ``exchangeCode``
(``GET /sessions/token-exchange``) answers the session and its token, 400 without both codes and
404 ``no session yet for this "code"``. ``oidc/strategy_login.go`` moves the codes to the
registration flow a login becomes (``MoveToNewFlow``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import ory_kratos_client
import pytest
from ory_kratos_client.api.frontend_api import FrontendApi
from ory_kratos_client.exceptions import ApiException

from tests.e2e.oidc_op import MAPPER, oidc_provider, provider_config, through_provider
from tests.ops.serve import Proc, base_config, ports, running, serve_argv, write_config

pytestmark = pytest.mark.e2e

APP_RETURN = "myapp://signed-in"


@dataclass
class Site:
    proc: Proc
    base: str
    issuer: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("token-exchange")
    public, admin = ports()
    base = f"http://127.0.0.1:{public}/.auth"
    (tmp / "mapper.jsonnet").write_text(MAPPER)
    with oidc_provider([f"{base}/self-service/methods/oidc/callback/op"]) as provider:
        config = base_config(tmp, public, admin)
        config["dev"] = True
        config["selfservice"]["allowed_return_urls"] = [APP_RETURN]
        config["selfservice"]["methods"] = {
            "oidc": {
                "enabled": True,
                "config": {
                    "providers": [provider_config(provider.issuer, mapper_url="file://./mapper.jsonnet")]
                },
            }
        }
        path = write_config(tmp / "sidecar.yaml", config)
        with running(serve_argv(path), cwd=tmp, public_port=public, admin_port=admin) as proc:
            yield Site(proc, base, provider.issuer)


@pytest.fixture
def sdk(site: Site) -> Iterator[FrontendApi]:
    with ory_kratos_client.ApiClient(ory_kratos_client.Configuration(host=site.base)) as client:
        yield FrontendApi(client)


def _browser_round_trip(browser: httpx.Client, site: Site, url: str, login: str) -> str:
    """A browser from ``redirect_browser_to`` through the provider's login to the sidecar's callback
    and on: the URL the sidecar finally sends it to (the app's ``return_to``)."""
    assert url.startswith(f"{site.issuer}/auth?")
    # The app's own scheme: the browser hands it to the app.
    return through_provider(browser, url, login, back=lambda u: not u.startswith(("http://", "https://")))


def _leave(site: Site, flow: Any, kind: str = "login") -> str:
    """The app submits ``method=oidc`` to its API flow: Kratos' 422 with the provider's URL."""
    r = httpx.post(
        f"{site.base}/self-service/{kind}?flow={flow.id}",
        json={"method": "oidc", "provider": "op"},
        timeout=10,
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["id"] == "browser_location_change_required"
    return str(r.json()["redirect_browser_to"])


def _code(url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == APP_RETURN, url
    return parse_qs(parts.query)["code"][0]


def test_sign_up_in_the_browser_then_exchange_once(site: Site, sdk: FrontendApi) -> None:
    flow = sdk.create_native_login_flow(return_session_token_exchange_code=True, return_to=APP_RETURN)
    init_code = flow.session_token_exchange_code
    assert init_code is not None and re.fullmatch(r"[A-Za-z0-9]{64}", init_code)
    # The code is shown on creation only (Kratos: "only on creating the login flow").
    assert sdk.get_login_flow(flow.id).session_token_exchange_code is None

    # Before the browser comes back there is nothing to exchange.
    with pytest.raises(ApiException) as early:
        sdk.exchange_session_token(init_code, "x" * 64)
    assert early.value.status == 404

    with httpx.Client(timeout=15) as browser:
        # alice is new: the login becomes a registration, which keeps the app's codes.
        back = _browser_round_trip(browser, site, _leave(site, flow), "alice")
        assert "ory_kratos_session" not in browser.cookies  # an API flow: no cookie for the browser
    return_to_code = _code(back)

    done = sdk.exchange_session_token(init_code, return_to_code)
    assert done.session_token and done.session.identity is not None
    traits = done.session.identity.traits
    assert isinstance(traits, dict) and traits["email"] == "alice@example.com"
    me = httpx.get(f"{site.base}/sessions/whoami", headers={"X-Session-Token": done.session_token})
    assert me.status_code == 200 and me.json()["id"] == done.session.id

    # Once: the same codes again, or the right init code with a wrong return_to code, find nothing.
    for codes in ((init_code, return_to_code), (init_code, return_to_code[:-1] + "x")):
        r = httpx.get(
            f"{site.base}/sessions/token-exchange",
            params={"init_code": codes[0], "return_to_code": codes[1]},
        )
        assert r.status_code == 404
        assert r.json()["error"]["reason"] == 'no session yet for this "code"'


def test_concurrent_exchanges_get_the_session_once(site: Site, sdk: FrontendApi) -> None:
    flow = sdk.create_native_registration_flow(return_session_token_exchange_code=True, return_to=APP_RETURN)
    with httpx.Client(timeout=15) as browser:
        back = _browser_round_trip(browser, site, _leave(site, flow, "registration"), "dave")
    params = {"init_code": flow.session_token_exchange_code, "return_to_code": _code(back)}

    def exchange(_: int) -> int:
        return httpx.get(f"{site.base}/sessions/token-exchange", params=params, timeout=15).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(exchange, range(8)))
    assert statuses == [200] + [404] * 7


def test_missing_codes_and_flows_without_an_exchange(site: Site, sdk: FrontendApi) -> None:
    r = httpx.get(f"{site.base}/sessions/token-exchange", params={"init_code": "abc"})
    assert r.status_code == 400
    assert r.json()["error"]["reason"] == '"init_code" and "return_to_code" query params must be set'
    # An API flow created without the parameter has no code and cannot leave for the provider.
    plain = sdk.create_native_login_flow()
    assert plain.session_token_exchange_code is None
    r = httpx.post(
        f"{site.base}/self-service/login?flow={plain.id}", json={"method": "oidc", "provider": "op"}
    )
    assert r.status_code == 400 and "id_token" in r.text
    # A return_to outside the allow-list is refused, an app scheme that is listed is not.
    r = httpx.get(
        f"{site.base}/self-service/login/api",
        params={"return_session_token_exchange_code": "true", "return_to": "otherapp://x"},
    )
    assert r.status_code == 400 and r.json()["error"]["id"] == "self_service_flow_return_to_forbidden"


def test_a_sign_up_that_needs_the_app_returns_without_a_code(site: Site, sdk: FrontendApi) -> None:
    """bob has no email at the provider: the registration needs a form, so the browser goes back
    to the app without a code (Kratos ``registration/error.go``) and nothing can be exchanged."""
    flow = sdk.create_native_login_flow(return_session_token_exchange_code=True, return_to=APP_RETURN)
    with httpx.Client(timeout=15) as browser:
        back = _browser_round_trip(browser, site, _leave(site, flow), "bob")
    assert back == APP_RETURN
    with pytest.raises(ApiException) as none:
        sdk.exchange_session_token(str(flow.session_token_exchange_code), "y" * 64)
    assert none.value.status == 404

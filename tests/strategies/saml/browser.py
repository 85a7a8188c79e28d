"""A browser's side of SAML sign-ins against ``sidecar serve`` and the test identity provider
(``idp.py``), over HTTP with every redirect followed by hand; shared by the SAML test modules."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT

from tests.strategies.saml.idp import IdentityProvider, Request, form_fields


@dataclass
class Site:
    base: str
    admin: str
    idp: IdentityProvider
    tmp: Path

    def acs(self, connection: str) -> str:
        return f"{self.base}/self-service/methods/saml/acs/{connection}"

    def entity(self, connection: str) -> str:
        return f"{self.base}/self-service/methods/saml/metadata/{connection}"


def csrf_of(flow: dict[str, Any]) -> str:
    return str(
        next(n["attributes"]["value"] for n in flow["ui"]["nodes"] if n["attributes"]["name"] == "csrf_token")
    )


def submit_login(client: httpx.Client, site: Site, form: dict[str, str], query: str = "") -> httpx.Response:
    flow = client.get(
        f"{site.base}/self-service/login/browser{query}", headers={"Accept": "application/json"}
    ).json()
    return client.post(
        f"{site.base}/self-service/login?flow={flow['id']}", data={"csrf_token": csrf_of(flow), **form}
    )


def authn_request_of(client: httpx.Client, site: Site, leave: httpx.Response) -> Request:
    """The AuthnRequest a 303 out of a login flow carries, as the IdP reads it."""
    assert leave.status_code == 303, leave.text
    url = leave.headers["location"]
    if url.startswith(site.idp.url):  # HTTP-Redirect
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        return site.idp.read_request(query["SAMLRequest"], BINDING_HTTP_REDIRECT, query.get("RelayState"))
    page = client.get(url)  # HTTP-POST: our page posts the request to the IdP
    assert page.status_code == 200, page.text
    assert "form-action " + site.idp.url in page.headers["content-security-policy"]
    action, fields = form_fields(page.text)
    assert action == f"{site.idp.url}/sso/post"
    return site.idp.read_request(fields["SAMLRequest"], BINDING_HTTP_POST, fields.get("RelayState"))


def post_response(
    client: httpx.Client, site: Site, connection: str, xml: str, relay: str | None
) -> httpx.Response:
    """The browser posts the IdP's answer to the ACS and follows our redirects home."""
    fields = {
        "SAMLResponse": base64.b64encode(xml.encode()).decode(),
        **({"RelayState": relay} if relay else {}),
    }
    r = client.post(site.acs(connection), data=fields)
    assert r.status_code == 303, r.text
    if not r.headers["location"].startswith(site.acs(connection) + "?continue="):
        return r  # refused by the cheap checks, before it was parked: to the error page
    return client.get(r.headers["location"])


def through_idp(client: httpx.Client, site: Site, leave: httpx.Response, email: str) -> httpx.Response:
    """Through the IdP's login form (either binding) and back to the ACS; the ACS's answer."""
    url = leave.headers["location"]
    if not url.startswith(site.idp.url):
        action, fields = form_fields(client.get(url).text)
        page = client.post(action, data=fields)
    else:
        page = client.get(url)
    assert page.status_code == 200 and 'name="username"' in page.text, page.text
    action, fields = form_fields(page.text)
    back = client.post(urljoin(site.idp.url, action), data={**fields, "username": email})
    acs, answer = form_fields(back.text)
    r = client.post(acs, data=answer)
    assert r.status_code == 303, r.text
    return client.get(r.headers["location"])


def whoami(client: httpx.Client, site: Site) -> dict[str, Any] | None:
    r = client.get(f"{site.base}/sessions/whoami", headers={"Accept": "application/json"})
    return r.json() if r.status_code == 200 else None


def error_of(client: httpx.Client, site: Site, r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 303, r.text
    error_id = parse_qs(urlsplit(r.headers["location"]).query)["id"][0]
    return dict(client.get(f"{site.base}/self-service/errors", params={"id": error_id}).json()["error"])

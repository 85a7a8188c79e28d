"""SAML 2.0 single sign-on through ``sidecar serve``, against a real pysaml2 identity provider
(``idp.py``), over HTTP with every redirect followed by hand: SP-initiated login in both bindings,
just-in-time membership, a second login, domain routing, linking to an existing account, single
logout from the IdP, and the responses an attacker would send, each refused."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from tests.ops.serve import base_config, ports, running, serve_argv, write_config
from tests.ops.test_metrics import value
from tests.strategies.saml.browser import (
    Site,
    authn_request_of,
    csrf_of,
    error_of,
    post_response,
    submit_login,
    through_idp,
    whoami,
)
from tests.strategies.saml.idp import identity_provider, key_pair

pytestmark = pytest.mark.e2e

ORG = "7a1c2a6e-0000-4000-8000-00000000a5a1"
EXAMPLES = (
    Path(__file__).resolve().parents[3] / "examples" / "sso"
)  # docs/SSO.md's "saml.yaml", "saml.jsonnet"
PASSWORD = "a long and unique password 42"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("saml")
    public, admin = ports()
    base = f"http://127.0.0.1:{public}/.auth"
    with identity_provider(tmp) as idp:
        sp_key, sp_cert = key_pair(tmp, "sp")
        config = base_config(tmp, public, admin, dev=True)
        example = yaml.safe_load((EXAMPLES / "saml.yaml").read_text())["selfservice"]["methods"]["saml"]
        acme = {
            k: v
            for k, v in example["config"]["providers"][0].items()
            if k not in ("idp_metadata_url", "mapper_url")
        }
        config["selfservice"]["methods"] = {
            "saml": {
                **example,
                "config": {
                    **example["config"],
                    "clock_skew": "30s",
                    # The tightest bound: this module's requests come one at a time, except in
                    # test_verifications_past_the_bound_are_answered_503_and_can_be_retried.
                    "max_concurrent_verifications": 1,
                    "max_queued_verifications": 0,
                    "signing": {"key_url": f"file://{sp_key}", "certificate_url": sp_cert},
                    "providers": [
                        {
                            **acme,
                            "organization_id": ORG,
                            "raw_idp_metadata_xml": idp.metadata(),
                            "mapper_url": f"file://{EXAMPLES / 'saml.jsonnet'}",
                        },
                        {
                            "id": "partner",
                            "label": "Partner",
                            "idp_metadata_url": f"{idp.url}/metadata",
                            "binding": "post",
                            "allow_idp_initiated": True,
                        },
                    ],
                },
            }
        }
        path = write_config(tmp / "sidecar.yaml", config)
        with running(serve_argv(path, "--migrate"), cwd=tmp, public_port=public, admin_port=admin) as p:
            site = Site(base, p.admin_url, idp, tmp)
            for connection in ("acme", "partner"):
                metadata = httpx.get(site.entity(connection), timeout=15)
                assert metadata.status_code == 200, metadata.text
                assert metadata.headers["content-type"].startswith("application/samlmetadata+xml")
                assert site.acs(connection) in metadata.text
                idp.trust(metadata.text)
            unknown = httpx.get(site.entity("nope"), timeout=15)
            assert unknown.status_code == 404 and unknown.json()["error"]["code"] == 404
            with httpx.Client(base_url=site.admin, timeout=15) as client:
                made = client.post(
                    "/admin/organizations",
                    json={"id": ORG, "label": "ACME", "slug": "acme", "domains": ["acme.example"]},
                )
                assert made.status_code == 201, made.text
            yield site


def jsonnet_evaluations(site: Site) -> float:
    """The server's Jsonnet evaluations that ended well, from its metrics."""
    text = httpx.get(f"{site.admin}/metrics", timeout=15).text
    return value(text, "sidecar_jsonnet_evaluations_total", outcome="ok")


def test_sp_initiated_redirect_binding_creates_a_member_and_signs_in_again(site: Site) -> None:
    with httpx.Client(timeout=20) as browser:
        flow = browser.get(
            f"{site.base}/self-service/login/browser",
            params={"organization": ORG},
            headers={"Accept": "application/json"},
        ).json()
        buttons = [
            (n["group"], n["attributes"]["value"])
            for n in flow["ui"]["nodes"]
            if n["attributes"]["name"] == "provider"
        ]
        assert buttons == [("saml", "acme")]
        general = browser.get(f"{site.base}/self-service/login/api").json()
        assert [n["attributes"]["value"] for n in general["ui"]["nodes"] if n["group"] == "saml"] == [
            "partner"
        ]

        evaluated = jsonnet_evaluations(site)
        leave = submit_login(browser, site, {"method": "saml", "provider": "acme"})
        assert leave.headers["location"].startswith(f"{site.idp.url}/sso/redirect?SAMLRequest=")
        done = through_idp(browser, site, leave, "alice@acme.example")
        assert done.status_code == 303, done.text
        assert jsonnet_evaluations(site) == evaluated + 1  # the mapper, on the server's one pool
        me = whoami(browser, site)
        assert me is not None
        assert me["identity"]["traits"]["email"] == "alice@acme.example"
        assert me["identity"]["organization_id"] == ORG
        assert me["identity"]["metadata_public"] == {"roles": []}  # the example mapper ran
        assert [a["verified"] for a in me["identity"]["verifiable_addresses"]] == [True]
        assert [m["method"] for m in me["authentication_methods"]] == ["saml"]
        first = me["identity"]["id"]

    with httpx.Client(base_url=site.admin, timeout=15) as admin:
        identity = admin.get(f"/admin/identities/{first}", params={"include_credential": "saml"}).json()
        assert identity["credentials"]["saml"]["identifiers"] == ["acme:alice@acme.example"]

    with httpx.Client(timeout=20) as again:
        leave = submit_login(
            again, site, {"provider": "acme"}, f"?organization={ORG}"
        )  # the button: no method
        through_idp(again, site, leave, "alice@acme.example")
        me = whoami(again, site)
        assert me is not None and me["identity"]["id"] == first


def test_post_binding_and_domain_routing(site: Site) -> None:
    with httpx.Client(timeout=20) as browser:
        leave = submit_login(browser, site, {"method": "saml", "provider": "partner"})
        assert urlsplit(leave.headers["location"]).path == "/.auth/self-service/methods/saml/auth/partner"
        through_idp(browser, site, leave, "pat@partner.test")
        me = whoami(browser, site)
        assert me is not None and me["identity"]["traits"]["email"] == "pat@partner.test"
        assert me["identity"].get("organization_id") is None

    # An address of the organization's domain leaves for its IdP, the same way whether or not the
    # account exists, before any password is looked at.
    with httpx.Client(timeout=20) as browser:
        answers = []
        for who in ("alice@acme.example", "nobody@acme.example"):
            r = submit_login(browser, site, {"method": "password", "identifier": who, "password": "x"})
            assert r.status_code == 303, r.text
            url = urlsplit(r.headers["location"])
            assert f"{url.scheme}://{url.netloc}{url.path}" == f"{site.idp.url}/sso/redirect"
            answers.append(sorted(parse_qs(url.query)))
        assert answers[0] == answers[1]
        leave = submit_login(
            browser, site, {"method": "identifier_first", "identifier": "carol@acme.example"}
        )
        through_idp(browser, site, leave, "carol@acme.example")
        me = whoami(browser, site)
        assert me is not None and me["identity"]["organization_id"] == ORG


def test_existing_account_is_linked_only_after_signing_in_to_it(site: Site) -> None:
    with httpx.Client(base_url=site.admin, timeout=15) as admin:
        body = {
            "schema_id": "default",
            "traits": {"email": "dave@partner.test"},
            "credentials": {"password": {"config": {"password": PASSWORD}}},
        }
        made = admin.post("/admin/identities", json=body)
        assert made.status_code == 201, made.text
        dave = made.json()["id"]

    with httpx.Client(timeout=20) as browser:
        leave = submit_login(browser, site, {"method": "saml", "provider": "partner"})
        back = through_idp(browser, site, leave, "dave@partner.test")
        assert whoami(browser, site) is None  # the address alone signs nobody in
        assert back.status_code == 303, back.text
        flow_id = parse_qs(urlsplit(back.headers["location"]).query)["flow"][0]
        flow = browser.get(f"{site.base}/self-service/login/flows", params={"id": flow_id}).json()
        assert [m["id"] for m in flow["ui"]["messages"]] == [1010016]
        done = browser.post(
            f"{site.base}/self-service/login?flow={flow_id}",
            data={
                "csrf_token": csrf_of(flow),
                "method": "password",
                "identifier": "dave@partner.test",
                "password": PASSWORD,
            },
        )
        assert done.status_code == 303, done.text
        me = whoami(browser, site)
        assert me is not None and me["identity"]["id"] == dave

    with httpx.Client(base_url=site.admin, timeout=15) as admin:
        identity = admin.get(f"/admin/identities/{dave}", params={"include_credential": "saml"}).json()
        assert identity["credentials"]["saml"]["identifiers"] == ["partner:dave@partner.test"]

    with httpx.Client(timeout=20) as browser:  # now the IdP signs dave in directly
        leave = submit_login(browser, site, {"method": "saml", "provider": "partner"})
        through_idp(browser, site, leave, "dave@partner.test")
        me = whoami(browser, site)
        assert me is not None and me["identity"]["id"] == dave


def _tampered(xml: str) -> str:
    return xml.replace("eve@acme.example</ns1:AttributeValue>", "root@acme.example</ns1:AttributeValue>", 1)


def _wrapped(xml: str) -> str:
    """XSW: the signed assertion stays, an unsigned one about someone else goes first."""
    match = re.search(r"<ns1:Assertion .*?</ns1:Assertion>", xml, re.S)
    assert match is not None, xml[:400]
    signed = match.group(0)
    evil = re.sub(r"<ns2:Signature.*?</ns2:Signature>", "", signed, flags=re.S)
    evil = re.sub(r'ID="[^"]+"', 'ID="id-evil"', evil, count=1).replace(
        "eve@acme.example", "root@acme.example"
    )
    return xml.replace(signed, evil + signed)


@pytest.mark.parametrize(
    ("make", "hint"),
    [
        pytest.param(
            lambda idp, req, site: _tampered(idp.respond(req, "eve@acme.example")),
            "signature",
            id="forged-content",
        ),
        pytest.param(
            lambda idp, req, site: idp.respond(
                req, "eve@acme.example", key_file=key_pair(site.tmp, "mallory")[0]
            ),
            "signature",
            id="forged-key",
        ),
        pytest.param(
            lambda idp, req, site: idp.respond(req, "eve@acme.example", sp_entity_id=site.entity("partner")),
            "audience",
            id="wrong-audience",
        ),
        pytest.param(
            lambda idp, req, site: idp.respond(req, "eve@acme.example", acs_url=site.acs("partner")),
            "destination",
            id="wrong-destination",
        ),
        pytest.param(
            lambda idp, req, site: idp.respond(req, "eve@acme.example", lifetime_minutes=-5),
            "expired",
            id="expired",
        ),
        pytest.param(
            lambda idp, req, site: idp.respond(req, "eve@acme.example", sign_assertion=False),
            "signed",
            id="unsigned",
        ),
        pytest.param(
            lambda idp, req, site: _wrapped(idp.respond(req, "eve@acme.example")), "2 assertions", id="xsw"
        ),
        pytest.param(
            lambda idp, req, site: idp.respond(req, "eve@acme.example", in_response_to="id-someone-elses"),
            "request",
            id="wrong-in-response-to",
        ),
    ],
)
def test_bad_responses_are_refused(site: Site, make: Any, hint: str) -> None:
    with httpx.Client(timeout=20) as browser:
        request = authn_request_of(
            browser, site, submit_login(browser, site, {"method": "saml", "provider": "acme"})
        )
        r = post_response(browser, site, "acme", make(site.idp, request, site), request.relay_state)
        error = error_of(browser, site, r)
        assert error["code"] == 400, error
        assert hint in error["details"]["hint"].lower(), error
        assert whoami(browser, site) is None


def test_replayed_and_unsolicited_responses(site: Site) -> None:
    with httpx.Client(timeout=20) as browser:
        # A correct answer used twice: the RelayState is gone, and so is the request it answered.
        request = authn_request_of(
            browser, site, submit_login(browser, site, {"method": "saml", "provider": "acme"})
        )
        xml = site.idp.respond(request, "frank@acme.example")
        assert post_response(browser, site, "acme", xml, request.relay_state).status_code == 303
        assert whoami(browser, site) is not None
    with httpx.Client(timeout=20) as attacker:
        error = error_of(attacker, site, post_response(attacker, site, "acme", xml, request.relay_state))
        assert "unsolicited" in error["details"]["hint"]
        # IdP-initiated login is off for acme ...
        unsolicited = site.idp.respond(
            None, "frank@acme.example", acs_url=site.acs("acme"), sp_entity_id=site.entity("acme")
        )
        error = error_of(attacker, site, post_response(attacker, site, "acme", unsolicited, None))
        assert "unsolicited" in error["details"]["hint"] and whoami(attacker, site) is None

    # ... and on for partner: accepted once; the same assertion again is a replay.
    unsolicited = site.idp.respond(
        None, "gina@partner.test", acs_url=site.acs("partner"), sp_entity_id=site.entity("partner")
    )
    with httpx.Client(timeout=20) as browser:
        assert post_response(browser, site, "partner", unsolicited, None).status_code == 303
        me = whoami(browser, site)
        assert me is not None and me["identity"]["traits"]["email"] == "gina@partner.test"
    with httpx.Client(timeout=20) as attacker:
        error = error_of(attacker, site, post_response(attacker, site, "partner", unsolicited, None))
        assert "already used" in error["details"]["hint"] and whoami(attacker, site) is None
        # An unsolicited answer to someone's request is refused too (InResponseTo without RelayState).
        request = authn_request_of(
            attacker, site, submit_login(attacker, site, {"method": "saml", "provider": "partner"})
        )
        xml = site.idp.respond(request, "gina@partner.test")
        error = error_of(attacker, site, post_response(attacker, site, "partner", xml, None))
        assert "did not send" in error["details"]["hint"]


def test_malformed_and_oversized_responses_are_refused_before_they_are_parked(site: Site) -> None:
    with httpx.Client(timeout=20) as browser:
        request = authn_request_of(
            browser, site, submit_login(browser, site, {"method": "saml", "provider": "acme"})
        )
        for junk, hint in [("<Response", "well-formed"), ("<x/>", "not a saml response")]:
            r = post_response(browser, site, "acme", junk, request.relay_state)
            assert "?continue=" not in r.headers["location"]
            error = error_of(browser, site, r)
            assert error["code"] == 400 and hint in error["details"]["hint"].lower(), error
        r = browser.post(site.acs("acme"), data={"SAMLResponse": "!not base64 at all!"})
        assert error_of(browser, site, r)["code"] == 400
        # Past the 256 KiB message bound (and past the body bound), before any XML is read.
        for size in (257 * 1024, 400 * 1024):
            r = browser.post(site.acs("acme"), data={"SAMLResponse": "A" * size, "RelayState": "x"})
            error = error_of(browser, site, r)
            assert error["code"] == 413, error
        # The flow is untouched: the real answer still signs in.
        xml = site.idp.respond(request, "hana@acme.example")
        assert post_response(browser, site, "acme", xml, request.relay_state).status_code == 303
        assert whoami(browser, site) is not None


def test_verifications_past_the_bound_are_answered_503_and_can_be_retried(site: Site) -> None:
    """One check at a time, none queued: of responses checked at once, all but one get 503 with
    Retry-After (a page for browsers, Kratos' JSON otherwise). Nothing was taken, so the same URL
    succeeds when retried; every sign-in completes and nothing answers 500."""
    n = 6
    browsers = [httpx.Client(timeout=60) for _ in range(n)]
    try:
        continues = []
        for i, browser in enumerate(browsers):
            request = authn_request_of(
                browser, site, submit_login(browser, site, {"method": "saml", "provider": "acme"})
            )
            xml = site.idp.respond(request, f"crowd{i}@acme.example")
            r = browser.post(
                site.acs("acme"),
                data={
                    "SAMLResponse": base64.b64encode(xml.encode()).decode(),
                    "RelayState": request.relay_state,
                },
            )
            assert r.status_code == 303 and "?continue=" in r.headers["location"], r.text
            continues.append(r.headers["location"])
        pending, busy = set(range(n)), {"page": 0, "json": 0}
        for _ in range(n):  # at least one is admitted each round
            if not pending:
                break
            batch = sorted(pending)
            barrier = threading.Barrier(len(batch))

            def get(i: int) -> tuple[int, httpx.Response]:
                accept = "text/html,application/xhtml+xml" if i % 2 else "application/json"
                barrier.wait()
                return i, browsers[i].get(continues[i], headers={"Accept": accept})

            with ThreadPoolExecutor(len(batch)) as pool:
                for i, r in pool.map(get, batch):
                    if r.status_code == 503:
                        assert r.headers["retry-after"] == "1", r.headers
                        if i % 2:
                            assert "Reload this page" in r.text and r.headers["content-type"].startswith(
                                "text/html"
                            )
                            busy["page"] += 1
                        else:
                            assert r.json()["error"]["code"] == 503, r.text
                            busy["json"] += 1
                        continue
                    assert r.status_code == 303, (r.status_code, r.text)
                    assert "/error" not in r.headers["location"], r.headers["location"]
                    pending.discard(i)
        assert not pending
        assert busy["page"] + busy["json"] > 0, busy
        for i, browser in enumerate(browsers):
            me = whoami(browser, site)
            assert me is not None and me["identity"]["traits"]["email"] == f"crowd{i}@acme.example"
    finally:
        for browser in browsers:
            browser.close()


def test_single_logout_from_the_idp_revokes_the_session(site: Site) -> None:
    with httpx.Client(timeout=20) as browser:
        leave = submit_login(browser, site, {"method": "saml", "provider": "partner"})
        through_idp(browser, site, leave, "hank@partner.test")
        assert whoami(browser, site) is not None
        url = site.idp.logout_request(
            site.entity("partner"), f"{site.base}/self-service/methods/saml/slo/partner", "hank@partner.test"
        )
        with httpx.Client(timeout=20) as idp_side:  # the IdP's front channel carries no cookie of ours
            answer = idp_side.get(url)
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"].startswith(f"{site.idp.url}/slo?SAMLResponse=")
        assert whoami(browser, site) is None

    slo = f"{site.base}/self-service/methods/saml/slo/partner"
    with httpx.Client(timeout=20) as browser:
        leave = submit_login(browser, site, {"method": "saml", "provider": "partner"})
        through_idp(browser, site, leave, "hank@partner.test")
        url = site.idp.logout_request(site.entity("partner"), slo, "hank@partner.test")
        with httpx.Client(timeout=20) as idp_side:
            # Unsigned, or with a signature that is not the IdP's, it changes nothing.
            unsigned = re.sub(r"&(SigAlg|Signature)=[^&]*", "", url)
            assert "not signed" in error_of(idp_side, site, idp_side.get(unsigned))["details"]["hint"]
            signature = parse_qs(urlsplit(url).query)["Signature"][0]
            forged = url.replace(
                httpx.QueryParams({"Signature": signature}).__str__(),
                httpx.QueryParams({"Signature": "A" * 8 + signature[8:]}).__str__(),
            )
            assert forged != url
            hint = error_of(idp_side, site, idp_side.get(forged))["details"]["hint"]
            assert "not the identity provider's" in hint
            for sign in (False, True):  # HTTP-POST
                xml = site.idp.logout_request_xml(site.entity("partner"), slo, "hank@partner.test", sign=sign)
                posted = idp_side.post(slo, data={"SAMLRequest": base64.b64encode(xml.encode()).decode()})
                if not sign:
                    assert "not signed" in error_of(idp_side, site, posted)["details"]["hint"]
                    assert whoami(browser, site) is not None
                else:
                    assert posted.status_code == 303, posted.text
                    assert posted.headers["location"].startswith(f"{site.idp.url}/slo?SAMLResponse=")
                    assert whoami(browser, site) is None


def test_single_logout_from_the_sidecar_goes_through_the_idp(site: Site) -> None:
    with httpx.Client(timeout=20) as browser:
        leave = submit_login(browser, site, {"method": "saml", "provider": "partner"})
        through_idp(browser, site, leave, "ivy@partner.test")
        assert whoami(browser, site) is not None
        made = browser.get(f"{site.base}/self-service/logout/browser", headers={"Accept": "application/json"})
        out = browser.get(made.json()["logout_url"])
        assert out.status_code == 303, out.text
        assert out.headers["location"].startswith(f"{site.idp.url}/slo?SAMLRequest=")
        query = parse_qs(urlsplit(out.headers["location"]).query)
        assert "Signature" in query  # signed with signing.key_url
        assert whoami(browser, site) is None  # signed out here already
        back = browser.get(out.headers["location"])  # the IdP signs out and answers
        assert site.idp.logouts[-1] == "ivy@partner.test"
        assert back.status_code == 303 and back.headers["location"].startswith(
            f"{site.base}/self-service/methods/saml/slo/partner?SAMLResponse="
        )
        home = browser.get(back.headers["location"])
        assert home.status_code == 303 and home.headers["location"] == site.base.removesuffix("/.auth") + "/"


def test_single_logout_from_the_idp_ends_only_the_sessions_it_names(site: Site) -> None:
    """Two sign-ins of one person (two browsers, two identity provider sessions): a LogoutRequest
    with the first's SessionIndex ends that session only; one without a SessionIndex ends every
    session of the person (SAML core §3.7.3.2)."""
    slo = f"{site.base}/self-service/methods/saml/slo/partner"
    email = "jill@partner.test"
    with httpx.Client(timeout=20) as first, httpx.Client(timeout=20) as second:
        indexes = []
        for browser in (first, second):
            through_idp(
                browser, site, submit_login(browser, site, {"method": "saml", "provider": "partner"}), email
            )
            indexes.append(site.idp.session_indexes[-1])
            me = whoami(browser, site)
            assert me is not None
            # Kratos' shape: the connection is shown; the NameID and SessionIndex are kept, not shown.
            assert [sorted(m) for m in me["authentication_methods"]] == [
                ["aal", "completed_at", "method", "provider"]
            ]
            assert me["authentication_methods"][0]["provider"] == "partner"
        assert indexes[0] != indexes[1]

        def idp_logout(session_indexes: list[str] | None) -> None:
            with httpx.Client(timeout=20) as idp_side:  # the IdP's front channel: no cookie of ours
                answer = idp_side.get(
                    site.idp.logout_request(site.entity("partner"), slo, email, session_indexes)
                )
            assert answer.status_code == 303, answer.text
            assert answer.headers["location"].startswith(f"{site.idp.url}/slo?SAMLResponse=")

        idp_logout(["id-no-such-session"])
        assert whoami(first, site) is not None and whoami(second, site) is not None
        idp_logout([indexes[0]])
        assert whoami(first, site) is None
        assert whoami(second, site) is not None
        idp_logout(None)
        assert whoami(second, site) is None


def test_single_logout_from_the_sidecar_names_the_connection_and_session_that_signed_in(site: Site) -> None:
    """An identity linked to two connections (of one identity provider): signing out of a session
    that came through the second sends the LogoutRequest from the second, for the NameID (with its
    format) and the SessionIndex of that sign-in, not from the first linked connection."""
    email = "lee@partner.test"
    with httpx.Client(base_url=site.admin, timeout=15) as admin:
        body = {
            "schema_id": "default",
            "traits": {"email": email},
            "credentials": {
                "saml": {
                    "config": {
                        "providers": [
                            {"provider": "acme", "subject": email},
                            {"provider": "partner", "subject": email},
                        ]
                    }
                }
            },
        }
        made = admin.post("/admin/identities", json=body)
        assert made.status_code == 201, made.text
        identity = admin.get(f"/admin/identities/{made.json()['id']}", params={"include_credential": "saml"})
        assert identity.json()["credentials"]["saml"]["identifiers"] == [f"acme:{email}", f"partner:{email}"]

    with httpx.Client(timeout=20) as browser:
        through_idp(
            browser, site, submit_login(browser, site, {"method": "saml", "provider": "partner"}), email
        )
        index = site.idp.session_indexes[-1]
        me = whoami(browser, site)
        assert me is not None and me["identity"]["id"] == made.json()["id"]
        made_logout = browser.get(
            f"{site.base}/self-service/logout/browser", headers={"Accept": "application/json"}
        )
        out = browser.get(made_logout.json()["logout_url"])
        assert out.status_code == 303 and out.headers["location"].startswith(
            f"{site.idp.url}/slo?SAMLRequest="
        )
        back = browser.get(out.headers["location"])
        seen = site.idp.logout_requests[-1]
        assert seen.issuer == site.entity("partner")
        assert seen.name_id == email
        assert seen.name_id_format == "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
        assert seen.session_indexes == [index]
        assert back.status_code == 303 and back.headers["location"].startswith(
            f"{site.base}/self-service/methods/saml/slo/partner?SAMLResponse="
        )
        assert whoami(browser, site) is None


def test_the_admin_api_lists_the_connections_read_only(site: Site) -> None:
    """``/admin/saml/connections`` (sidecar-specific): what to give the identity provider, and what
    its metadata said when it was loaded (both were loaded by the fixture's metadata requests)."""
    with httpx.Client(base_url=site.admin, timeout=15) as admin:
        listed = admin.get("/admin/saml/connections")
        assert listed.status_code == 200, listed.text
        assert [c["id"] for c in listed.json()] == ["acme", "partner"]
        acme = admin.get("/admin/saml/connections/acme").json()
        assert acme == listed.json()[0]
        assert (acme["label"], acme["provider"], acme["organization_id"], acme["binding"]) == (
            "ACME SSO",
            "generic",
            ORG,
            "redirect",
        )
        assert acme["service_provider"] == {
            "entity_id": site.entity("acme"),
            "metadata_url": site.entity("acme"),
            "acs_url": site.acs("acme"),
            "slo_url": f"{site.base}/self-service/methods/saml/slo/acme",
            "signs_requests": True,
        }
        idp = acme["identity_provider"]
        assert idp["metadata_url"] is None and idp["loaded"] is True  # inline metadata, read at start
        assert idp["entity_id"] == site.idp.entity_id
        assert idp["single_sign_on"] == {
            "redirect": f"{site.idp.url}/sso/redirect",
            "post": f"{site.idp.url}/sso/post",
        }
        assert idp["single_logout"] == {"redirect": f"{site.idp.url}/slo"}
        [expires] = idp["signing_certificates_expire"]  # key_pair's certificate: 30 days
        left = datetime.fromisoformat(expires) - datetime.now(UTC)
        assert timedelta(days=29) < left <= timedelta(days=30), expires
        partner = listed.json()[1]
        assert partner["identity_provider"]["metadata_url"] == f"{site.idp.url}/metadata"
        assert partner["identity_provider"]["loaded"] is True
        assert (partner["binding"], partner["allow_idp_initiated"], partner["organization_id"]) == (
            "post",
            True,
            None,
        )

        unknown = admin.get("/admin/saml/connections/nope")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == 404
        assert admin.post("/admin/saml/connections", json={"id": "x"}).status_code == 405
        assert admin.delete("/admin/saml/connections/acme").status_code == 405


def _as_before_this_release(site: Site, browser: httpx.Client) -> None:
    """The browser's session as sessions were stored before they recorded their connection: the
    ``saml`` method only (the row rewritten in the SQLite database the server uses)."""
    me = whoami(browser, site)
    assert me is not None
    with sqlite3.connect(site.tmp / "sidecar.db") as db:
        (raw,) = db.execute("SELECT data FROM sessions WHERE id = ?", (me["id"].replace("-", ""),)).fetchone()
        data = json.loads(raw)
        for method in data["authentication_methods"]:
            for key in ("provider", "subject", "subject_format", "session_index"):
                method.pop(key, None)
        db.execute("UPDATE sessions SET data = ? WHERE id = ?", (json.dumps(data), me["id"].replace("-", "")))
    # An admin change of the identity drops its sessions from every cache (session.cache_ttl).
    patch = [{"op": "add", "path": "/metadata_admin", "value": {"rewritten": True}}]
    changed = httpx.patch(f"{site.admin}/admin/identities/{me['identity']['id']}", json=patch, timeout=15)
    assert changed.status_code == 200, changed.text
    after = whoami(browser, site)
    assert after is not None and after["authentication_methods"] == [
        {k: v for k, v in m.items() if k != "provider"} for m in me["authentication_methods"]
    ]


def test_single_logout_of_an_older_session_uses_the_only_connection_or_none(site: Site) -> None:
    with httpx.Client(timeout=20) as browser:
        email = "olga@partner.test"
        through_idp(
            browser, site, submit_login(browser, site, {"method": "saml", "provider": "partner"}), email
        )
        _as_before_this_release(site, browser)
        made = browser.get(f"{site.base}/self-service/logout/browser", headers={"Accept": "application/json"})
        out = browser.get(made.json()["logout_url"])
        assert out.status_code == 303 and out.headers["location"].startswith(
            f"{site.idp.url}/slo?SAMLRequest="
        )
        browser.get(out.headers["location"])
        seen = site.idp.logout_requests[-1]
        assert (seen.issuer, seen.name_id, seen.session_indexes) == (site.entity("partner"), email, [])

    with httpx.Client(base_url=site.admin, timeout=15) as admin:  # linked to two connections
        email = "otto@partner.test"
        providers = [{"provider": c, "subject": email} for c in ("acme", "partner")]
        body = {
            "schema_id": "default",
            "traits": {"email": email},
            "credentials": {"saml": {"config": {"providers": providers}}},
        }
        assert admin.post("/admin/identities", json=body).status_code == 201
    with httpx.Client(timeout=20) as browser:
        through_idp(
            browser, site, submit_login(browser, site, {"method": "saml", "provider": "partner"}), email
        )
        _as_before_this_release(site, browser)
        made = browser.get(f"{site.base}/self-service/logout/browser", headers={"Accept": "application/json"})
        out = browser.get(made.json()["logout_url"])
        # Which connection signed it in is unknown: signed out here, no guess at the identity provider.
        assert out.status_code == 303 and not out.headers["location"].startswith(site.idp.url), out.headers
        assert whoami(browser, site) is None

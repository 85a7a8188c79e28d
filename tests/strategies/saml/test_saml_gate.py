"""The SAML service provider's gate, from outside: two ``sidecar serve`` replicas sharing
PostgreSQL and Redis (like two pods) and the real pysaml2 identity provider (``idp.py``).

- The per-IP limit on ACS posts and SLO requests (``selfservice.methods.saml.config.rate_limit``)
  counts in the key-value store, so both replicas fill one window; past it the answer is 429 with
  ``Retry-After``: a page for a browser, Kratos' JSON for everything else. Other addresses (and
  other /64s) are not affected.
- ``sidecar_saml_verifications_total`` (message, outcome), ``sidecar_saml_verification_seconds``
  and ``sidecar_saml_verification_queue_depth``: a scrape after known events shows their counts.

Client addresses arrive as a reverse proxy reports them, in ``X-Forwarded-For`` from loopback
(trusted by default).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REDIS_URL, _pg_exec
from tests.ops.serve import Proc, base_config, ports, running, serve_argv, write_config
from tests.strategies.saml.browser import (
    Site,
    authn_request_of,
    error_of,
    post_response,
    submit_login,
    whoami,
)
from tests.strategies.saml.idp import identity_provider, key_pair

pytestmark = pytest.mark.e2e

LIMIT = 8
"""``rate_limit.per_ip`` of these replicas (the window is an hour: no test here outlives it)."""


@dataclass
class Pair:
    site: Site
    """The public base URL both replicas answer for (the first one's), the IdP, the temp dir."""
    replicas: tuple[Proc, Proc]

    def acs(self, replica: int, connection: str = "acme") -> str:
        return f"{self.replicas[replica].public_url}/.auth/self-service/methods/saml/acs/{connection}"

    def slo(self, replica: int, connection: str = "acme") -> str:
        return f"{self.replicas[replica].public_url}/.auth/self-service/methods/saml/slo/{connection}"

    def scrape(self, replica: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.replicas[replica].admin_url}/metrics", timeout=15).text
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


def verifications(
    scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], message: str
) -> dict[str, int]:
    """Outcome -> count of ``sidecar_saml_verifications_total`` for one message kind."""
    out: dict[str, int] = {}
    for (name, labels), value in scrape.items():
        found = dict(labels)
        if name == "sidecar_saml_verifications_total" and found.get("message") == message:
            out[found["outcome"]] = int(value)
    return out


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, postgres_server: str, redis_url: str) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("saml-gate")
    database = f"sidecar_saml_gate_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_exec(postgres_server, f'CREATE DATABASE "{database}"'))
    dsn = postgres_server.rsplit("/", 1)[0] + "/" + database
    (p1, a1), (p2, a2) = ports(), ports()
    base = f"http://127.0.0.1:{p1}/.auth"
    try:
        with identity_provider(tmp) as idp:
            sp_key, sp_cert = key_pair(tmp, "sp")
            config = base_config(tmp, p1, a1, dev=True)
            config["dsn"] = dsn
            config["log"] = {"audit": {"enabled": True, "path": str(tmp / "audit.jsonl")}}
            config["redis"] = {"url": REDIS_URL, "key_prefix": f"saml-gate-{uuid.uuid4().hex[:10]}:"}
            config["selfservice"]["methods"] = {
                "saml": {
                    "enabled": True,
                    "config": {
                        "clock_skew": "30s",
                        "max_concurrent_verifications": 1,
                        "max_queued_verifications": 0,
                        "rate_limit": {"per_ip": LIMIT, "window": "1h"},
                        "signing": {"key_url": f"file://{sp_key}", "certificate_url": sp_cert},
                        "providers": [
                            {"id": connection, "raw_idp_metadata_xml": idp.metadata()}
                            for connection in ("acme", "other")
                        ],
                    },
                }
            }
            first = write_config(tmp / "first.yaml", config)
            # The second replica listens elsewhere and answers for the same public URL.
            config["serve"] = {
                "public": {**config["serve"]["public"], "port": p2},
                "admin": {**config["serve"]["admin"], "port": a2},
            }
            second = write_config(tmp / "second.yaml", config)
            with (
                running(serve_argv(first, "--migrate"), cwd=tmp, public_port=p1, admin_port=a1) as one,
                running(serve_argv(second), cwd=tmp, public_port=p2, admin_port=a2) as two,
            ):
                site = Site(base, one.admin_url, idp, tmp)
                for connection in ("acme", "other"):
                    metadata = httpx.get(site.entity(connection), timeout=15)
                    assert metadata.status_code == 200, metadata.text
                    idp.trust(metadata.text)
                yield Pair(site, (one, two))
    finally:
        asyncio.run(_pg_exec(postgres_server, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def _junk() -> dict[str, str]:
    """A posted response the cheap checks refuse (not a SAML response): counted all the same."""
    return {"SAMLResponse": base64.b64encode(b"<x/>").decode()}


def test_acs_and_slo_requests_are_limited_per_ip_across_replicas(pair: Pair) -> None:
    before = [verifications(pair.scrape(i), "response") for i in (0, 1)]
    before_slo = [verifications(pair.scrape(i), "logout_request") for i in (0, 1)]
    ip = {"X-Forwarded-For": "198.51.100.77"}
    with httpx.Client(timeout=60) as client:
        # One window, filled through both replicas: ACS posts and SLO requests alike.
        for i in range(LIMIT):
            if i % 4 == 3:
                r = client.get(pair.slo(i % 2), headers=ip)  # neither a request nor a response: 400
            else:
                r = client.post(pair.acs(i % 2), data=_junk(), headers=ip)
            assert r.status_code == 303 and "/error" in r.headers["location"], (i, r.status_code, r.text)

        # Past it, on either replica: a page for a browser, Kratos' JSON for a program.
        page = client.post(pair.acs(0), data=_junk(), headers={**ip, "Accept": "text/html,*/*;q=0.8"})
        assert page.status_code == 429, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert "Too many single sign-on requests" in page.text and "Reload this page" in page.text
        retry = int(page.headers["retry-after"])
        assert 1 <= retry <= 3600, retry
        as_json = client.post(pair.acs(1), data=_junk(), headers={**ip, "Accept": "application/json"})
        assert as_json.status_code == 429, as_json.text
        assert (
            as_json.json()["error"]["code"] == 429
            and as_json.json()["error"]["status"] == "Too Many Requests"
        )
        assert 1 <= int(as_json.headers["retry-after"]) <= 3600
        slo = client.get(pair.slo(1), headers={**ip, "Accept": "application/json"})
        assert slo.status_code == 429, slo.text

        # Another address is not affected ...
        other = client.post(pair.acs(1), data=_junk(), headers={"X-Forwarded-For": "203.0.113.78"})
        assert other.status_code == 303, other.text
        # ... and IPv6 clients are counted per /64 (what one subscriber gets).
        for i in range(LIMIT):
            r = client.post(
                pair.acs(i % 2), data=_junk(), headers={"X-Forwarded-For": f"2001:db8:77:1::{i + 1}"}
            )
            assert r.status_code == 303, (i, r.text)
        same_block = client.post(
            pair.acs(0), data=_junk(), headers={"X-Forwarded-For": "2001:db8:77:1::ffff"}
        )
        assert same_block.status_code == 429, same_block.text
        next_block = client.post(pair.acs(0), data=_junk(), headers={"X-Forwarded-For": "2001:db8:77:2::1"})
        assert next_block.status_code == 303, next_block.text

    # Each 429 is an audit event naming the address (both replicas append to one file here).
    throttled = [
        e
        for e in (json.loads(line) for line in (pair.site.tmp / "audit.jsonl").read_text().splitlines())
        if e["event"] == "attempt.throttled" and e["client_ip"] == "198.51.100.77"
    ]
    assert [(e["flow"], e["method"]) for e in throttled] == [("saml", "saml")] * 3, throttled
    assert all(1 <= e["retry_after"] <= 3600 for e in throttled), throttled

    # Each replica counted what it answered: refused as malformed, or rate limited.
    after = [verifications(pair.scrape(i), "response") for i in (0, 1)]
    after_slo = [verifications(pair.scrape(i), "logout_request") for i in (0, 1)]
    # First: 4 + 4 (IPv6) + 1 refused, the page and the /64's 429. Second: 2 + 1 + 4, the JSON 429.
    assert delta(before[0], after[0]) == {"malformed": 9, "rate_limited": 2}
    assert delta(before[1], after[1]) == {"malformed": 7, "rate_limited": 1}
    assert delta(before_slo[0], after_slo[0]) == {}
    assert delta(before_slo[1], after_slo[1]) == {"rate_limited": 1}


def test_a_limited_address_cannot_sign_in_until_its_window_ends(pair: Pair) -> None:
    """A correct answer from an address past its limit is refused too (before it is read), and
    nothing of the sign-in is used up: the same answer from another address signs in."""
    site = pair.site
    limited = {"X-Forwarded-For": "198.51.100.99"}
    with httpx.Client(timeout=60) as client:
        for i in range(LIMIT):
            r = client.post(pair.acs(i % 2), data=_junk(), headers=limited)
            assert r.status_code == 303, (i, r.status_code, r.text)
    with httpx.Client(timeout=60) as browser:
        request = authn_request_of(browser, site, submit_login(browser, site, {"provider": "acme"}))
        xml = site.idp.respond(request, "limited@acme.example")
        fields = {"SAMLResponse": base64.b64encode(xml.encode()).decode(), "RelayState": request.relay_state}
        refused = browser.post(site.acs("acme"), data=fields, headers=limited)
        assert refused.status_code == 429, refused.text
        assert whoami(browser, site) is None
        browser.headers["X-Forwarded-For"] = "203.0.113.99"
        done = post_response(browser, site, "acme", xml, request.relay_state)
        assert done.status_code == 303 and "/error" not in done.headers["location"], (
            done.status_code,
            done.headers,
        )
        me = whoami(browser, site)
        assert me is not None and me["identity"]["traits"]["email"] == "limited@acme.example", me


def _tampered(xml: str) -> str:
    return xml.replace("@acme.example</ns1:AttributeValue>", "@evil.example</ns1:AttributeValue>", 1)


def test_a_scrape_shows_each_outcome_of_the_gate(pair: Pair) -> None:
    """Known events on the first replica, one address each (under the limit); the scrape's deltas
    are exactly those events, and every signature check run is in the histogram."""
    site = pair.site
    scrape = pair.scrape(0)
    before, before_slo = verifications(scrape, "response"), verifications(scrape, "logout_request")
    checks_before = scrape[("sidecar_saml_verification_seconds_count", ())]
    addresses = iter(f"192.0.2.{i}" for i in range(1, 250))
    checks = 0

    def browser() -> httpx.Client:
        return httpx.Client(timeout=60, headers={"X-Forwarded-For": next(addresses)})

    def attempt(make: Any) -> dict[str, Any]:
        with browser() as b:
            request = authn_request_of(b, site, submit_login(b, site, {"provider": "acme"}))
            r = post_response(b, site, "acme", make(request), request.relay_state)
            assert whoami(b, site) is None
            return error_of(b, site, r)

    with browser() as b:  # ok, and the parked answer fetched again: replay
        request = authn_request_of(b, site, submit_login(b, site, {"provider": "acme"}))
        xml = site.idp.respond(request, "metrics@acme.example")
        posted = b.post(
            site.acs("acme"),
            data={"SAMLResponse": base64.b64encode(xml.encode()).decode(), "RelayState": request.relay_state},
        )
        assert posted.status_code == 303 and "?continue=" in posted.headers["location"], posted.text
        assert b.get(posted.headers["location"]).status_code == 303
        assert whoami(b, site) is not None
        assert "already used" in error_of(b, site, b.get(posted.headers["location"]))["details"]["hint"]
        checks += 1
    # Refused by the signature check (each one ran it) ...
    assert (
        "signature"
        in attempt(lambda req: _tampered(site.idp.respond(req, "m1@acme.example")))["details"]["hint"].lower()
    )
    hint = attempt(lambda req: site.idp.respond(req, "m2@acme.example", sp_entity_id=site.entity("other")))
    assert "audience" in hint["details"]["hint"].lower()
    hint = attempt(lambda req: site.idp.respond(req, "m3@acme.example", in_response_to="id-someone-elses"))
    assert "request" in hint["details"]["hint"].lower()
    checks += 3
    # ... and by the cheap checks, before it was parked (no signature check).
    attempt(lambda req: site.idp.respond(req, "m4@acme.example", lifetime_minutes=-5))
    attempt(lambda req: site.idp.respond(req, "m5@acme.example", acs_url=site.acs("other")))
    attempt(lambda req: site.idp.respond(req, "m6@acme.example", sign_assertion=False))
    attempt(lambda req: "<Response")
    with browser() as b:
        assert (
            error_of(b, site, b.post(site.acs("acme"), data={"SAMLResponse": "A" * (257 * 1024)}))["code"]
            == 413
        )

    # Busy: one check at a time and none queued; every 503 seen is counted.
    n, busy = 5, 0
    clients = [browser() for _ in range(n)]
    try:
        continues = []
        for i, b in enumerate(clients):
            request = authn_request_of(b, site, submit_login(b, site, {"provider": "acme"}))
            xml = site.idp.respond(request, f"busy{i}@acme.example")
            fields = {
                "SAMLResponse": base64.b64encode(xml.encode()).decode(),
                "RelayState": request.relay_state,
            }
            r = b.post(site.acs("acme"), data=fields)
            assert r.status_code == 303 and "?continue=" in r.headers["location"], r.text
            continues.append(r.headers["location"])
        pending = set(range(n))
        for _ in range(n):  # at least one is admitted each round
            if not pending:
                break
            batch = sorted(pending)
            barrier = threading.Barrier(len(batch))

            def get(i: int) -> tuple[int, httpx.Response]:
                barrier.wait()
                return i, clients[i].get(continues[i], headers={"Accept": "application/json"})

            with ThreadPoolExecutor(len(batch)) as pool:
                for i, r in pool.map(get, batch):
                    if r.status_code == 503:
                        busy += 1
                    else:
                        assert r.status_code == 303 and "/error" not in r.headers["location"], r.text
                        pending.discard(i)
        assert not pending and busy > 0, (pending, busy)
        checks += n
    finally:
        for b in clients:
            b.close()

    # Single logout from the IdP: signed (ok) and unsigned (refused); both ran the check.
    with browser() as b:
        request = authn_request_of(b, site, submit_login(b, site, {"provider": "acme"}))
        post_response(b, site, "acme", site.idp.respond(request, "slo@acme.example"), request.relay_state)
        assert whoami(b, site) is not None
        checks += 1
        slo = f"{site.base}/self-service/methods/saml/slo/acme"
        with browser() as idp_side:
            xml = site.idp.logout_request_xml(site.entity("acme"), slo, "slo@acme.example", sign=False)
            unsigned = idp_side.post(slo, data={"SAMLRequest": base64.b64encode(xml.encode()).decode()})
            assert "not signed" in error_of(idp_side, site, unsigned)["details"]["hint"]
            answer = idp_side.get(site.idp.logout_request(site.entity("acme"), slo, "slo@acme.example"))
            assert answer.status_code == 303, answer.text
        assert whoami(b, site) is None
        checks += 2

    scrape = pair.scrape(0)
    assert delta(before, verifications(scrape, "response")) == {
        "ok": 2 + n,
        "replay": 1,
        "signature": 1,
        "audience": 1,
        "inresponseto": 1,
        "expired": 1,
        "destination": 1,
        "unsigned": 1,
        "malformed": 1,
        "too_large": 1,
        "busy": busy,
    }
    assert delta(before_slo, verifications(scrape, "logout_request")) == {"ok": 1, "unsigned": 1}
    assert scrape[("sidecar_saml_verification_seconds_count", ())] - checks_before == checks
    assert scrape[("sidecar_saml_verification_queue_depth", ())] == 0

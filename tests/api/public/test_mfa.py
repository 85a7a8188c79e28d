"""Second factors over HTTP: TOTP (codes from ``oathtool``), backup codes, AAL step-up, whoami."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import pytest

from tests.api.public.conftest import Harness, HarnessFactory
from tests.api.public.helpers import login_api, message_ids, register_api
from tests.api.public.mfa import (
    aal2_login_flow,
    enrol_codes,
    enrol_totp,
    fresh_step,
    has_node,
    mfa_selfservice,
    oathtool,
    submit_login,
    tok,
)


@pytest.fixture(params=["sql", "redis"])
async def mfa(request: pytest.FixtureRequest, harness_factory: HarnessFactory, unique_prefix: str) -> Harness:
    """Sessions, flows and one-time state on SQLite, then on real Redis."""
    prefix = unique_prefix if request.param == "redis" else None
    return await harness_factory(redis_prefix=prefix, selfservice=mfa_selfservice())


def _email() -> str:
    return f"mfa-{uuid.uuid4().hex[:10]}@example.test"


async def _user(h: Harness) -> tuple[str, str]:
    email = _email()
    r = await register_api(h.client, email)
    assert r.status_code == 200, r.text
    return email, str(r.json()["session_token"])


async def _aal1(h: Harness, email: str) -> str:
    r = await login_api(h.client, email)
    assert r.status_code == 200, r.text
    assert r.json()["session"]["authenticator_assurance_level"] == "aal1"
    return str(r.json()["session_token"])


async def _whoami(h: Harness, token: str) -> Any:
    return await h.client.get("/.auth/sessions/whoami", headers=tok(token))


async def _totp_login(h: Harness, token: str, code: str) -> Any:
    flow = await aal2_login_flow(h.client, token)
    return await submit_login(h.client, flow["id"], token, {"method": "totp", "totp_code": code})


async def test_totp_step_up_to_aal2(mfa: Harness) -> None:
    email, first = await _user(mfa)
    secret = await enrol_totp(mfa.client, first)
    me = (await _whoami(mfa, first)).json()
    assert me["authenticator_assurance_level"] == "aal2"  # enrolling proves the factor, as Kratos

    token = await _aal1(mfa, email)
    r = await _whoami(mfa, token)
    assert r.status_code == 403
    assert r.json()["error"]["id"] == "session_aal2_required"
    assert "aal=aal2" in r.json()["redirect_browser_to"]

    flow = await aal2_login_flow(mfa.client, token)
    assert flow["requested_aal"] == "aal2"
    assert 1010004 in message_ids(flow)
    groups = {n["group"] for n in flow["ui"]["nodes"]}
    assert groups == {"totp"}, groups  # no password, no identifier: only the factors this user has
    now = fresh_step()
    r = await submit_login(
        mfa.client, flow["id"], token, {"method": "totp", "totp_code": oathtool(secret, now + 30)}
    )
    assert r.status_code == 200, r.text
    session = r.json()["session"]
    assert session["authenticator_assurance_level"] == "aal2"
    assert [m["method"] for m in session["authentication_methods"]] == ["password", "totp"]
    assert r.json()["session_token"] == token
    assert (await _whoami(mfa, token)).status_code == 200


async def test_totp_clock_skew_and_replay(mfa: Harness) -> None:
    email, first = await _user(mfa)
    # Enrol and test in one 30 s step: enrolling consumes its step, so a test that crossed into
    # the next one would find "one step back" already used (a flake under load).
    fresh_step(margin=20)
    secret = await enrol_totp(mfa.client, first)
    now = time.time()
    token = await _aal1(mfa, email)
    for offset in (-90, 90):  # three steps away: refused
        r = await _totp_login(mfa, token, oathtool(secret, now + offset))
        assert r.status_code == 400, r.text
        assert 4000008 in message_ids(r.json())
    r = await _totp_login(mfa, token, oathtool(secret, now - 30))  # one step back: accepted
    assert r.status_code == 200, r.text
    token = await _aal1(mfa, email)
    r = await _totp_login(mfa, token, oathtool(secret, now + 30))  # one step ahead: accepted
    assert r.status_code == 200, r.text
    token = await _aal1(mfa, email)
    r = await _totp_login(mfa, token, oathtool(secret, now + 30))  # the same code again: refused
    assert r.status_code == 400, r.text
    assert 4000008 in message_ids(r.json())
    assert (await _whoami(mfa, token)).status_code == 403


async def test_totp_code_wins_once_under_concurrency(mfa: Harness) -> None:
    email, first = await _user(mfa)
    secret = await enrol_totp(mfa.client, first)
    tokens = [await _aal1(mfa, email) for _ in range(10)]
    flows = [await aal2_login_flow(mfa.client, t) for t in tokens]
    now = fresh_step(margin=8)
    code = oathtool(secret, now + 30)
    results = await asyncio.gather(
        *(
            submit_login(mfa.client, f["id"], t, {"method": "totp", "totp_code": code})
            for f, t in zip(flows, tokens, strict=True)
        )
    )
    statuses = sorted(r.status_code for r in results)
    # One wins; of the rest, those the brute-force throttle let through (security.rate_limit
    # free_failures: 5 in flight per identity and IP) lose on the used step, the others wait.
    assert statuses.count(200) == 1 and statuses.count(400) >= 4, statuses
    assert set(statuses) <= {200, 400, 429}


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("", id="missing"),
        pytest.param("12345", id="short"),
        pytest.param("abcdef", id="letters"),
        pytest.param("١٢٣٤٥٦", id="non-ascii-digits"),
        pytest.param("1234567", id="long"),
        pytest.param(123456, id="number"),
    ],
)
async def test_totp_bad_codes(harness_factory: HarnessFactory, code: Any) -> None:
    h = await harness_factory(selfservice=mfa_selfservice())
    email, first = await _user(h)
    await enrol_totp(h.client, first)
    token = await _aal1(h, email)
    r = await _totp_login(h, token, code)
    assert r.status_code == 400, r.text
    assert set(message_ids(r.json())) & {4000002, 4000008}


async def test_aal2_needs_a_session(mfa: Harness) -> None:
    r = await mfa.client.get("/.auth/self-service/login/api?aal=aal2")
    assert r.status_code == 401
    assert r.json()["error"]["id"] == "session_aal1_required"


async def test_second_factor_is_not_a_first_factor(mfa: Harness) -> None:
    _, first = await _user(mfa)
    secret = await enrol_totp(mfa.client, first)
    r = await mfa.client.get("/.auth/self-service/login/api")
    flow = r.json()
    assert not has_node(flow, "totp_code")
    r = await mfa.client.post(
        f"/.auth/self-service/login?flow={flow['id']}", json={"method": "totp", "totp_code": oathtool(secret)}
    )
    assert r.status_code == 400
    assert 4010002 in message_ids(r.json())


async def test_browser_password_login_continues_to_second_factor(harness_factory: HarnessFactory) -> None:
    from tests.api.public.helpers import login_browser

    h = await harness_factory(selfservice=mfa_selfservice())
    email, first = await _user(h)
    await enrol_totp(h.client, first)
    r = await login_browser(h.client, email, json_req=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("http://127.0.0.1:4433/.auth/self-service/login/browser?aal=aal2")
    r = await login_browser(h.new_client(), email, json_req=True)
    assert r.status_code == 200
    redirect = r.json()["continue_with"][0]["redirect_browser_to"]
    assert "aal=aal2" in redirect


async def test_whoami_aal1_config_allows_aal1(harness_factory: HarnessFactory) -> None:
    h = await harness_factory(selfservice=mfa_selfservice(), session={"whoami": {"required_aal": "aal1"}})
    email, first = await _user(h)
    await enrol_totp(h.client, first)
    token = await _aal1(h, email)
    assert (await _whoami(h, token)).status_code == 200


async def test_settings_need_aal2_when_available(mfa: Harness) -> None:
    email, first = await _user(mfa)
    secret = await enrol_totp(mfa.client, first)
    token = await _aal1(mfa, email)
    r = await mfa.client.get("/.auth/self-service/settings/api", headers=tok(token))
    assert r.status_code == 403
    assert r.json()["error"]["id"] == "session_aal2_required"
    assert "aal=aal2" in r.json()["redirect_browser_to"]
    now = fresh_step()
    assert (await _totp_login(mfa, token, oathtool(secret, now + 30))).status_code == 200
    r = await mfa.client.get("/.auth/self-service/settings/api", headers=tok(token))
    assert r.status_code == 200
    flow = r.json()
    assert has_node(flow, "totp_unlink") and not has_node(flow, "totp_qr")
    r = await mfa.client.post(
        f"/.auth/self-service/settings?flow={flow['id']}",
        json={"method": "totp", "totp_unlink": True},
        headers=tok(token),
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "success"
    assert has_node(r.json(), "totp_qr")  # a new secret is offered straight away
    identity = r.json()["identity"]["id"]
    admin = await mfa.admin.get(f"/admin/identities/{identity}?include_credential=totp")
    assert "totp" not in admin.json().get("credentials", {})


# --- backup codes ------------------------------------------------------------------------------


async def test_lookup_codes_generate_confirm_use_once(mfa: Harness) -> None:
    email, first = await _user(mfa)
    codes = await enrol_codes(mfa.client, first)
    assert len(codes) == 12 and len(set(codes)) == 12
    assert all(re.fullmatch(r"[a-z0-9]{8}", c) for c in codes)
    identity = (await _whoami(mfa, first)).json()["identity"]["id"]
    stored = (await mfa.admin.get(f"/admin/identities/{identity}?include_credential=lookup_secret")).json()
    assert codes[0] not in str(stored)  # hashed at rest

    token = await _aal1(mfa, email)
    flow = await aal2_login_flow(mfa.client, token)
    assert {n["group"] for n in flow["ui"]["nodes"]} == {"lookup_secret"}
    r = await submit_login(
        mfa.client, flow["id"], token, {"method": "lookup_secret", "lookup_secret": codes[0]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["session"]["authenticator_assurance_level"] == "aal2"

    token = await _aal1(mfa, email)
    flow = await aal2_login_flow(mfa.client, token)
    r = await submit_login(
        mfa.client, flow["id"], token, {"method": "lookup_secret", "lookup_secret": codes[0]}
    )
    assert r.status_code == 400
    assert 4000012 in message_ids(r.json())
    r = await submit_login(
        mfa.client, flow["id"], token, {"method": "lookup_secret", "lookup_secret": "zzzzzzzz"}
    )
    assert 4000016 in message_ids(r.json())
    r = await submit_login(
        mfa.client, flow["id"], token, {"method": "lookup_secret", "lookup_secret": f" {codes[1].upper()} "}
    )
    assert r.status_code == 200, r.text


async def test_lookup_code_wins_once_under_concurrency(mfa: Harness) -> None:
    email, first = await _user(mfa)
    codes = await enrol_codes(mfa.client, first)
    tokens = [await _aal1(mfa, email) for _ in range(10)]
    flows = [await aal2_login_flow(mfa.client, t) for t in tokens]
    results = await asyncio.gather(
        *(
            submit_login(mfa.client, f["id"], t, {"method": "lookup_secret", "lookup_secret": codes[3]})
            for f, t in zip(flows, tokens, strict=True)
        )
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) == 1 and statuses.count(400) >= 4, statuses  # as for TOTP above
    assert set(statuses) <= {200, 400, 429}


async def test_lookup_regenerate_replaces_and_disable_removes(mfa: Harness) -> None:
    email, first = await _user(mfa)
    old = await enrol_codes(mfa.client, first)
    new = await enrol_codes(mfa.client, first)
    assert not set(old) & set(new)
    token = await _aal1(mfa, email)
    flow = await aal2_login_flow(mfa.client, token)
    r = await submit_login(
        mfa.client, flow["id"], token, {"method": "lookup_secret", "lookup_secret": old[5]}
    )
    assert r.status_code == 400
    assert 4000016 in message_ids(r.json())
    r = await submit_login(
        mfa.client, flow["id"], token, {"method": "lookup_secret", "lookup_secret": new[5]}
    )
    assert r.status_code == 200

    r = await mfa.client.get("/.auth/self-service/settings/api", headers=tok(token))
    flow = r.json()
    assert has_node(flow, "lookup_secret_disable")
    r = await mfa.client.post(
        f"/.auth/self-service/settings?flow={flow['id']}",
        json={"method": "lookup_secret", "lookup_secret_disable": True},
        headers=tok(token),
    )
    assert r.status_code == 200, r.text
    token = await _aal1(mfa, email)
    assert (await _whoami(mfa, token)).status_code == 200  # nothing left to step up to


async def test_lookup_reveal_and_confirm_without_codes(mfa: Harness) -> None:
    _, token = await _user(mfa)
    r = await mfa.client.get("/.auth/self-service/settings/api", headers=tok(token))
    flow = r.json()
    for field in ("lookup_secret_confirm", "lookup_secret_reveal"):
        r = await mfa.client.post(
            f"/.auth/self-service/settings?flow={flow['id']}",
            json={"method": "lookup_secret", field: True},
            headers=tok(token),
        )
        assert r.status_code == 400, r.text
        assert r.json()["state"] == "show_form"


async def test_code_guessing_is_capped(harness_factory: HarnessFactory) -> None:
    h = await harness_factory(
        selfservice=mfa_selfservice(),
        security={"rate_limit": {"free_failures": 3, "initial_delay": "60s"}},
    )
    email, first = await _user(h)
    secret = await enrol_totp(h.client, first)
    codes = await enrol_codes(h.client, first)
    token = await _aal1(h, email)
    flow = await aal2_login_flow(h.client, token)
    for _ in range(3):
        r = await submit_login(h.client, flow["id"], token, {"method": "totp", "totp_code": "000000"})
        assert r.status_code == 400
    now = fresh_step()
    r = await submit_login(
        h.client, flow["id"], token, {"method": "totp", "totp_code": oathtool(secret, now + 30)}
    )
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert 4000429 in message_ids(r.json())
    # A new flow does not reset the per-identity count; backup codes have their own.
    again = await aal2_login_flow(h.client, token)
    r = await submit_login(
        h.client, again["id"], token, {"method": "totp", "totp_code": oathtool(secret, now + 30)}
    )
    assert r.status_code == 429
    r = await submit_login(
        h.client, again["id"], token, {"method": "lookup_secret", "lookup_secret": codes[0]}
    )
    assert r.status_code == 200, r.text

"""Console sign-in: the admin key (or loopback without one) for a Strict, HttpOnly session cookie
with its own CSRF token; sign-out and expiry end it; nothing of it on the public listener."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sidecar.app import create_public_app
from tests.console.conftest import KEY, MakeConsole, csrf_of


async def test_signed_out_visitors_are_sent_to_sign_in(make_console: MakeConsole) -> None:
    console = await make_console()
    r = await console.client.get("/console/identities?q=ada")
    assert r.status_code == 303
    assert r.headers["location"] == "/console/login?next=%2Fconsole%2Fidentities%3Fq%3Dada"
    page = await console.client.get(r.headers["location"])
    assert page.status_code == 200
    assert "Admin API key" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


async def test_sign_in_with_the_key_sets_a_strict_httponly_cookie(
    make_console: MakeConsole, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    console = await make_console()
    wrong = await console.sign_in("not-the-key")
    assert wrong.status_code == 401
    assert "not the admin API key" in wrong.text
    assert "sidecar_console=" not in wrong.headers.get("set-cookie", "")
    ok = await console.sign_in()
    assert ok.status_code == 303 and ok.headers["location"] == "/console"
    cookie = next(c for c in ok.headers.get_list("set-cookie") if c.startswith("sidecar_console="))
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/console" in lowered
    assert "max-age=3600" in lowered
    home = await console.client.get("/console")
    assert home.status_code == 200 and 'id="identity-count">0<' in home.text
    assert [(a["action"], a["result"]) for a in audit()] == [
        ("console.sign_in", "refused"),
        ("console.sign_in", "ok"),
    ]
    assert audit()[1]["actor"] == "Ada Admin" and audit()[1]["actor_via"] == "api_key"


async def test_the_console_needs_no_bearer_but_the_api_still_does(make_console: MakeConsole) -> None:
    console = await make_console()
    await console.sign_in()
    assert (await console.client.get("/admin/identities")).status_code == 401
    assert (await console.client.get("/console/identities")).status_code == 200


async def test_without_a_key_only_loopback_may_sign_in(make_console: MakeConsole) -> None:
    local = await make_console(serve={"admin": {}})
    page = await local.client.get("/console/login")
    assert "Admin API key" not in page.text
    r = await local.sign_in(key="")
    assert r.status_code == 303
    assert (await local.client.get("/console")).status_code == 200

    remote = await make_console(client_ip="10.1.2.3", serve={"admin": {}})
    page = await remote.client.get("/console/login")
    assert "only from this machine" in page.text and 'name="api_key"' not in page.text
    form = {"csrf_token": remote.client.cookies["sidecar_console_csrf"], "api_key": "", "name": "x"}
    refused = await remote.client.post("/console/login", data=form)
    assert refused.status_code == 403
    assert (await remote.client.get("/console")).status_code == 303


async def test_a_key_is_needed_from_loopback_too_when_one_is_set(make_console: MakeConsole) -> None:
    console = await make_console()
    assert (await console.sign_in(key="")).status_code == 401


async def test_failed_sign_ins_are_limited_per_address(make_console: MakeConsole) -> None:
    console = await make_console(client_ip="10.9.9.9")
    for _ in range(10):
        assert (await console.sign_in("guess")).status_code == 401
    blocked = await console.sign_in()  # even the right key, until the window passes
    assert blocked.status_code == 429


async def test_posts_need_the_session_csrf_token_and_the_same_site(
    make_console: MakeConsole, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    console = await make_console()
    await console.sign_in()
    c = console.client
    assert (await c.post("/console/logout", data={})).status_code == 403
    assert (await c.post("/console/logout", data={"csrf_token": "forged"})).status_code == 403
    token = await console.csrf()
    cross = await c.post(
        "/console/logout", data={"csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status_code == 403
    other = await c.post(
        "/console/logout", data={"csrf_token": token}, headers={"Origin": "http://evil.test"}
    )
    assert other.status_code == 403
    assert (await c.get("/console")).status_code == 200  # still signed in
    actions = [(a["action"], a["result"]) for a in audit()]
    assert actions.count(("csrf.token", "refused")) == 2 and ("csrf.cross_site", "refused") in actions
    # A login form without its double-submit cookie is refused too.
    c.cookies.delete("sidecar_console_csrf")
    fresh = httpx.AsyncClient(transport=c._transport, base_url=str(c.base_url))
    page = await fresh.get("/console/login")
    fresh.cookies.clear()
    form = {"csrf_token": csrf_of(page.text), "api_key": KEY}
    assert (await fresh.post("/console/login", data=form)).status_code == 403
    await fresh.aclose()


async def test_sign_out_ends_the_session_everywhere(make_console: MakeConsole) -> None:
    console = await make_console()
    await console.sign_in()
    stolen = console.client.cookies.get("sidecar_console", path="/console")
    assert stolen
    out = await console.post("/console/logout")
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert (await console.client.get("/console")).status_code == 303
    # The old cookie value is worthless: the server-side record is gone.
    console.client.cookies.set("sidecar_console", stolen, domain="127.0.0.1", path="/console")
    replay = await console.client.get("/console")
    assert replay.status_code == 303


async def test_sessions_expire(make_console: MakeConsole) -> None:
    console = await make_console(serve={"admin": {"api_key": KEY, "console": {"session_lifespan": "1s"}}})
    await console.sign_in()
    assert (await console.client.get("/console")).status_code == 200
    await asyncio.sleep(1.2)
    assert (await console.client.get("/console")).status_code == 303


async def test_next_never_leaves_the_console(make_console: MakeConsole) -> None:
    console = await make_console()
    page = await console.client.get("/console/login?next=https://evil.test/")
    form = {"csrf_token": csrf_of(page.text), "api_key": KEY, "next": "//evil.test/console/"}
    r = await console.client.post("/console/login", data=form)
    assert r.headers["location"] == "/console"


async def test_nothing_of_the_console_is_on_the_public_listener(make_console: MakeConsole) -> None:
    console = await make_console()
    public = create_public_app(console.services, manage_lifespan=False, gateway=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=public), base_url="http://127.0.0.1:4433"
    ) as c:
        for path in ("/console", "/console/login", "/.auth/console", "/.auth/console/login"):
            r = await c.get(path)
            assert r.status_code == 404, path
            assert "console" not in r.text.lower() or r.headers["content-type"].startswith("application/json")


async def test_origin_null_is_believed_only_with_same_origin_fetch_metadata(
    make_console: MakeConsole,
) -> None:
    console = await make_console()
    await console.sign_in()
    token = await console.csrf()
    headers = {"Origin": "null"}
    refused = await console.client.post("/console/logout", data={"csrf_token": token}, headers=headers)
    assert refused.status_code == 403
    headers["Sec-Fetch-Site"] = "same-origin"
    ok = await console.client.post("/console/logout", data={"csrf_token": token}, headers=headers)
    assert ok.status_code == 303


async def raw_get(app: Any, path: str) -> tuple[int, bytes]:
    """A request with exactly this path (httpx would resolve the dot segments first)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:4434")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 4434),
    }
    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


@pytest.mark.parametrize(
    "path",
    [
        "/console/../identities",
        "/console/../admin/identities",
        "/console/%2e%2e/identities",
        "/console/..%2fidentities",
        "/console/static/../../identities",
        "/console/./../metrics",
    ],
)
async def test_the_console_prefix_opens_no_way_around_the_admin_key(
    make_console: MakeConsole, path: str
) -> None:
    console = await make_console()
    status, body = await raw_get(console.app, path)
    assert status in (401, 404), (path, status)
    assert not body.startswith(b"[") and b"sidecar_" not in body  # no identity list, no metrics


async def test_a_store_outage_is_a_503_page_never_a_500(
    make_console: MakeConsole, unique_prefix: str
) -> None:
    from tests.conftest import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    console = await make_console(redis={"url": dead, "key_prefix": unique_prefix})
    refused = await console.sign_in()
    assert refused.status_code == 503 and "unavailable" in refused.text.lower()
    console.client.cookies.set("sidecar_console", "x" * 43, domain="127.0.0.1", path="/console")
    for path in ("/console", "/console/login"):
        r = await console.client.get(path)
        assert r.status_code == 503, path
        assert r.headers["content-type"].startswith("text/html")
    posted = await console.client.post("/console/logout", data={"csrf_token": "x"})
    assert posted.status_code == 503

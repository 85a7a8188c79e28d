"""Real nginx with ``auth_request`` to ``/.auth/authz/nginx`` (proxy-conventions.md "nginx"),
running ``examples/nginx/sidecar.conf`` exactly as shipped (and shown in docs/DEPLOY.md), with
only its ports swapped for free ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.auth_proxy import (
    assert_api_client_gets_401,
    assert_browser_sent_to_login,
    assert_identity_reaches_upstream,
    assert_spoofed_user_id_dropped,
    example_stack,
    replace_once,
)
from tests.proxy.harness import echoed, get, header_values, make_user, nginx_http_server

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nginx" / "sidecar.conf"


def render(sidecar: int, upstream: int, port: int) -> str:
    text = EXAMPLE.read_text()
    text = replace_once(text, "server 127.0.0.1:4433;", f"server 127.0.0.1:{sidecar};")
    text = replace_once(text, "server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream};")
    return replace_once(text, "listen 80;", f"listen 127.0.0.1:{port};")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    with example_stack(tmp_path_factory.mktemp("nginx"), nginx_http_server, render) as (sidecar, nginx):
        yield sidecar, nginx


def test_anonymous_browser_is_sent_to_login_through_error_page(stack: Any) -> None:
    # The login URL's return_to keeps the port the browser used ($http_host, not $host).
    assert_browser_sent_to_login(*stack)


def test_anonymous_api_client_gets_401(stack: Any) -> None:
    _, nginx = stack
    status, headers, _ = get(nginx.port, "/private/page", {"Accept": "application/json"})
    assert status == 401 and "location" not in headers, headers  # not a 302 to an empty Location
    assert_api_client_gets_401(nginx)  # with WWW-Authenticate (auth_request passes no body)


async def test_signed_in_user_reaches_upstream_with_identity(stack: Any) -> None:
    identity, doc = await assert_identity_reaches_upstream(*stack)
    assert header_values(doc, "x-user-email") == [identity.traits["email"]]


@pytest.mark.parametrize("name", ["X-User-ID", "x-user-id", "X-USER-ID", "X_User_ID", "X-User-Email"])
async def test_spoofed_user_id_never_reaches_upstream(stack: Any, name: str) -> None:
    sidecar, proxy = stack
    await assert_spoofed_user_id_dropped(sidecar, proxy, name)


@pytest.mark.parametrize("name", ["X-User-AAL", "x-user-aal", "X_User_AAL"])
async def test_spoofed_aal_never_reaches_upstream(stack: Any, name: str) -> None:
    """A client's ``X-User-AAL: aal2`` must not turn an aal1 (or anonymous) request into aal2."""
    sidecar, nginx = stack
    status, _, body = get(nginx.port, "/public/page", [(name, "aal2")])
    assert status == 200
    assert header_values(echoed(body), "x-user-aal") == []
    _, _, token = await make_user(sidecar.config, email=f"aal-{name}@example.com")
    status, _, body = get(nginx.port, "/private/page", [(name, "aal2"), ("X-Session-Token", token)])
    assert status == 200
    assert header_values(echoed(body), "x-user-aal") == ["aal1"]


def test_untrusted_peer_cannot_use_the_nginx_endpoint_directly(stack: Any, tmp_path: Any) -> None:
    sidecar, _ = stack
    # From a trusted peer (loopback) without X-Original-URI there is nothing to judge.
    status, _, _ = get(sidecar.proc.port, "/.auth/authz/nginx")
    assert status == 400

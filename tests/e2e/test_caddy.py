"""Real Caddy with ``forward_auth`` to ``/.auth/authz/forward-auth`` (proxy-conventions.md "Caddy"),
running ``examples/caddy/Caddyfile`` as shipped, with the site address turned into a local
``http://`` one as the file's own comment says, and free ports."""

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
from tests.proxy.harness import caddy_file_server, echoed, get, header_values, make_user

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "caddy" / "Caddyfile"


def render(sidecar: int, upstream: int, port: int) -> str:
    text = EXAMPLE.read_text()
    # The local-use line from the file's comment: an http:// site address, no ACME.
    text = replace_once(text, "\napp.example.com {", f"\nhttp://127.0.0.1:{port} {{")
    text = replace_once(text, "reverse_proxy 127.0.0.1:4433", f"reverse_proxy 127.0.0.1:{sidecar}")
    text = replace_once(text, "forward_auth 127.0.0.1:4433", f"forward_auth 127.0.0.1:{sidecar}")
    return replace_once(text, "reverse_proxy 127.0.0.1:8080", f"reverse_proxy 127.0.0.1:{upstream}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    with example_stack(tmp_path_factory.mktemp("caddy"), caddy_file_server, render) as (sidecar, caddy):
        yield sidecar, caddy


def test_anonymous_browser_is_redirected_to_login(stack: Any) -> None:
    assert_browser_sent_to_login(*stack)


def test_anonymous_api_client_gets_401_json(stack: Any) -> None:
    _, caddy = stack
    assert b"session_inactive" in assert_api_client_gets_401(caddy)


async def test_signed_in_user_reaches_upstream_with_identity(stack: Any) -> None:
    await assert_identity_reaches_upstream(*stack)


@pytest.mark.parametrize("name", ["X-User-ID", "x-user-id", "X-USER-ID", "X-User-Email"])
async def test_spoofed_user_id_never_reaches_upstream(stack: Any, name: str) -> None:
    sidecar, proxy = stack
    await assert_spoofed_user_id_dropped(sidecar, proxy, name)


async def test_spoofed_aal_never_reaches_upstream(stack: Any) -> None:
    sidecar, caddy = stack
    status, _, body = get(caddy.port, "/public/page", [("X-User-AAL", "aal2")])
    # The sidecar answers every identity header, empty when anonymous, so Caddy overwrites the copy.
    assert status == 200 and header_values(echoed(body), "x-user-aal") in ([], [""])
    _, _, token = await make_user(sidecar.config, email="caddy-aal@example.com")
    status, _, body = get(caddy.port, "/private/page", [("X-User-AAL", "aal2"), ("X-Session-Token", token)])
    assert status == 200 and header_values(echoed(body), "x-user-aal") == ["aal1"]


def test_forward_auth_needs_a_trusted_peer_and_the_original_uri(stack: Any) -> None:
    sidecar, _ = stack
    assert get(sidecar.proc.port, "/.auth/authz/forward-auth")[0] == 400

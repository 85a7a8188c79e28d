"""Real Caddy with ``forward_auth`` to ``/.auth/authz/forward-auth`` (proxy-conventions.md "Caddy")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.auth_proxy import (
    assert_api_client_gets_401,
    assert_browser_sent_to_login,
    assert_identity_reaches_upstream,
    assert_spoofed_user_id_dropped,
    proxied_stack,
)
from tests.proxy.harness import caddy_server, get

pytestmark = pytest.mark.e2e

# The shape of examples/caddy/Caddyfile, with test ports.
SITE = """
  handle /.auth/* {{
    reverse_proxy 127.0.0.1:{sidecar}
  }}
  handle {{
    forward_auth 127.0.0.1:{sidecar} {{
      uri /.auth/authz/forward-auth
      copy_headers X-User-ID X-User-Email X-User-AAL
    }}
    reverse_proxy 127.0.0.1:{upstream}
  }}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    with proxied_stack(tmp_path_factory.mktemp("caddy"), caddy_server, SITE) as (sidecar, caddy):
        yield sidecar, caddy


def test_anonymous_browser_is_redirected_to_login(stack: Any) -> None:
    assert_browser_sent_to_login(*stack)


def test_anonymous_api_client_gets_401_json(stack: Any) -> None:
    _, caddy = stack
    assert b"session_inactive" in assert_api_client_gets_401(caddy)


async def test_signed_in_user_reaches_upstream_with_identity(stack: Any) -> None:
    await assert_identity_reaches_upstream(*stack)


@pytest.mark.parametrize("name", ["X-User-ID", "x-user-id", "X-USER-ID"])
async def test_spoofed_user_id_never_reaches_upstream(stack: Any, name: str) -> None:
    sidecar, proxy = stack
    await assert_spoofed_user_id_dropped(sidecar, proxy, name)


def test_forward_auth_needs_a_trusted_peer_and_the_original_uri(stack: Any) -> None:
    sidecar, _ = stack
    assert get(sidecar.proc.port, "/.auth/authz/forward-auth")[0] == 400

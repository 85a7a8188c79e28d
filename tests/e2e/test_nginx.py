"""Real nginx with ``auth_request`` to ``/.auth/authz/nginx`` (proxy-conventions.md "nginx")."""

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
from tests.proxy.harness import get, header_values, nginx_server

pytestmark = pytest.mark.e2e

# The shape of examples/nginx/sidecar.conf, with test ports.
SERVER = """
    location = /_sidecar_auth {{
      internal;
      proxy_pass http://127.0.0.1:{sidecar}/.auth/authz/nginx;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
    location /.auth/ {{
      proxy_pass http://127.0.0.1:{sidecar};
      proxy_set_header Host $http_host;
    }}
    location / {{
      auth_request /_sidecar_auth;
      auth_request_set $sidecar_user_id $upstream_http_x_user_id;
      auth_request_set $sidecar_user_email $upstream_http_x_user_email;
      auth_request_set $sidecar_user_aal $upstream_http_x_user_aal;
      auth_request_set $sidecar_login $upstream_http_location;
      error_page 401 = @sidecar_login;
      proxy_set_header X-User-ID $sidecar_user_id;
      proxy_set_header X-User-Email $sidecar_user_email;
      proxy_set_header X-User-AAL $sidecar_user_aal;
      proxy_pass http://127.0.0.1:{upstream};
    }}
    location @sidecar_login {{
      if ($sidecar_login) {{
        return 302 $sidecar_login;
      }}
      return 401;
    }}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    with proxied_stack(tmp_path_factory.mktemp("nginx"), nginx_server, SERVER) as (sidecar, nginx):
        yield sidecar, nginx


def test_anonymous_browser_is_sent_to_login_through_error_page(stack: Any) -> None:
    assert_browser_sent_to_login(*stack)


def test_anonymous_api_client_gets_401(stack: Any) -> None:
    _, nginx = stack
    assert_api_client_gets_401(nginx)


async def test_signed_in_user_reaches_upstream_with_identity(stack: Any) -> None:
    identity, doc = await assert_identity_reaches_upstream(*stack)
    assert header_values(doc, "x-user-email") == [identity.traits["email"]]


@pytest.mark.parametrize("name", ["X-User-ID", "x-user-id", "X-USER-ID", "X_User_ID"])
async def test_spoofed_user_id_never_reaches_upstream(stack: Any, name: str) -> None:
    sidecar, proxy = stack
    await assert_spoofed_user_id_dropped(sidecar, proxy, name)


def test_untrusted_peer_cannot_use_the_nginx_endpoint_directly(stack: Any, tmp_path: Any) -> None:
    sidecar, _ = stack
    # From a trusted peer (loopback) without X-Original-URI there is nothing to judge.
    status, _, _ = get(sidecar.proc.port, "/.auth/authz/nginx")
    assert status == 400

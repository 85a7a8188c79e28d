"""Real nginx with ``auth_request`` to ``/.auth/authz/nginx`` (proxy-conventions.md "nginx")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.proxy.harness import (
    echoed,
    get,
    header_values,
    make_user,
    nginx_server,
    sidecar_server,
    upstream_server,
)

pytestmark = pytest.mark.e2e

RULES = """
version: 1
rules:
  - id: public
    match: { paths: ["/public/**"] }
    require: public
  - id: private
    match: { paths: ["/private/**"] }
    require: authenticated
"""

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
    tmp = tmp_path_factory.mktemp("nginx")
    (tmp / "rules.yaml").write_text(RULES)
    with (
        upstream_server() as upstream,
        sidecar_server(tmp, rules=[str(tmp / "rules.yaml")]) as sidecar,
        nginx_server(tmp, SERVER.format(sidecar=sidecar.proc.port, upstream=upstream.port)) as nginx,
    ):
        yield sidecar, nginx


def test_anonymous_browser_is_sent_to_login_through_error_page(stack: Any) -> None:
    sidecar, nginx = stack
    status, headers, _ = get(
        nginx.port, "/private/page?x=1", {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
    )
    assert status == 302
    location = urlsplit(headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        sidecar.config.public_base_url + "/self-service/login/browser"
    )
    assert parse_qs(location.query)["return_to"] == [f"http://127.0.0.1:{nginx.port}/private/page?x=1"]


def test_anonymous_api_client_gets_401(stack: Any) -> None:
    _, nginx = stack
    status, headers, _ = get(nginx.port, "/private/page", {"Accept": "application/json"})
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")


async def test_signed_in_user_reaches_upstream_with_identity(stack: Any) -> None:
    sidecar, nginx = stack
    identity, _, token = await make_user(sidecar.config)
    status, _, body = get(nginx.port, "/private/page", {"Cookie": f"ory_kratos_session={token}"})
    assert status == 200, body
    doc = echoed(body)
    assert header_values(doc, "x-user-id") == [str(identity.id)]
    assert header_values(doc, "x-user-email") == [identity.traits["email"]]
    assert header_values(doc, "x-user-aal") == ["aal1"]


@pytest.mark.parametrize("name", ["X-User-ID", "x-user-id", "X-USER-ID", "X_User_ID"])
async def test_spoofed_user_id_never_reaches_upstream(stack: Any, name: str) -> None:
    sidecar, nginx = stack
    status, _, body = get(nginx.port, "/public/page", [(name, "evil"), (name, "evil2")])
    assert status == 200
    assert not any("evil" in v for _, v in echoed(body)["headers"])
    identity, _, token = await make_user(sidecar.config, email=f"spoof-{name}@example.com")
    status, _, body = get(nginx.port, "/private/page", [(name, "evil"), ("X-Session-Token", token)])
    assert status == 200
    doc = echoed(body)
    assert header_values(doc, "x-user-id") == [str(identity.id)]
    assert not any("evil" in v for _, v in doc["headers"])


def test_untrusted_peer_cannot_use_the_nginx_endpoint_directly(stack: Any, tmp_path: Any) -> None:
    sidecar, _ = stack
    # From a trusted peer (loopback) without X-Original-URI there is nothing to judge.
    status, _, _ = get(sidecar.proc.port, "/.auth/authz/nginx")
    assert status == 400

"""Real Caddy with ``forward_auth`` to ``/.auth/authz/forward-auth`` (proxy-conventions.md "Caddy")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.proxy.harness import (
    caddy_server,
    echoed,
    get,
    header_values,
    make_user,
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
    tmp = tmp_path_factory.mktemp("caddy")
    (tmp / "rules.yaml").write_text(RULES)
    with (
        upstream_server() as upstream,
        sidecar_server(tmp, rules=[str(tmp / "rules.yaml")]) as sidecar,
        caddy_server(tmp, SITE.format(sidecar=sidecar.proc.port, upstream=upstream.port)) as caddy,
    ):
        yield sidecar, caddy


def test_anonymous_browser_is_redirected_to_login(stack: Any) -> None:
    sidecar, caddy = stack
    status, headers, _ = get(
        caddy.port, "/private/page?x=1", {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
    )
    assert status == 302
    location = urlsplit(headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        sidecar.config.public_base_url + "/self-service/login/browser"
    )
    assert parse_qs(location.query)["return_to"] == [f"http://127.0.0.1:{caddy.port}/private/page?x=1"]


def test_anonymous_api_client_gets_401_json(stack: Any) -> None:
    _, caddy = stack
    status, headers, body = get(caddy.port, "/private/page", {"Accept": "application/json"})
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert b"session_inactive" in body


async def test_signed_in_user_reaches_upstream_with_identity(stack: Any) -> None:
    sidecar, caddy = stack
    identity, _, token = await make_user(sidecar.config)
    status, _, body = get(caddy.port, "/private/page", {"Cookie": f"ory_kratos_session={token}"})
    assert status == 200, body
    doc = echoed(body)
    assert header_values(doc, "x-user-id") == [str(identity.id)]
    assert header_values(doc, "x-user-aal") == ["aal1"]


@pytest.mark.parametrize("name", ["X-User-ID", "x-user-id", "X-USER-ID"])
async def test_spoofed_user_id_never_reaches_upstream(stack: Any, name: str) -> None:
    sidecar, caddy = stack
    status, _, body = get(caddy.port, "/public/page", [(name, "evil"), (name, "evil2")])
    assert status == 200
    assert not any("evil" in v for _, v in echoed(body)["headers"])
    identity, _, token = await make_user(sidecar.config, email=f"spoof-{name}@example.com")
    status, _, body = get(caddy.port, "/private/page", [(name, "evil"), ("X-Session-Token", token)])
    assert status == 200
    doc = echoed(body)
    assert header_values(doc, "x-user-id") == [str(identity.id)]
    assert not any("evil" in v for _, v in doc["headers"])


def test_forward_auth_needs_a_trusted_peer_and_the_original_uri(stack: Any) -> None:
    sidecar, _ = stack
    assert get(sidecar.proc.port, "/.auth/authz/forward-auth")[0] == 400

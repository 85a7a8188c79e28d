"""Decision endpoints in each proxy's dialect (proxy-conventions.md "Outcomes per dialect")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.proxy.harness import get, make_user, sidecar_server

RULES = """
version: 1
rules:
  - {id: public, match: {paths: ["/public/**"]}, require: public}
  - {id: private, match: {paths: ["/private/**"]}, require: authenticated}
  - {id: mfa, match: {paths: ["/mfa/**"]}, require: {level: authenticated, aal: aal2}}
  - id: tagged
    match: {paths: ["/tagged"]}
    require: authenticated
    headers: {X-User-Roles: "{metadata_public.roles|join(';')}"}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("decisions")
    (tmp / "rules.yaml").write_text(RULES)
    with sidecar_server(tmp, rules=[str(tmp / "rules.yaml")]) as sidecar:
        yield sidecar


@pytest.fixture(scope="module")
async def user(stack: Any) -> Any:
    return await make_user(stack.config, metadata_public={"roles": ["a", "b"]})


def nginx(stack: Any, uri: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    base = {
        "X-Original-Method": "GET",
        "X-Original-URI": uri,
        "X-Forwarded-Host": "app.test",
        "X-Forwarded-Proto": "https",
    }
    return get(stack.proc.port, "/.auth/authz/nginx", {**base, **headers})


def test_nginx_allow_sends_every_identity_header(stack: Any, user: Any) -> None:
    status, headers, body = nginx(stack, "/tagged", **{"X-Session-Token": user[2]})
    assert status == 200 and body == b""
    assert headers["x-user-id"] == str(user[0].id) and headers["x-user-roles"] == "a;b"
    assert headers["x-user-aal"] == "aal1" and headers["x-user-email"] == "alice@example.com"


def test_nginx_anonymous_public_gets_empty_headers(stack: Any) -> None:
    status, headers, _ = nginx(stack, "/public/x", **{"X-User-ID": "evil"})
    assert status == 200 and headers["x-user-id"] == ""  # an empty value makes nginx drop the client copy


def test_nginx_never_answers_a_redirect(stack: Any, user: Any) -> None:
    status, headers, _ = nginx(stack, "/private/x?y=1", Accept="text/html")
    assert status == 401 and "return_to=https%3A%2F%2Fapp.test%2Fprivate%2Fx%3Fy%3D1" in headers["location"]
    status, headers, _ = nginx(stack, "/mfa/x", Accept="text/html", Cookie=f"ory_kratos_session={user[2]}")
    assert status == 401 and "aal=aal2" in headers["location"]
    status, _, body = nginx(stack, "/mfa/x", **{"X-Session-Token": user[2]})
    assert status == 403 and json.loads(body)["error"]["id"] == "session_aal2_required"
    assert nginx(stack, "/nowhere", **{"X-Session-Token": user[2]})[0] == 403
    assert nginx(stack, "/public/%2f")[0] == 400


def test_forward_auth_redirects_browsers(stack: Any) -> None:
    base = {"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/private/x", "X-Forwarded-Host": "app.test"}
    status, headers, _ = get(stack.proc.port, "/.auth/authz/forward-auth", {**base, "Accept": "text/html"})
    assert status == 303 and headers["location"].startswith(
        stack.config.public_base_url + "/self-service/login/browser"
    )
    status, headers, body = get(stack.proc.port, "/.auth/authz/forward-auth", base)
    assert (
        status == 401
        and headers["www-authenticate"]
        and json.loads(body)["error"]["id"] == "session_inactive"
    )


def test_envoy_lists_headers_to_remove(stack: Any, user: Any) -> None:
    status, headers, _ = get(stack.proc.port, "/.auth/authz/envoy/public/x")
    assert status == 200
    assert set(headers["x-envoy-auth-headers-to-remove"].split(", ")) >= {
        "x-user-id",
        "x-user-email",
        "x-user-aal",
    }
    status, headers, _ = get(
        stack.proc.port, "/.auth/authz/envoy/private/x?q=1", {"X-Session-Token": user[2]}
    )
    assert status == 200 and headers["x-user-id"] == str(user[0].id)
    assert "x-user-id" not in headers.get("x-envoy-auth-headers-to-remove", "")


def test_oathkeeper_decisions(stack: Any, user: Any) -> None:
    assert get(stack.proc.port, "/.auth/decisions/private/x", {"Accept": "text/html"})[0] == 401
    status, headers, _ = get(stack.proc.port, "/.auth/decisions/private/x", {"X-Session-Token": user[2]})
    assert status == 200 and headers["x-user-id"] == str(user[0].id)
    assert get(stack.proc.port, "/.auth/decisions/unknown")[0] == 403
    # From a trusted peer, X-Forwarded-Uri names the judged path (query cut).
    status, _, _ = get(stack.proc.port, "/.auth/decisions", {"X-Forwarded-Uri": "/public/x?y"})
    assert status == 200


async def test_forwarded_headers_from_untrusted_peers_are_not_used(tmp_path: Any) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    with sidecar_server(
        tmp_path, rules=[str(tmp_path / "rules.yaml")], serve={"public": {"trusted_proxies": ["10.0.0.0/8"]}}
    ) as sidecar:
        port = sidecar.proc.port
        assert get(port, "/.auth/authz/nginx", {"X-Original-URI": "/public/x"})[0] == 400
        headers = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/public/x"}
        assert get(port, "/.auth/authz/forward-auth", headers)[0] == 400
        # decisions: the suffix is judged, not the forged X-Forwarded-Uri.
        assert get(port, "/.auth/decisions/private/x", {"X-Forwarded-Uri": "/public/x"})[0] == 401
        _, headers2, _ = get(
            port, "/.auth/decisions/private/x", {"Accept": "text/html", "X-Forwarded-Host": "evil.test"}
        )
        assert "evil.test" not in headers2.get("location", "")

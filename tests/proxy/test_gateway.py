"""Proxy mode against a real upstream process: decisions, header spoofing, path bypasses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.harness import (
    Sidecar,
    echoed,
    get,
    header_values,
    make_user,
    raw_request,
    sidecar_server,
    upstream_server,
)

RULES = """
version: 1
rules:
  - id: public
    match: { paths: ["/public/**"] }
    require: public
  - id: home
    match: { paths: [/home] }
    require: optional
  - id: admin
    match: { paths: ["/admin/**"] }
    require: { level: authenticated, roles: [admin] }
  - id: mfa
    match: { paths: ["/mfa/**"] }
    require: { level: authenticated, aal: aal2 }
  - id: api
    match: { paths: ["/api/**"] }
    require: authenticated
    on_unauthenticated: json
    headers: { X-User-Roles: "{identity.metadata_public.roles|join(',')}" }
    upstream_jwt: { audience: orders, ttl: 30s }
  - id: private
    match: { paths: ["/private/**", /upload, /download, /slow, /ws] }
    require: authenticated
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sidecar, Any]]:
    tmp = tmp_path_factory.mktemp("gateway")
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    with (
        upstream_server() as upstream,
        sidecar_server(
            tmp, proxy={"upstream": upstream.url, "timeouts": {"read": "1s"}}, rules=[str(rules)]
        ) as sidecar,
    ):
        yield sidecar, upstream


@pytest.fixture(scope="module")
async def alice(env: tuple[Sidecar, Any]) -> tuple[Any, Any, str]:
    return await make_user(env[0].config, metadata_public={"roles": ["admin", "ops"]})


@pytest.fixture(scope="module")
async def bob(env: tuple[Sidecar, Any]) -> tuple[Any, Any, str]:
    return await make_user(env[0].config, email="bob@example.com")


def port(env: tuple[Sidecar, Any]) -> int:
    return env[0].proc.port


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"theme=dark; ory_kratos_session={token}"}


# --- decisions --------------------------------------------------------------------------------


def test_public_route_is_served_anonymously(env: Any) -> None:
    status, _, body = get(port(env), "/public/x?a=1")
    assert status == 200
    doc = echoed(body)
    assert doc["path"] == "/public/x" and doc["query"] == "a=1"
    assert header_values(doc, "x-user-id") == []


def test_browser_without_session_is_redirected_to_login(env: Any) -> None:
    status, headers, _ = get(
        port(env), "/private/page?x=1", {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
    )
    assert status == 302
    base = env[0].config.public_base_url
    assert headers["location"] == (
        f"{base}/self-service/login/browser?return_to=http%3A%2F%2F127.0.0.1%3A{port(env)}%2Fprivate%2Fpage%3Fx%3D1"
    )


def test_browser_post_without_session_gets_303(env: Any) -> None:
    req = (
        "POST /private/form HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nContent-Length: 0\r\n"
        "Connection: close\r\n\r\n"
    )
    status, headers, _ = raw_request(port(env), req.encode())
    assert status == 303 and "/self-service/login/browser" in headers["location"]


def test_api_client_without_session_gets_401_json(env: Any) -> None:
    status, headers, body = get(port(env), "/private/x", {"Accept": "application/json"})
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert json.loads(body)["error"]["id"] == "session_inactive"


def test_rule_can_force_json(env: Any) -> None:
    status, _, body = get(port(env), "/api/x", {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"})
    assert status == 401 and json.loads(body)["error"]["id"] == "session_inactive"


def test_unknown_token_is_no_session(env: Any) -> None:
    status, _, _ = get(port(env), "/private/x", {"X-Session-Token": "ory_st_madeup"})
    assert status == 401


def test_no_rule_matched_is_403(env: Any, alice: Any) -> None:
    status, _, body = get(port(env), "/elsewhere", {"Accept": "application/json", **cookie(alice[2])})
    assert status == 403 and json.loads(body)["error"]["code"] == 403


async def test_signed_in_user_reaches_upstream_with_identity(env: Any, alice: Any) -> None:
    identity, _, token = alice
    for headers in (cookie(token), {"X-Session-Token": token}, {"Authorization": f"Bearer {token}"}):
        status, _, body = get(port(env), "/private/x", headers)
        assert status == 200, body
        doc = echoed(body)
        assert header_values(doc, "x-user-id") == [str(identity.id)]
        assert header_values(doc, "x-user-email") == ["alice@example.com"]
        assert header_values(doc, "x-user-aal") == ["aal1"]
        # The sidecar's own credentials never reach the app; other cookies do.
        assert header_values(doc, "x-session-token") == []
        assert all(token not in v for _, v in doc["headers"])
    status, _, body = get(port(env), "/private/x", cookie(token))
    assert header_values(echoed(body), "cookie") == ["theme=dark"]


def test_optional_route_with_and_without_session(env: Any, alice: Any) -> None:
    status, _, body = get(port(env), "/home")
    assert status == 200 and header_values(echoed(body), "x-user-id") == []
    status, _, body = get(port(env), "/home", cookie(alice[2]))
    assert status == 200 and header_values(echoed(body), "x-user-id") == [str(alice[0].id)]


def test_roles_condition(env: Any, alice: Any, bob: Any) -> None:
    assert get(port(env), "/admin/x", cookie(alice[2]))[0] == 200
    status, headers, body = get(port(env), "/admin/x", {"Accept": "text/html", **cookie(bob[2])})
    assert status == 403 and headers["content-type"].startswith("text/html")
    status, _, body = get(port(env), "/admin/x", {"Accept": "application/json", **cookie(bob[2])})
    assert status == 403 and json.loads(body)["error"]["code"] == 403


def test_step_up_for_aal2(env: Any, alice: Any) -> None:
    status, headers, _ = get(port(env), "/mfa/x", {"Accept": "text/html", **cookie(alice[2])})
    assert status == 303 and "aal=aal2" in headers["location"] and "return_to=" in headers["location"]
    status, _, body = get(port(env), "/mfa/x", {"X-Session-Token": alice[2]})
    assert status == 403 and json.loads(body)["error"]["id"] == "session_aal2_required"
    assert "/self-service/login/browser?aal=aal2&return_to=" in json.loads(body)["redirect_browser_to"]


async def test_aal2_session_passes(env: Any) -> None:
    _, _, token = await make_user(env[0].config, email="carol@example.com", aal="aal2")
    status, _, body = get(port(env), "/mfa/x", {"X-Session-Token": token})
    assert status == 200 and header_values(echoed(body), "x-user-aal") == ["aal2"]


def test_templated_headers_and_jwt(env: Any, alice: Any) -> None:
    from joserfc import jwt
    from joserfc.jwk import KeySet

    status, _, body = get(port(env), "/api/orders", {"X-Session-Token": alice[2]})
    assert status == 200
    doc = echoed(body)
    assert header_values(doc, "x-user-roles") == ["admin,ops"]
    [auth] = header_values(doc, "authorization")
    status, _, jwks = get(port(env), "/.auth/.well-known/jwks.json")
    assert status == 200
    keys = KeySet.import_key_set(json.loads(jwks))
    token = jwt.decode(auth.removeprefix("Bearer "), keys)
    assert token.header["alg"] == "ES256"
    assert token.claims["sub"] == str(alice[0].id) and token.claims["aud"] == "orders"


# --- header spoofing --------------------------------------------------------------------------

SPOOFS: list[tuple[str, list[tuple[str, str]]]] = [
    ("exact", [("X-User-ID", "evil")]),
    ("lower", [("x-user-id", "evil")]),
    ("upper", [("X-USER-ID", "evil")]),
    ("underscore", [("X_User_ID", "evil")]),
    ("mixed underscore", [("x-user_id", "evil")]),
    ("duplicated", [("X-User-ID", "evil"), ("X-User-ID", "evil2")]),
    ("email", [("X-User-Email", "evil@example.com")]),
    ("aal", [("X-User-AAL", "aal2")]),
    ("other x-user", [("X-User-Roles", "admin")]),
    ("connection names it", [("Connection", "X-User-ID, close"), ("X-User-ID", "evil")]),
    ("method override", [("X-HTTP-Method-Override", "DELETE")]),
]


@pytest.mark.parametrize("spoof", [s[1] for s in SPOOFS], ids=[s[0] for s in SPOOFS])
def test_spoofed_identity_headers_never_reach_upstream(
    env: Any, alice: Any, spoof: list[tuple[str, str]]
) -> None:
    for path, headers in (("/public/x", spoof), ("/private/x", [*spoof, ("X-Session-Token", alice[2])])):
        status, _, body = get(port(env), path, headers)
        assert status == 200, body
        doc = echoed(body)
        seen = [v for k, v in doc["headers"] if "evil" in v or v in ("admin", "aal2", "DELETE")]
        assert seen == [], (path, seen)
        if path == "/private/x":
            assert header_values(doc, "x-user-id") == [str(alice[0].id)]


def test_connection_cannot_remove_forwarded_for(env: Any) -> None:
    _, _, body = get(
        port(env), "/public/x", [("Connection", "X-Forwarded-For"), ("X-Forwarded-For", "1.2.3.4")]
    )
    doc = echoed(body)
    # 127.0.0.1 is a trusted proxy by default: its chain is kept and extended, never dropped.
    assert header_values(doc, "x-forwarded-for") == ["1.2.3.4, 127.0.0.1"]
    assert header_values(doc, "x-forwarded-proto") == ["http"]


def test_smuggling_framing_is_rejected(env: Any) -> None:
    req = (
        "POST /public/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n"
        "Connection: close\r\n\r\nhello"
    )
    assert raw_request(port(env), req.encode())[0] == 400


# --- path bypasses ----------------------------------------------------------------------------

BYPASSES = [
    ("/public/../private/x", "normalised"),
    ("/public/%2e%2e/private/x", "normalised"),
    ("/public/%2E%2E/private/x", "normalised"),
    ("/public/..%2fprivate/x", 400),
    ("/public%2f..%2fprivate/x", 400),
    ("/public/%2fprivate", 400),
    ("//private/x", "normalised"),
    ("/private;public/x", 400),
    ("/public/x/..;/../private/x", 400),
    ("/public\\..\\private/x", 400),
    ("/public/%5c../private/x", 400),
    ("/public/%00/../private/x", 400),
    ("/public/%252e%252e/private/x", 400),
    # Rules match case-sensitively: a differently cased path matches no rule, which denies.
    ("/PRIVATE/x", 403),
    ("/Private/x", 403),
    ("/public/./../private/x", "normalised"),
]


@pytest.mark.parametrize(("target", "expect"), BYPASSES, ids=[b[0] for b in BYPASSES])
def test_path_bypass_battery(env: Any, target: str, expect: Any) -> None:
    status, _, body = get(port(env), target, {"Accept": "application/json"})
    if expect == "normalised":
        # The matcher saw /private/x: no session, so no access; never the upstream.
        assert status == 401, (target, status, body)
    else:
        assert status == expect, (target, status, body)


def test_normalised_path_is_what_upstream_receives(env: Any, alice: Any) -> None:
    status, _, body = get(port(env), "/public/a/%7e/./b//c/../d?q=%2e", cookie(alice[2]))
    assert status == 200
    doc = echoed(body)
    assert doc["raw_path"] == "/public/a/~/b/d" and doc["query"] == "q=%2e"


def test_paths_into_the_prefix_are_ours(env: Any) -> None:
    assert get(port(env), "/%2eauth/.well-known/jwks.json")[0] == 400
    assert get(port(env), "/public/../.auth/.well-known/jwks.json")[0] == 400


def test_prefix_reaches_the_starlette_app(env: Any) -> None:
    status, _, _ = get(port(env), "/.auth/health/alive")
    assert status == 200


# --- upstream failures ------------------------------------------------------------------------


def test_upstream_timeout_is_504(env: Any, alice: Any) -> None:
    status, headers, body = get(port(env), "/slow?delay=3", cookie(alice[2]))
    assert status == 504
    doc = json.loads(body)
    assert doc["error"]["code"] == 504 and doc["error"]["request"] == headers["x-request-id"]


async def test_upstream_down_is_502(tmp_path: Path) -> None:
    from tests.conftest import free_port

    rules = tmp_path / "r.yaml"
    rules.write_text("version: 1\nrules:\n  - {id: all, match: {paths: ['/**']}, require: public}\n")
    dead = f"http://127.0.0.1:{free_port()}"
    with sidecar_server(tmp_path, proxy={"upstream": dead}, rules=[str(rules)]) as sidecar:
        status, headers, body = get(sidecar.proc.port, "/x")
        assert status == 502
        doc = json.loads(body)
        assert doc["error"]["code"] == 502 and doc["error"]["request"] == headers["x-request-id"]
        assert dead not in body.decode()  # generic body: no internal address


async def test_no_upstream_and_no_rule_is_404(tmp_path: Path) -> None:
    with sidecar_server(tmp_path) as sidecar:
        status, _, body = get(sidecar.proc.port, "/anything")
        assert status == 404 and json.loads(body)["error"]["code"] == 404


async def test_forwarded_headers_from_untrusted_peers_are_replaced(tmp_path: Path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text("version: 1\nrules:\n  - {id: all, match: {paths: ['/**']}, require: public}\n")
    with (
        upstream_server() as upstream,
        sidecar_server(
            tmp_path,
            proxy={"upstream": upstream.url},
            rules=[str(rules)],
            serve={"public": {"trusted_proxies": ["10.0.0.0/8"]}},
        ) as sidecar,
    ):
        forged = {
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.test",
            "X-Forwarded-Proto": "https",
            "Forwarded": "for=6.6.6.6",
            "X-Real-IP": "6.6.6.6",
        }
        status, _, body = get(sidecar.proc.port, "/x", forged)
        assert status == 200
        doc = echoed(body)
        assert header_values(doc, "x-forwarded-for") == ["127.0.0.1"]
        assert header_values(doc, "x-forwarded-proto") == ["http"]
        assert header_values(doc, "x-forwarded-host") == [f"127.0.0.1:{sidecar.proc.port}"]
        assert header_values(doc, "forwarded") == [] and header_values(doc, "x-real-ip") == []

"""The forward plans a signed-in request's cached session keeps (``Gateway._forward``).

A cached plan must be the plan the request would get without the cache, whatever differs between
two requests: the credential, host, path, query, method, peer, the client's own identity,
forwarded or cookie headers, the request id; and it must not outlive a revocation or a rules
reload. Each request here is planned twice: warm (the cache filled by every request before it,
each seen twice: a plan is kept from a request's second sight on) and cold (the session's memo
emptied first, so nothing cached is used); the two must agree.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sidecar.app import create_public_app, wrap_apps
from sidecar.identity.model import Identity, VerifiableAddress, utcnow
from sidecar.logs import AccessLog
from sidecar.proxy.forward import ONE_TRACEPARENT, Forward, rewrite_request_headers_raw
from sidecar.proxy.gateway import PLANS_PER_SESSION, REWRITES_PER_SESSION, Gateway
from sidecar.security.tokens import digest, new_session_token
from sidecar.session.model import Session
from tests.conftest import make_config

RULES = """
version: 1
rules:
  - {id: private, match: {paths: ["/private/**"]}, require: authenticated}
  - {id: reads, match: {methods: [GET], paths: ["/reads/**"]}, require: authenticated}
  - id: tagged
    match: {paths: ["/tagged/**"]}
    require: authenticated
    headers: {X-Tag: "%s"}
"""


@dataclass
class Env:
    gateway: Gateway
    services: Any
    rules: Path
    tokens: dict[str, str]

    def session(self, who: str) -> Any:
        found, session = self.services.resolver.cached(self.tokens[who])
        assert found and session is not None
        return session


async def _user(services: Any, email: str) -> str:
    identity = Identity(
        schema_id="default",
        traits={"email": email},
        verifiable_addresses=(VerifiableAddress(value=email, verified=True),),
    )
    identity = await services.database.identities.create(identity)
    session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1), aal="aal1")
    token = new_session_token()
    await services.database.sessions.create(session, digest(token))
    return token


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    from sidecar.app import build_services

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES % "v1")
    config = make_config(
        dsn=f"sqlite:///{tmp_path}/sidecar.db",
        rules=[str(rules)],
        proxy={"upstream": "http://127.0.0.1:9"},
        session={"cache_ttl": "1h"},
    )
    services = build_services(config)
    await services.database.migrate()
    await services.start()
    try:
        public, _ = wrap_apps(services, create_public_app(services, manage_lifespan=False), object())
        assert isinstance(public, AccessLog) and isinstance(public.app, Gateway)
        await public.app.start()
        tokens = {
            "alice": await _user(services, "alice@example.com"),
            "bob": await _user(services, "bob@example.com"),
        }
        for token in tokens.values():
            await services.resolver.resolve(token)  # cached: plan_now answers without I/O
        yield Env(public.app, services, rules, tokens)
    finally:
        await services.stop()


def scope(
    env: Env,
    *,
    who: str = "alice",
    method: str = "GET",
    host: bytes = b"app.test",
    path: str = "/private/x",
    query: bytes = b"",
    peer: str = "127.0.0.1",
    extra: tuple[tuple[bytes, bytes], ...] = (),
    request_id: str | None = None,
) -> dict[str, Any]:
    headers = [(b"host", host), (b"x-session-token", env.tokens[who].encode()), *extra]
    out: dict[str, Any] = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": (peer, 40000),
        "server": ("127.0.0.1", 4455),
    }
    if request_id is not None:  # as the access log adds its own
        out["headers"] = [*headers, (b"x-request-id", request_id.encode())]
        out["sidecar.request_id"] = request_id
    return out


def planned(env: Env, request: dict[str, Any]) -> tuple[Any, ...]:
    got = env.gateway.plan_now(dict(request, headers=list(request["headers"])))
    assert isinstance(got, Forward), got
    return got.base, got.target, got.headers


def cold(env: Env, request: dict[str, Any]) -> tuple[Any, ...]:
    for who in env.tokens:
        env.session(who).memo.clear()
    return planned(env, request)


EXTRAS: list[tuple[tuple[bytes, bytes], ...]] = [
    (),
    ((b"x-user-id", b"spoofed"),),
    ((b"x_user_id", b"spoofed"), (b"x-user-email", b"spoofed@example.com")),
    ((b"x-forwarded-for", b"10.1.1.1"), (b"x-forwarded-host", b"evil.test")),
    ((b"cookie", b"theme=dark; ory_kratos_session=forged"),),
    ((b"connection", b"x-drop"), (b"x-drop", b"hop")),
]


async def test_a_cached_plan_is_the_plan_the_request_would_get_without_the_cache(env: Env) -> None:
    requests = [
        scope(env, who=who, method=method, host=host, path=path, query=query, peer=peer, extra=extra)
        for who, method, host, path, query, peer, extra in itertools.product(
            ["alice", "bob"],
            ["GET", "DELETE"],
            [b"app.test", b"other.test"],
            ["/private/x", "/private/y"],
            [b"", b"q=1"],
            ["127.0.0.1", "10.9.8.7"],
            EXTRAS,
        )
    ]
    for _ in range(2):  # first sight (noted), second (the plan kept)
        for request in requests:
            planned(env, request)
    warm = [planned(env, r) for r in requests]  # from the cache
    assert len({tuple(map(tuple, w[2])) for w in warm}) > 1
    for request, got in zip(requests, warm, strict=True):
        assert got == cold(env, request), request


async def test_a_spoofed_identity_header_is_stripped_after_the_clean_request_was_cached(env: Env) -> None:
    alice = str(env.session("alice").identity_id).encode()
    planned(env, scope(env))
    for extra in EXTRAS[1:3]:
        _, _, headers = planned(env, scope(env, extra=extra))
        assert [v for n, v in headers if n.replace(b"_", b"-") == b"x-user-id"] == [alice]
        assert b"spoofed" not in b"".join(v for _, v in headers)


async def test_each_credential_host_path_and_query_gets_its_own_plan(env: Env) -> None:
    ids = {who: str(env.session(who).identity_id).encode() for who in env.tokens}
    for who in ("alice", "bob", "alice"):
        _, _, headers = planned(env, scope(env, who=who))
        assert (b"x-user-id", ids[who]) in headers
    for host in (b"a.test", b"b.test", b"a.test"):
        _, _, headers = planned(env, scope(env, host=host))
        assert (b"host", host) in headers and (b"x-forwarded-host", host) in headers
    for path, query in (("/private/x", b""), ("/private/y", b""), ("/private/x", b"q=1")):
        _, target, _ = planned(env, scope(env, path=path, query=query))
        assert target == (path.encode() + b"?" + query if query else path.encode())


async def test_a_method_the_rule_does_not_allow_is_not_served_a_cached_plan(env: Env) -> None:
    assert isinstance(env.gateway.plan_now(scope(env, path="/reads/x")), Forward)
    denied = env.gateway.plan_now(scope(env, path="/reads/x", method="DELETE"))
    assert not isinstance(denied, Forward) and denied is not None
    assert denied[0] == 403  # no rule matches it


async def test_each_request_carries_its_own_request_id(env: Env) -> None:
    for request_id in ("a" * 32, "b" * 32, "a" * 32, "c" * 32):
        request = scope(env, request_id=request_id)
        got = env.gateway.plan_now(request)
        assert isinstance(got, Forward)
        assert (b"x-request-id", request_id.encode()) in got.headers
        assert not any(b"\x00" in v for _, v in got.headers)


async def test_a_revoked_session_loses_its_plans(env: Env) -> None:
    planned(env, scope(env))
    planned(env, scope(env))
    stored = await env.services.database.sessions.get_by_token(digest(env.tokens["alice"]))
    await env.services.database.sessions.revoke(stored.id)
    env.services.resolver.invalidate_session(stored.id)
    assert env.gateway.plan_now(scope(env)) is None  # the store must answer: the ASGI path's
    await env.services.resolver.resolve(env.tokens["alice"])  # now cached as "no session"
    denied = env.gateway.plan_now(scope(env))
    assert not isinstance(denied, Forward) and denied is not None and denied[0] == 401


async def test_a_rules_reload_renders_the_plan_anew(env: Env) -> None:
    _, _, headers = planned(env, scope(env, path="/tagged/x"))
    assert (b"x-tag", b"v1") in headers
    env.rules.write_text(RULES % "v2")
    env.services.rules.load()
    _, _, headers = planned(env, scope(env, path="/tagged/x"))
    assert (b"x-tag", b"v2") in headers and (b"x-tag", b"v1") not in headers
    moved = RULES.replace("    require: authenticated\n    headers", "    upstream: http://127.0.0.1:7\n&")
    env.rules.write_text(moved.replace("&", "    require: authenticated\n    headers") % "v2")
    env.services.rules.load()
    base, _, _ = planned(env, scope(env, path="/tagged/x"))
    assert base == "http://127.0.0.1:7"


async def test_a_new_path_gets_the_headers_it_would_get_without_the_cache(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request seen for the first time has no plan, but its rewritten headers are kept per header
    shape (``Gateway._forward``'s rewrites): requests of every kind, each kind three times in a row
    to new paths (the first fills the rewrite, the next two are served from it), get the base,
    target and headers they get with nothing cached, each with its own request id and traceparent
    in place."""
    numbers = itertools.count()
    requests = []
    for who, host, peer, extra, ids, prefix in itertools.product(
        ["alice", "bob"],
        [b"app.test", b"other.test"],
        ["127.0.0.1", "10.9.8.7"],
        EXTRAS,
        ["none", "request id", "traceparent"],
        ["/private", "/tagged"],
    ):
        for _ in range(3):
            n = next(numbers)
            request = scope(
                env,
                who=who,
                host=host,
                peer=peer,
                extra=extra,
                path=f"{prefix}/{n}",
                request_id=f"{n:032x}" if ids != "none" else None,
            )
            if ids == "traceparent":
                trace = f"00-{n:032x}-{n:016x}-01".encode()
                request["headers"] = [*request["headers"], (b"traceparent", trace)]
                request[ONE_TRACEPARENT] = trace
            requests.append(request)
    rewrites = 0

    def counted(*args: Any) -> Any:
        nonlocal rewrites
        rewrites += 1
        return rewrite_request_headers_raw(*args)

    monkeypatch.setattr("sidecar.proxy.gateway.rewrite_request_headers_raw", counted)
    # Every kind's rewrite kept to the end: a key that left out what makes two kinds differ would
    # serve one the other's headers, whichever order they come in.
    monkeypatch.setattr("sidecar.proxy.gateway.REWRITES_PER_SESSION", 10_000)
    served = [planned(env, request) for request in requests]
    assert rewrites == len(requests) // 3  # once per kind: its other two requests from the memo
    monkeypatch.undo()
    for request, got in zip(requests, served, strict=True):
        assert got == cold(env, request), request
        assert not any(b"\x00" in v for _, v in got[2])


async def test_the_rewrites_a_session_keeps_are_bounded(env: Env) -> None:
    for n in range(3 * REWRITES_PER_SESSION):
        planned(env, scope(env, path=f"/private/{n}", extra=((b"x-n", b"%d" % n),)))
        assert len(env.session("alice").memo["forward_rewrites"]) <= REWRITES_PER_SESSION


async def test_the_plans_a_session_keeps_are_bounded_and_made_at_the_second_sight(env: Env) -> None:
    """A request is noted at its first sight and planned at its second, also right after the
    session's plans were emptied for reaching ``PLANS_PER_SESSION`` (the noted key kept)."""
    for n in range(3 * PLANS_PER_SESSION):
        request = scope(env, path=f"/private/{n}")
        for sight in (1, 2):
            planned(env, request)
            plans = env.session("alice").memo["forward_plans"]
            assert len(plans) <= PLANS_PER_SESSION
            kept = [plan.target for plan in plans.values() if plan is not None]
            assert (f"/private/{n}".encode() in kept) == (sight == 2), (n, sight)

"""Streaming an allowed request to the upstream and its response back, both ways unbuffered.

Request headers are rebuilt in one pass: hop-by-hop headers and every name ``Connection`` lists
are dropped (RFC 9110 §7.6.1), client copies of identity headers and method overrides are
dropped, the sidecar's own session cookie and token are removed, ``X-Forwarded-*`` are set (a
client's values kept only from trusted proxies), then our identity headers are added.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Send

from sidecar import errors
from sidecar.metrics import Metrics
from sidecar.proxy.headers import (
    FORWARDED,
    HOP_BY_HOP,
    IDENTITY_PREFIX,
    METHOD_OVERRIDES,
    connection_options,
    drop_cookie,
)
from sidecar.proxy.responses import new_request_id, send_error
from sidecar.proxy.upstream import ClientGone, Upstream, UpstreamError, UpstreamTimeout

log = logging.getLogger("sidecar.proxy")

_SKIP_ALWAYS = HOP_BY_HOP | METHOD_OVERRIDES | FORWARDED | {b"host", b"x-session-token", b"expect"}
# Client headers whose canonical form (``_`` for ``-``) is one of these never pass either.
_SKIP_CANONICAL = METHOD_OVERRIDES | FORWARDED


# Stands for the request id in a cached plan's headers: NUL, which no header value can hold.
REQUEST_ID_SLOT = b"\x00request-id\x00"
REQUEST_ID_HEADER = b"x-request-id"
# Stands for the request's traceparent (its only one) in a cached plan's headers: a mesh sends a
# new one with every request, passed on as sent (with tracing off; on, the plan is not used).
TRACEPARENT_SLOT = b"\x00traceparent\x00"
TRACEPARENT_HEADER = b"traceparent"
ONE_TRACEPARENT = "sidecar.one_traceparent"
"""Scope key: the request's traceparent, set by the HTTP protocol when the request has exactly one
(``sidecar.http_protocol``); ``Gateway._forward`` then keeps a plan without its value."""
ONE_REQUEST_ID = "sidecar.one_request_id"
"""Scope key: the request's x-request-id, set by the HTTP protocol when the request has exactly one:
whether the access log took it is part of what a remembered relay must find again
(``sidecar.proxy.fast``)."""


@dataclass(slots=True)
class Forward:
    """Where an allowed request goes: the upstream base URL, the target (path and query) and the
    rewritten headers. Built once (``Gateway``) for the ASGI path and the fast path alike; made
    from a cached ``Plan`` or ``Rewrite`` for a signed-in request, whose headers hold slots for the
    request id and traceparent: ``headers`` puts this request's in (the fast path puts them in its
    encoded head instead)."""

    base: str
    target: bytes
    slotted: list[tuple[bytes, bytes]]
    plan: Plan | None = None
    request_id: bytes | None = None
    # With a kept plan made from a request with one traceparent: its value (``TRACEPARENT_SLOT``).
    traceparent: bytes | None = None
    # With a kept plan, when the protocol may remember the relay: ``Access.replay_of``'s
    # ``replay`` for the check that allowed it (``sidecar.proxy.fast.FastProxy.take``).
    replay: Callable[[], bool] | None = None
    # Without a kept plan, the session's rewrite the headers came from (a new path).
    rewrite: Rewrite | None = None

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The rewritten headers, this request's ids in their slots."""
        return filled(self.slotted, self.request_id, self.traceparent)


@dataclass(slots=True)
class Plan:
    """A signed-in request's forward, kept with its cached session (``Gateway._forward``): the
    headers with ``REQUEST_ID_SLOT`` as the value of the request id (which changes per request),
    ``TRACEPARENT_SLOT`` as that of the request's traceparent when it has one (``ONE_TRACEPARENT``),
    and the fast path's encoded request head, made on first use (``sidecar.proxy.fast``).

    ``log``: the access log's memo for the requests this plan serves (``AccessLog.taking``): what
    their lines share is decided by the plan's key (method, normalised path, peer, rule, session),
    so it is made once per status, not per request."""

    base: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    head: bytes = b""
    log: dict[Any, Any] = field(default_factory=dict)

    def forward(self, request_id: bytes | None, traceparent: bytes | None = None) -> Forward:
        return Forward(self.base, self.target, self.headers, self, request_id, traceparent)


@dataclass(slots=True)
class Rewrite:
    """A signed-in request's rewritten headers kept for every method, path and query
    (``Gateway._forward``'s rewrites, a new path each request): ``headers`` with the id slots as a
    ``Plan``'s, and the fast path's encoded header block (``Http1Client.header_block``, for
    ``origin``), made on first use (``sidecar.proxy.fast``).

    ``log``: the access log's memo for the fast path's requests it serves (``AccessLog.taking``):
    their lines differ from one another only in what a plan's do and their path (the key holds
    the peer, rule and session; the fast path takes GETs alone)."""

    headers: list[tuple[bytes, bytes]]
    block: bytes = b""
    origin: object = None  # the upstream connection pool's ``Origin`` the block was made for
    log: dict[Any, Any] = field(default_factory=dict)


def filled(
    headers: list[tuple[bytes, bytes]], request_id: bytes | None, traceparent: bytes | None
) -> list[tuple[bytes, bytes]]:
    """``headers`` made with ``REQUEST_ID_SLOT`` / ``TRACEPARENT_SLOT`` values, with this request's
    (``headers`` itself when it has neither: the caller does not change it)."""
    if traceparent is not None:
        # (A request id slot is there only when the headers were made with one.)
        slots = {REQUEST_ID_SLOT: request_id or REQUEST_ID_SLOT, TRACEPARENT_SLOT: traceparent}
        return [(n, slots.get(v, v)) for n, v in headers]
    if request_id is None:
        return headers
    return [(n, request_id) if v == REQUEST_ID_SLOT else (n, v) for n, v in headers]


@dataclass(slots=True)
class ForwardContext:
    """Per-request values the header rewrite needs."""

    peer: str
    scheme: str
    trusted: bool
    strip: frozenset[bytes]
    cookie_name: bytes
    strip_bearer: bool


def rewrite_request_headers_raw(
    headers: list[tuple[bytes, bytes]], ctx: ForwardContext, identity: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The upstream's request headers, as bytes pairs (what the HTTP/1.1 client writes)."""
    listed: set[bytes] | None = None
    for name, value in headers:
        if name.lower() == b"connection":
            listed = listed or set()
            listed.update(connection_options(value))
    out: list[tuple[bytes, bytes]] = []
    host = b""
    xff: list[bytes] = []
    xfp = xfh = xport = forwarded = real_ip = None
    strip = ctx.strip
    for name, value in headers:
        n = name.lower()
        if n in _SKIP_ALWAYS:
            if n == b"host":
                host = value
            elif n == b"x-forwarded-for":
                xff.append(value)
            elif n == b"x-forwarded-proto":
                xfp = value
            elif n == b"x-forwarded-host":
                xfh = value
            elif n == b"x-forwarded-port":
                xport = value
            elif n == b"forwarded":
                forwarded = value
            elif n == b"x-real-ip":
                real_ip = value
            continue
        # Names with "_" are rare: canonicalise only then (a client's X_User_ID is ours to strip).
        c = n.replace(b"_", b"-") if n.find(b"_") != -1 else n  # not ``in`` (paths.normalise_path)
        if c in strip or c.startswith(IDENTITY_PREFIX) or c in _SKIP_CANONICAL:
            continue
        if listed is not None and c in listed:
            continue
        if n == b"cookie":
            value = drop_cookie(value, ctx.cookie_name)
            if not value:
                continue
        elif n == b"authorization" and ctx.strip_bearer and value[:7].lower() == b"bearer ":
            continue
        out.append((name, value))
    if host:
        out.append((b"host", host))
    peer = ctx.peer.encode()
    if ctx.trusted:
        out.append((b"x-forwarded-for", b", ".join([*xff, peer]) if xff else peer))
        out.append((b"x-forwarded-proto", xfp or ctx.scheme.encode()))
        if xfh or host:
            out.append((b"x-forwarded-host", xfh or host))
        if xport:
            out.append((b"x-forwarded-port", xport))
        if forwarded:
            out.append((b"forwarded", forwarded))
        if real_ip:
            out.append((b"x-real-ip", real_ip))
    else:
        out.append((b"x-forwarded-for", peer))
        out.append((b"x-forwarded-proto", ctx.scheme.encode()))
        if host:
            out.append((b"x-forwarded-host", host))
    for name, value in identity:
        if value:
            out.append((name, value))
    return out


def rewrite_request_headers(
    headers: list[tuple[bytes, bytes]], ctx: ForwardContext, identity: list[tuple[bytes, bytes]]
) -> list[tuple[str, str]]:
    """``rewrite_request_headers_raw`` as ``str`` pairs, with canonical casing for the names we
    add (what aiohttp's WebSocket handshake takes)."""
    return [
        (_TITLE.get(n) or n.decode("latin-1"), v.decode("latin-1"))
        for n, v in rewrite_request_headers_raw(headers, ctx, identity)
    ]


_TITLE = {
    b"host": "Host",
    b"x-forwarded-for": "X-Forwarded-For",
    b"x-forwarded-proto": "X-Forwarded-Proto",
    b"x-forwarded-host": "X-Forwarded-Host",
    b"x-forwarded-port": "X-Forwarded-Port",
    b"forwarded": "Forwarded",
    b"x-real-ip": "X-Real-IP",
}


async def forward_http(
    client: Upstream,
    method: str,
    base: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    has_body: bool,
    receive: Receive,
    send: Send,
    *,
    request_id: str | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Stream the request and its response through ``client``; 504 / 502 before the response
    started, a silent end when the client went away while sending its body."""
    started = time.perf_counter()
    error: str | None = None
    try:
        await client.forward(method, base, target, headers, has_body, receive, send)
    except ClientGone:
        error = "client_gone"
    except UpstreamError as exc:
        request_id = request_id or new_request_id()  # made only on failure: it costs on the hot path
        error, answer = upstream_failure(exc, method, base, target, request_id)
        await send_error(send, answer, request_id=request_id)
    finally:
        if metrics is not None:
            metrics.observe_upstream(time.perf_counter() - started, error)


def upstream_failure(
    exc: UpstreamError, method: str, base: str, target: bytes, request_id: str
) -> tuple[str, errors.SidecarError]:
    """Before the response started: the metrics' error kind and the answer (504 for a timeout,
    else 502), with the warning logged; shared by the ASGI path and ``sidecar.proxy.fast``."""
    shown = _shown(target)
    if isinstance(exc, UpstreamTimeout):
        log.warning("upstream timed out: %s %s%s: %s (request %s)", method, base, shown, exc, request_id)
        return "timeout", errors.GatewayTimeout()
    log.warning("upstream unreachable: %s %s%s: %s (request %s)", method, base, shown, exc, request_id)
    return "unreachable", errors.BadGateway()


def _shown(target: bytes) -> str:
    """The path for the log, without the query (it may carry secrets)."""
    return target.partition(b"?")[0].decode("latin-1")

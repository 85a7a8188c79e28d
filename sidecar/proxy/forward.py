"""Streaming an allowed request to the upstream and its response back, both ways unbuffered.

Request headers are rebuilt in one pass: hop-by-hop headers and every name ``Connection`` lists
are dropped (RFC 9110 §7.6.1), client copies of identity headers and method overrides are
dropped, the sidecar's own session cookie and token are removed, ``X-Forwarded-*`` are set (a
client's values kept only from trusted proxies), then our identity headers are added.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from starlette.types import Receive, Send
from yarl import URL

from sidecar import errors
from sidecar.proxy.access import new_request_id
from sidecar.proxy.headers import (
    FORWARDED,
    HOP_BY_HOP,
    METHOD_OVERRIDES,
    canonical,
    drop_cookie,
    is_identity_header,
)
from sidecar.proxy.responses import send_error
from sidecar.proxy.upstream import UpstreamClient

log = logging.getLogger("sidecar.proxy")

_SKIP_ALWAYS = HOP_BY_HOP | METHOD_OVERRIDES | FORWARDED | {b"host", b"x-session-token", b"expect"}
_CHUNK = 64 * 1024


@dataclass(slots=True)
class ForwardContext:
    """Per-request values the header rewrite needs."""

    peer: str
    scheme: str
    trusted: bool
    strip: frozenset[bytes]
    cookie_name: bytes
    strip_bearer: bool


def rewrite_request_headers(
    headers: list[tuple[bytes, bytes]], ctx: ForwardContext, identity: list[tuple[bytes, bytes]]
) -> list[tuple[str, str]]:
    listed: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            listed.update(canonical(t.strip()) for t in value.split(b","))
    out: list[tuple[str, str]] = []
    host = b""
    xff: list[bytes] = []
    xfp = xfh = xport = forwarded = real_ip = None
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
        c = canonical(name)
        if c in listed or is_identity_header(c, ctx.strip) or c in METHOD_OVERRIDES or c in FORWARDED:
            continue
        if n == b"cookie":
            value = drop_cookie(value, ctx.cookie_name)
            if not value:
                continue
        elif n == b"authorization" and ctx.strip_bearer and value[:7].lower() == b"bearer ":
            continue
        out.append((name.decode("latin-1"), value.decode("latin-1")))
    if host:
        out.append(("Host", host.decode("latin-1")))
    if ctx.trusted:
        chain = b", ".join([*xff, ctx.peer.encode()]) if xff else ctx.peer.encode()
        out.append(("X-Forwarded-For", chain.decode("latin-1")))
        out.append(("X-Forwarded-Proto", (xfp or ctx.scheme.encode()).decode("latin-1")))
        if xfh or host:
            out.append(("X-Forwarded-Host", (xfh or host).decode("latin-1")))
        if xport:
            out.append(("X-Forwarded-Port", xport.decode("latin-1")))
        if forwarded:
            out.append(("Forwarded", forwarded.decode("latin-1")))
        if real_ip:
            out.append(("X-Real-IP", real_ip.decode("latin-1")))
    else:
        out.append(("X-Forwarded-For", ctx.peer))
        out.append(("X-Forwarded-Proto", ctx.scheme))
        if host:
            out.append(("X-Forwarded-Host", host.decode("latin-1")))
    for name, value in identity:
        if value:
            out.append((name.decode("latin-1"), value.decode("latin-1")))
    return out


def response_headers(raw: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    listed: set[bytes] = set()
    for name, value in raw:
        if name.lower() == b"connection":
            listed.update(t.strip().lower() for t in value.split(b","))
    return [(n, v) for n, v in raw if n.lower() not in HOP_BY_HOP and n.lower() not in listed]


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client disconnected")
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def forward_http(
    client: UpstreamClient,
    url: str,
    method: str,
    headers: list[tuple[str, str]],
    has_body: bool,
    receive: Receive,
    send: Send,
) -> None:
    started = False
    try:
        async with client.session.request(
            method,
            URL(url, encoded=True),
            headers=CIMultiDict(headers),
            data=_request_body(receive) if has_body else None,
            allow_redirects=False,
            compress=None,
        ) as resp:
            start = {
                "type": "http.response.start",
                "status": resp.status,
                "headers": response_headers(resp.raw_headers),
            }
            if method == "HEAD":
                await send(start)
                started = True
                await send({"type": "http.response.body", "body": b""})
                return
            length = resp.content_length
            if length is not None and length <= _CHUNK:
                # Small bodies (the common case) in one read and one send: fewer loop turns.
                body = await resp.content.readexactly(length) if length else b""
                await send(start)
                started = True
                await send({"type": "http.response.body", "body": body})
                return
            await send(start)
            started = True
            async for chunk in resp.content.iter_chunked(_CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
    except (TimeoutError, aiohttp.ServerTimeoutError):
        if started:
            raise
        request_id = new_request_id()  # made only on failure: uuid4 costs on the hot path
        log.warning("upstream timed out: %s %s (request %s)", method, url, request_id)
        await send_error(send, errors.GatewayTimeout(), request_id=request_id)
    except (aiohttp.ClientError, OSError) as exc:
        if started:
            raise  # mid-body: the only honest signal left is to abort the connection
        if isinstance(exc, ConnectionResetError):
            return  # the client went away while we streamed its body
        request_id = new_request_id()
        log.warning("upstream unreachable: %s %s: %s (request %s)", method, url, exc, request_id)
        await send_error(send, errors.BadGateway(), request_id=request_id)

"""The upstream seam (DESIGN §6: "pick it by benchmark"; STYLE §4: injected): what the proxy asks
of a client that talks to the app, and the errors it may raise. No client library appears here.

- ``Upstream``: one HTTP exchange, streamed both ways. Implementations: ``sidecar.proxy.http1``
  (the default, httptools on asyncio protocols) and ``sidecar.proxy.aiohttp_client``; the
  composition root picks one (``proxy.upstream_client``; the benchmark runs both) with
  ``sidecar.proxy.clients``, which imports a client library only when it is used.
- ``WebSocketConnector``: opens the upstream side of a proxied WebSocket
  (``sidecar.proxy.aiohttp_websocket``, built at the first one by ``sidecar.proxy.clients``).

Before the response has started, a failure is ``UpstreamTimeout`` (→ 504), ``UpstreamError``
(→ 502) or ``ClientGone``; once it has started, it propagates (``UpstreamAborted``) so the server
aborts the client connection, the only honest signal left.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

Headers = list[tuple[bytes, bytes]]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer with valid HTTP/1.1 (502)."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """Connect or read timeout (504)."""


class UpstreamAborted(ConnectionError):
    """The upstream failed after the response had started: the client connection must be aborted
    (never mapped to an error page; ``forward_http`` lets it propagate)."""


class ClientGone(Exception):
    """The downstream client disconnected while its request body was being streamed."""


class Upstream(Protocol):
    name: str

    async def forward(
        self,
        method: str,
        base: str,
        target: bytes,
        headers: Headers,
        has_body: bool,
        receive: Receive,
        send: Send,
    ) -> None:
        """Stream ``method`` on ``base`` + ``target`` (raw path and query) and the response to
        ``send``. ``headers`` are the rewritten request headers, ``Host`` included."""
        ...

    async def close(self) -> None: ...


class UpstreamSocket(Protocol):
    """The upstream side of a proxied WebSocket."""

    @property
    def protocol(self) -> str | None:
        """The subprotocol the upstream chose."""
        ...

    @property
    def close_code(self) -> int | None: ...

    async def send_text(self, data: str) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def receive(self) -> str | bytes | None:
        """The next text or binary message; None once the upstream closed."""
        ...

    async def close(self) -> None: ...


class WebSocketConnector(Protocol):
    async def connect(
        self, url: str, headers: Sequence[tuple[str, str]], protocols: Sequence[str]
    ) -> UpstreamSocket:
        """Open ``url`` (``ws://`` or ``wss://``); raises ``UpstreamError`` when that fails."""
        ...

    async def close(self) -> None: ...

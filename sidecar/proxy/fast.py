"""The proxied request without ASGI: from the HTTP server's protocol straight to a pooled upstream
connection, and the upstream's response straight back to the client's transport.

The ASGI path spends most of a proxied request in machinery: a task per request, the scope's
``receive``/``send`` callables, a dict per message, the access log's ``send`` wrapper, an
``asyncio.Event`` per cycle, a future per upstream wait. Here the listener's protocol hands over
an allowed request (no body, no upgrade, HTTP/1.1, nothing else in flight on the connection;
see ``Gateway.plan_now`` for what else falls through) and the rest runs in callbacks:

- the request head is the one the ASGI path writes (``Gateway`` builds the headers for both:
  ``forward.rewrite_request_headers_raw``; ``http1.request_head`` frames them; kept encoded with
  a forward plan, and per header shape for a new path: ``Rewrite.block``), on an idle pooled
  connection, or on a new one (a task: connecting is the only wait that needs a coroutine);
- the upstream ``Connection`` tells ``Relay.on_news`` of every change instead of waking a future;
  its buffering, ``SMALL`` rule (a small response goes out in one write) and pooling are the
  ASGI path's own;
- the response head is encoded as uvicorn encodes what the ASGI path sends (``encode_head``):
  the same status line, the same hop-by-hop filtering (``Connection.response_headers``), the
  request id added the same way, ``connection: close`` and chunked framing on the same terms
  (remembered per listener by status, keep-alive and headers: ``HeadMemo``);
- flow control both ways: the upstream socket pauses past ``HIGH_WATER`` buffered bytes, and
  nothing is taken from it while the client's transport is paused (a task waits for it to drain);
- a client that goes away: a small response is still read to its end (the connection goes back
  to the pool, as on the ASGI path), a streamed one aborts the upstream connection;
- failures before the head: the same 502 / 504 Kratos JSON, warning and metrics as
  ``forward.forward_http`` (``forward.upstream_failure``); a reused connection found dead is
  retried once on a new one, as ``Http1Client`` does;
- the access log line and the request metrics are written by the access log itself
  (``AccessLog.taking``), from the same scope keys;
- a request forwarded from a kept plan may be served again from the protocol's memo
  (``FastProxy.take``'s ``sidecar.relay``, ``sidecar.http_protocol.RememberedRelay``): the plan's
  head with a new request id, while the decision's replay holds.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from sidecar.metrics import Metrics
from sidecar.proxy.forward import (
    ONE_REQUEST_ID,
    ONE_TRACEPARENT,
    REQUEST_ID_SLOT,
    TRACEPARENT_SLOT,
    Forward,
    Plan,
    upstream_failure,
)
from sidecar.proxy.http1 import Http1Client
from sidecar.proxy.http1_connection import Connection, KnownHead, Origin
from sidecar.proxy.responses import Answer, error_response
from sidecar.proxy.upstream import Headers, UpstreamError, UpstreamTimeout

log = logging.getLogger("sidecar.proxy")

# uvicorn's checks on the response head (an app's header must not split the response).
_NAME_BAD = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_VALUE_BAD = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
REQUEST_ID_HEADER = b"x-request-id"


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (code, phrase)


STATUS_LINE = {code: _status_line(code) for code in range(100, 600)}


class BadHead(Exception):
    """A response header uvicorn would refuse to write (it closes the connection instead)."""


def encode_head(
    status: int,
    headers: Headers,
    *,
    request_id: bytes,
    keep_alive: bool,
    default_headers: Headers = (),  # type: ignore[assignment]
) -> tuple[bytes, int, bool]:
    """The response head uvicorn writes for ``http.response.start`` with these headers, after the
    access log added ``x-request-id`` when missing: (head, Content-Length or -1 for chunked or
    no body framing, keep-alive). GET only: a HEAD request never takes this path."""
    if default_headers:
        headers = [*default_headers, *headers]
    # uvicorn checks each name and value; one search over the names and one over the values
    # joined by a tab (which a value may hold, and a name may not) find the same.
    if _NAME_BAD.search(b"".join([n for n, _ in headers])) or _VALUE_BAD.search(
        b"\t".join([v for _, v in headers])
    ):
        raise BadHead("an invalid header name or value")
    content = [STATUS_LINE[status]]
    length = -2  # neither Content-Length nor chunked yet
    close_sent = has_id = False
    for name, value in headers:
        name = name.lower()
        if name == b"content-length":
            if length == -2:
                length = int(value.decode())
        elif name == b"transfer-encoding":
            if value.lower() == b"chunked":
                length = -1
        elif name == b"connection":
            if b"close" in [t.lower().strip() for t in value.split(b",")]:
                keep_alive = False
                close_sent = True
        elif name == REQUEST_ID_HEADER:
            has_id = True
        content += (name, b": ", value, b"\r\n")
    if not has_id:
        content += (REQUEST_ID_HEADER, b": ", request_id, b"\r\n")
    if not keep_alive and not close_sent:
        content.append(b"connection: close\r\n")
    if length == -2:
        if status in (204, 304):
            length = 0
        else:
            length = -1
            content.append(b"transfer-encoding: chunked\r\n")
    content.append(b"\r\n")
    return b"".join(content), length, keep_alive


class HeadMemo(dict[tuple[Any, ...], tuple[bytes, bytes | None, int, bool]]):
    """``encode_head`` remembered per listener for responses without default headers, by status,
    keep-alive and the upstream's headers: (the head up to the request id, after it or None when
    the upstream sent its own, the length, keep-alive). An upstream answers a route with the same
    headers but for its ``Date`` (once a second), so its checks and encoding are made once per
    route and second; emptied at ``LIMIT`` entries, and a head past ``LARGEST`` bytes is not kept
    (256 heads of 8 KiB at most)."""

    LIMIT = 256
    LARGEST = 8 * 1024

    def encode(
        self, status: int, headers: Headers, request_id: bytes, keep_alive: bool
    ) -> tuple[bytes, int, bool]:
        key = (status, keep_alive, *headers)
        kept = self.get(key)
        if kept is None:
            kept = _split_head(status, headers, keep_alive)
            if len(kept[0]) + len(kept[1] or b"") <= self.LARGEST:
                if len(self) >= self.LIMIT:
                    self.clear()
                self[key] = kept
        before, after, length, kept_alive = kept
        return (before if after is None else before + request_id + after), length, kept_alive

    @staticmethod
    def encode_known(
        conn: Connection, known: KnownHead, request_id: bytes, keep_alive: bool
    ) -> tuple[bytes, int, bool]:
        """``encode`` for a response whose head bytes llhttp parsed before (``Connection.known``):
        kept with that head (at most ``KNOWN_HEADS`` per origin, each of a few hundred bytes), no
        key to build from the headers."""
        encoded = known.encoded
        kept = encoded.get(keep_alive)
        if kept is None:
            kept = encoded[keep_alive] = _split_head(known.status, conn.response_headers(), keep_alive)
        before, after, length, kept_alive = kept
        return (before if after is None else before + request_id + after), length, kept_alive


def _split_head(status: int, headers: Headers, keep_alive: bool) -> tuple[bytes, bytes | None, int, bool]:
    """``encode_head``'s head split around the request id: (before it, after it or None when the
    upstream sent its own, the length, keep-alive)."""
    # The slot is NUL-delimited: no header name or value that passed the checks holds it.
    head, length, kept_alive = encode_head(status, headers, request_id=REQUEST_ID_SLOT, keep_alive=keep_alive)
    start, slot, end = head.partition(REQUEST_ID_SLOT)
    return start, end if slot else None, length, kept_alive


Done = Callable[[int, int, "dict[Any, Any] | None"], None]
"""The access log's end of a request: (status, body bytes, the forward plan's or rewrite's log memo
or None) once the response is complete (``AccessLog.taking``)."""


class _NoEvent:
    """uvicorn's protocol sets its cycle's ``message_event`` on connection loss: nobody waits here."""

    __slots__ = ()

    def set(self) -> None:
        pass


_WAIT_HEAD, _STREAM, _DONE = 0, 1, 2


class Relay:
    """One proxied request on the fast path, from the upstream write to the access log line.

    It is also the request's cycle for uvicorn's protocol (``proto.cycle``), standing in for
    uvicorn's ``RequestResponseCycle``: the protocol reads and writes ``response_complete`` (a
    pipelined request waits while it is false), ``keep_alive`` (``shutdown`` clears it),
    ``disconnected`` (set on connection loss), ``message_event``, ``body`` and ``more_body``; so
    keep-alive, pipelining order and graceful shutdown stay the server's. One object per request,
    not three (relay, cycle, client side): ~4k instructions less."""

    message_event = _NoEvent()

    __slots__ = (
        "base",
        "body",
        "chunked",
        "client",
        "conn",
        "default_headers",
        "disconnected_",
        "done",
        "fast",
        "flow",
        "gone",
        "keep",
        "keep_alive",
        "length",
        "log",
        "more_body",
        "origin",
        "payload",
        "phase",
        "proto",
        "request_id",
        "response_complete",
        "retried",
        "reused",
        "size",
        "started",
        "status",
        "target",
        "task",
        "transport",
    )

    def __init__(
        self,
        fast: FastProxy,
        proto: Any,
        request_id: str,
        origin: Origin | None,
        payload: bytes,
        base: str,
        target: bytes,
        keep_alive: bool,
        default_headers: Headers,
        done: Done,
        log: dict[Any, Any] | None = None,
    ) -> None:
        self.fast = fast
        self.done = done
        self.log = log
        self.client = fast.client
        self.proto = proto
        self.transport: asyncio.Transport = proto.transport
        self.flow = proto.flow
        self.keep_alive = keep_alive  # uvicorn's: ``shutdown`` clears it
        self.response_complete = False
        self.more_body = False
        self.body = b""
        self.disconnected_ = False
        self.origin = origin
        self.payload = payload
        self.base = base
        self.target = target
        self.keep = keep_alive
        self.default_headers = default_headers
        self.request_id = request_id
        self.started = time.perf_counter()
        self.phase = _WAIT_HEAD
        self.status = 0
        self.size = 0
        self.length = -1
        self.chunked = False
        self.gone = False
        self.retried = False
        self.reused = False
        self.conn: Connection | None = None
        self.task: asyncio.Task[None] | None = None

    # --- sending the request -------------------------------------------------------------------

    def begin(self) -> None:
        assert self.origin is not None  # an answer made on the spot never begins
        conn = self.client.checkout(self.origin)
        if conn is None:
            self._connect()
        else:
            self._send(conn, reused=True)

    def _connect(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._connect_then_send())

    async def _connect_then_send(self) -> None:
        assert self.origin is not None
        try:
            conn = await self.client.connect(self.origin)
        except UpstreamError as exc:
            self._fail(exc)
            return
        finally:
            self.task = None
        if self.phase == _DONE:  # the client went away and the request was given up meanwhile
            self.client.release(conn)
            return
        self._send(conn, reused=False)

    def _send(self, conn: Connection, *, reused: bool) -> None:
        self.conn = conn
        self.reused = reused
        conn.begin(False)
        transport = conn.transport
        if transport is None or conn.closed or transport.is_closing():
            conn.busy = False
            conn.close()
            if reused:
                self._stale()
            else:
                self._fail(UpstreamError("upstream connection closed"))
            return
        conn.listener = self
        transport.write(self.payload)
        conn.request_sent = True
        conn.waiting = True
        conn.clock.arm(conn)

    def _stale(self) -> None:
        """A pooled connection died before any response byte: its siblings likely did too (an
        upstream restart); one retry on a new connection (a GET: idempotent, no body)."""
        assert self.origin is not None
        self.client.discard_idle(self.origin)
        if self.retried:
            self._fail(UpstreamError("the pooled upstream connection was closed"))
            return
        self.retried = True
        self._connect()

    # --- the upstream's news (``Connection.wake``) ---------------------------------------------

    def on_news(self) -> None:
        conn = self.conn
        if conn is None:
            return
        phase = self.phase
        if phase == _WAIT_HEAD:
            if conn.complete:
                known = conn.known
                if known is not None and not self.default_headers:
                    kept = known.encoded.get(self.keep)
                    if kept is not None and kept[2] >= 0:
                        self._known_whole(conn, kept)
                        return
                self._head(conn)
            elif conn.head_done and not conn.small:
                self._head(conn)
            elif conn.error is not None:
                conn.listener = None
                conn.waiting = False
                if self.reused and not conn.got_data and isinstance(conn.error, OSError):
                    conn.abort()
                    conn.busy = False
                    self._stale()
                else:
                    conn.abort()
                    conn.busy = False
                    error = conn.error
                    self._fail(error if isinstance(error, UpstreamError) else UpstreamError(str(error)))
            else:
                conn.clock.arm(conn)  # a read timeout counts from the last news
        elif phase == _STREAM:
            self._pump(conn)

    def on_timeout(self) -> None:
        conn = self.conn
        if conn is None or self.phase == _DONE:
            return
        if self.phase == _WAIT_HEAD:
            conn.listener = None
            conn.abort()
            conn.busy = False
            self._fail(UpstreamTimeout("upstream read timed out"))
        else:
            self._abort_midway(conn, "upstream read timed out")

    # --- the response ---------------------------------------------------------------------------

    def _head(self, conn: Connection) -> None:
        self.status = status = conn.status
        try:
            if self.default_headers:
                head, length, keep_alive = encode_head(
                    status,
                    conn.response_headers(),
                    request_id=self.request_id.encode(),
                    keep_alive=self.keep,
                    default_headers=self.default_headers,
                )
            elif conn.known is not None:
                head, length, keep_alive = HeadMemo.encode_known(
                    conn, conn.known, self.request_id.encode(), self.keep
                )
            else:
                head, length, keep_alive = self.fast.heads.encode(
                    status, conn.response_headers(), self.request_id.encode(), self.keep
                )
        except BadHead as exc:
            # What uvicorn does with such a header from an ASGI app: log it and close.
            log.error("invalid response header from the upstream: %s (request %s)", exc, self.request_id)
            conn.listener = None
            conn.abort()
            conn.busy = False
            self._close_client()
            self._done(conn_error=None)
            return
        self.keep = keep_alive
        self.length = length
        self.chunked = length == -1
        if conn.complete:
            body = conn.take() if conn.chunks else b""
            self._release(conn)
            self._write_last(head, body)
            return
        self.phase = _STREAM
        self._write(head)
        self._pump(conn)

    def _known_whole(self, conn: Connection, kept: tuple[bytes, bytes | None, int, bool]) -> None:
        """``_head`` for a whole response whose head bytes came before (``conn.known``) and whose
        client head was made from them for this keep-alive (``HeadMemo.encode_known``), framed by
        its Content-Length: the same writes, release and records, without the steps between
        (most proxied responses are these: ~2k instructions less)."""
        before, after, length, keep_alive = kept
        self.status = conn.status
        self.keep = keep_alive
        self.length = length
        body = conn.take() if conn.chunks else b""
        conn.listener = None
        conn.waiting = False
        self.client.finish(conn)
        # The body is the Content-Length's (``Connection`` knows a head only so), so none of
        # ``_write_last``'s mismatch.
        self.size = len(body)
        if not self.gone:
            if after is None:
                self.transport.write(before + body)
            else:
                self.transport.write(b"".join((before, self.request_id.encode(), after, body)))
        self._done(None)

    def _pump(self, conn: Connection) -> None:
        if not self.gone and self.transport.is_closing():
            # Gone without our cycle hearing of it (uvicorn tells only its current cycle, which
            # may be a pipelined request queued behind this one).
            self.gone = True
        while conn.chunks:
            if self.flow.write_paused and not self.gone:
                conn.waiting = False  # our client is the slow one: no read timeout meanwhile
                if self.task is None:
                    self.task = asyncio.get_running_loop().create_task(self._drained())
                return
            data = conn.take()
            self.size += len(data)
            if self.chunked:
                self._write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self._write(data)
        if conn.complete:
            self._release(conn)
            if self.chunked:
                self._write(b"0\r\n\r\n")
            self._finish_response()
        elif conn.error is not None:
            self._abort_midway(conn, f"upstream failed mid-response: {conn.error}")
        elif self.gone:
            # Nobody reads the rest of a streamed response: drop the upstream connection.
            self._abort_midway(conn, None)
        else:
            conn.waiting = True
            conn.clock.arm(conn)

    async def _drained(self) -> None:
        try:
            await self.flow.drain()
        finally:
            self.task = None
        conn = self.conn
        if conn is not None and self.phase == _STREAM:
            self._pump(conn)

    def _write(self, data: bytes) -> None:
        if not self.gone:
            self.transport.write(data)

    def _write_last(self, head: bytes, body: bytes) -> None:
        """Head and whole body in one write, framed as uvicorn frames one final body message."""
        self.size = len(body)
        if self.chunked:
            self._write(b"%s%x\r\n%s\r\n0\r\n\r\n" % (head, len(body), body) if body else head + b"0\r\n\r\n")
        else:
            self._write(head + body if body else head)
            if len(body) != self.length:
                # uvicorn refuses a body that disagrees with the Content-Length it was given (a
                # 304 carrying the length of the full response does): it closes the connection.
                log.error("response body of %d bytes for a content-length of %d", len(body), self.length)
                self._close_client()
        self._finish_response()

    def _release(self, conn: Connection) -> None:
        conn.listener = None
        conn.waiting = False
        self.client.finish(conn)

    def _abort_midway(self, conn: Connection, why: str | None) -> None:
        """After the head went out nothing honest is left but to cut the client connection."""
        conn.listener = None
        conn.waiting = False
        conn.abort()
        conn.busy = False
        if why is not None:
            log.warning("%s (request %s)", why, self.request_id)
        self._close_client()
        self._done(conn_error=None)

    def _close_client(self) -> None:
        self.keep = False
        transport = self.transport
        if not transport.is_closing():
            transport.close()

    def _finish_response(self) -> None:
        self._done(conn_error=None)

    def _fail(self, exc: UpstreamError) -> None:
        """Before the head: the same 502 / 504 (and warning) as ``forward_http``."""
        # GET: the only method the fast path takes (``FastProxy.take``).
        kind, error = upstream_failure(exc, "GET", self.base, self.target, self.request_id)
        self.chunked = False
        self._write_whole(error_response(error, request_id=self.request_id))
        self._done(conn_error=kind)

    def _done(self, conn_error: str | None, *, upstream: bool = True) -> None:
        if self.phase == _DONE:
            return
        self.phase = _DONE
        self.conn = None
        if upstream:
            fast = self.fast
            if conn_error is None:
                if fast.observe_upstream is not None:
                    fast.observe_upstream(time.perf_counter() - self.started)
            elif fast.metrics is not None:
                fast.metrics.observe_upstream(time.perf_counter() - self.started, conn_error)
        self.done(self.status, self.size, self.log)
        # The response is complete: close unless kept alive, else serve what is queued.
        self.response_complete = True
        transport = self.transport
        if not (self.keep and not self.gone and self.keep_alive and not transport.is_closing()):
            transport.close()
        self.proto.on_response_complete()

    def answer(self, answer: Answer) -> None:
        """A response made on the spot (a denial): written as uvicorn writes it, and logged."""
        self._write_whole(answer)
        self._done(None, upstream=False)

    def _write_whole(self, answer: Answer) -> None:
        """A response we made (an upstream failure or a denial), head and body in one write, as
        uvicorn writes it."""
        status, headers, body = answer
        self.status = status
        try:
            head, _, self.keep = encode_head(
                status,
                headers,
                request_id=self.request_id.encode(),
                keep_alive=self.keep,
                default_headers=self.default_headers,
            )
        except BadHead:  # pragma: no cover - our own headers
            head = b""
            self.keep = False
        self.size = len(body)
        self._write(head + body)

    # --- the client went away (the protocol's ``connection_lost``) ---------------------------

    @property
    def disconnected(self) -> bool:
        return self.disconnected_

    @disconnected.setter
    def disconnected(self, value: bool) -> None:
        self.disconnected_ = value
        if value:
            self.client_gone()

    def client_gone(self) -> None:
        if self.phase == _DONE:
            return
        self.gone = True
        conn = self.conn
        if self.phase == _STREAM and conn is not None:
            self._abort_midway(conn, None)
        # Waiting for the head: the response is still read (and a small one's connection pooled),
        # as the ASGI path does; only nothing is written.


class FastProxy:
    """Built once per listener by the composition root over the gateway's ``plan_now`` and the
    upstream client; ``take`` runs inside the access log (``AccessLog.taking``)."""

    def __init__(
        self,
        plan: Callable[[dict[str, Any]], Forward | Answer | None],
        client: Http1Client,
        metrics: Metrics | None,
    ) -> None:
        self.plan = plan
        self.client = client
        self.metrics = metrics
        self.observe_upstream = metrics.upstream_observer() if metrics is not None else None
        self.heads = HeadMemo()

    def take(self, scope: dict[str, Any], done: Done, proto: Any, keep_alive: bool) -> Relay | None:
        """Serve the request from uvicorn's protocol ``proto``, or None (nothing touched): the
        ASGI path serves it. Asked only for a GET with no body and nothing in flight on the
        connection (``sidecar.http_protocol``).

        A request forwarded from a kept plan with a replay (``Forward.replay``: the protocol may
        remember it) leaves ``scope["sidecar.relay"]``: ``relay(request_id, done, proto,
        keep_alive)``, which serves the same request again as this call would have, from the
        plan's encoded head with that request id, while the replay holds; None, with nothing
        recorded, once it does not."""
        planned = self.plan(scope)
        if planned is None:
            return None
        request_id: str = scope["sidecar.request_id"]
        if not isinstance(planned, Forward):
            relay = self._start(proto, keep_alive, done, request_id, None, b"", "", b"", None)
            relay.answer(planned)
            return relay
        origin = self.client.origin(planned.base)
        plan = planned.plan
        log = None
        if plan is None:
            rewrite = planned.rewrite
            if rewrite is None:
                payload = self.client.request_head("GET", origin, planned.target, planned.headers)
            else:  # a new path: the session's header block for its rewrite, this request's ids put in
                block = rewrite.block
                if not block or rewrite.origin is not origin:
                    block = rewrite.block = self.client.header_block(origin, rewrite.headers)
                    rewrite.origin = origin
                if planned.request_id is not None:
                    block = block.replace(REQUEST_ID_SLOT, planned.request_id)
                if planned.traceparent is not None:
                    block = block.replace(TRACEPARENT_SLOT, planned.traceparent)
                payload = b"GET %s%s HTTP/1.1\r\n%s" % (origin.prefix, planned.target, block)
                log = rewrite.log
        else:  # a cached plan: its head encoded once, this request's id put in
            log = plan.log
            payload = plan.head
            if not payload:
                payload = plan.head = self.client.request_head("GET", origin, plan.target, plan.headers)
            if planned.request_id is not None:
                payload = payload.replace(REQUEST_ID_SLOT, planned.request_id)
            traced = planned.traceparent is not None
            if traced:
                payload = payload.replace(TRACEPARENT_SLOT, planned.traceparent)  # type: ignore[arg-type]
            if planned.replay is not None and traced == (ONE_TRACEPARENT in scope):
                # Whether the access log took the client's id: its slot is then where the client
                # put it, else last (the client's dropped).
                client_id = scope.get(ONE_REQUEST_ID)
                honoured = client_id is not None and client_id == planned.request_id
                scope["sidecar.relay"] = self._replaying(plan, origin, planned.replay, traced, honoured)
        relay = self._start(
            proto, keep_alive, done, request_id, origin, payload, planned.base, planned.target, log
        )
        relay.begin()
        return relay

    def _replaying(
        self, plan: Plan, origin: Origin, replay: Callable[[], bool], traced: bool, honoured: bool
    ) -> Callable[..., Relay | None]:
        head, base, target, log = plan.head, plan.base, plan.target, plan.log
        # The head around its request id slot: each request's is the id joined in (``replace``
        # searched the head for the slot every time).
        around = head.split(REQUEST_ID_SLOT)
        start = self._start

        def relayed(
            request_id: str,
            done: Done,
            proto: Any,
            keep_alive: bool,
            x_request_id: bytes | None = None,
            traceparent: bytes | None = None,
        ) -> Relay | None:
            rid = request_id.encode()
            # The same request as planned: a traceparent in its slot or none, the access log's id
            # decision the same (the client's id, in its place, or ours, last). Checked before
            # ``replay`` records anything.
            if (
                (traceparent is not None) != traced
                or (x_request_id is not None and rid == x_request_id) != honoured
                or not replay()
            ):
                return None
            payload = rid.join(around)
            if traced:
                payload = payload.replace(TRACEPARENT_SLOT, traceparent)  # type: ignore[arg-type]
            relay = start(proto, keep_alive, done, request_id, origin, payload, base, target, log)
            relay.begin()
            return relay

        return relayed

    def _start(
        self,
        proto: Any,
        keep_alive: bool,
        done: Done,
        request_id: str,
        origin: Origin | None,
        payload: bytes,
        base: str,
        target: bytes,
        log: dict[Any, Any] | None,
    ) -> Relay:
        relay = Relay(
            self,
            proto,
            request_id,
            origin,
            payload,
            base,
            target,
            keep_alive,
            proto.server_state.default_headers,
            done,
            log,
        )
        # From here the protocol sees a response in flight: a pipelined request waits its turn.
        proto.cycle = relay
        return relay

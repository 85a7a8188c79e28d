"""uvicorn's httptools protocol with a guard on the request target, before any app sees it, and
synchronous answers for requests that need no I/O.

Refused here, with the connection closed, because by the time a request reaches ASGI the
evidence is gone or the harm is done:

- a request line longer than ``serve.<listener>.max_request_line_size`` (default 8 KiB): 414.
  httptools has no limit of its own and uvicorn would buffer the target whole;
- a raw ``#`` in the target: 400. A fragment is never sent by a client (RFC 9112 §3.2), and
  httptools silently drops it, so ``/public#/../admin`` would reach the app as ``/public`` while
  a proxy in front may have read something else;
- a path that is not UTF-8 after one percent-decode (``%C0%AF``, ``%FF``): 400. Lenient decoders
  downstream turn such bytes into ``/`` or U+FFFD, so two readers would disagree on the path.

**Synchronous answers** (``serve.public.fast_path``). A cached decision costs the app ~25 µs but
uvicorn's ASGI machinery around it (a Task per request, the cycle object, ``send`` messages and
their checks) about as much again. So the protocol first asks its ``responders``, in order, for an
answer made on the spot, and writes it to the transport itself; only when none answers does the
request go down uvicorn's ASGI path, unchanged.

The contract of a responder (``Responder``), for whoever adds one:

- it is called with the request's scope, complete as uvicorn would hand it to the app (``type``,
  ``method``, ``path``, ``raw_path``, ``query_string``, ``headers`` with lower-case names,
  ``client``, ``http_version``...), from the parser's callback, on the event loop: it must not
  block, and it cannot await;
- it is asked only when the answer cannot be out of order or need the request body: no response
  in flight on the connection, no body (``transfer-encoding``, or a ``content-length`` other
  than 0), no ``Expect``, no upgrade, an origin-form ASCII target, the transport open and not
  paused for writing (otherwise it is the ASGI path, which waits for the drain);
- it returns ``(status, headers, body)`` exactly as the ASGI app would send them (``content-length``
  included, as its value; for ``HEAD`` the body may be the full one: it is not written, as
  uvicorn does), a coroutine that gives them ("Answers that need I/O" below), or None: "not
  mine, or needs I/O". None must leave no trace: nothing logged, counted or left in the scope,
  since the ASGI path then serves the same request;
- what surrounds the app on the ASGI path (the access log, request id, metrics) surrounds the
  responder too: ``AccessLog.answering`` wraps it (``sidecar.app.fast_responders``).

The protocol then writes what uvicorn's ``RequestResponseCycle.send`` would (status line, default
headers, the headers lower-cased and checked, ``connection: close`` when the connection is not
kept alive, no body for ``HEAD``; uvicorn's access line if it has one), closes the connection
when not kept alive, and does what ``on_response_complete`` does (the request count, the
keep-alive timer). These are uvicorn internals: pyproject pins uvicorn's minor version and
tests/proxy/test_fast_path.py fails loudly if the ones used here change. A responder that raises
is a bug: logged, and the request goes down the ASGI path.

**Answers that need I/O.** A responder may answer a ``Later`` instead of the tuple (``sidecar.waiting``:
whoami and the decisions on a session-cache miss, ``Gateway.answer_later``): its ``make()``, called
once the I/O it waits for (``later.shared``, the session's load, shared by every request of that
token meanwhile) has settled, gives the tuple, with everything the ASGI path around the app
records for that request (``AccessLog.answering``). The protocol subscribes to it and puts a
stand-in for uvicorn's cycle in place meanwhile (``LaterCycle``), so the connection behaves as with
an ASGI task in flight: a request pipelined behind it is queued by uvicorn and started once the
answer is written, ``shutdown`` turns keep-alive off, a graceful shutdown waits for the load's task
(in uvicorn's tasks; cancelled when out of time, it gives the waiting requests their 500). Then it
does what uvicorn's cycle does for an app sending that answer in one message: a ``make`` that
raises gets uvicorn's 500 (and its log record); with the client's side paused for writing, the
write waits for the drain; nothing is written to a client that went away; the answer is written
as ``_write`` writes it (not remembered). That spares a cache miss uvicorn's ASGI machinery (the
cycle, its ``receive`` and ``send`` and their messages, the access log's ``send`` wrapper), the
gateway's dispatch, a second parse of the request, and a task with its chain of coroutines per
request: what is left is the store's reads, once per token in flight.

**Remembered answers.** When ``scope["sidecar.remember"]`` is set (the request was answered once
before), a responder's answer may come with ``scope["sidecar.replay"]``: a callable
``replay(x_request_id) -> request_id | None`` saying that the same request (method, version,
target, headers other than ``x-request-id`` and ``traceparent``, peer address) gets the same
answer, ending with an ``x-request-id`` header of the id ``replay`` returns, for as long as
``replay`` returns one (it makes the request's records, the log line and counters, itself; None:
no longer, nothing recorded). The protocol then keeps the bytes it wrote, split around that id,
in the listener's ``memo`` (``Memo``); the same request again is answered from them: no scope,
no responder, no header encoding or checks (they were checked once). A kept-alive answer only,
with no default headers (``server_header``/``date_header`` off, as ``sidecar serve`` runs uvicorn).

**Remembered answers of a load.** An answer that needed I/O (a ``Later``) may leave, once made,
``scope["sidecar.replay_later"]``: ``again(x_request_id)``, None when the same request must take
the full path (nothing recorded), else a ``Later`` of the I/O the same request needs again (the
session cache off, every request loads the session: ``SessionResolver.loading``, shared by the
requests of that token meanwhile), whose ``make()`` is the request id of the same answer (the
load gave the very session value the answer was made from; the request's records made), or
another answer, with its records (the load gave another). The protocol keeps it in the memo as
it keeps ``replay`` (the second time; ``RememberedLater``, under the key the request had), and
answers the same request again from it: no scope, no responder, the remembered bytes written
with the new id once the load has settled, behind a ``LaterCycle`` as above; another answer is
written as ``_write`` writes it, and the entry forgotten.

**Answers remembered across one header's values.** With the replay, a responder may put
``scope["sidecar.vary"] = (name, same)``, ``name`` one of ``VARIABLE``: the same answer is given to
the same request with another value of that header (its first; the request has it) when
``same(value)`` returns something other than None (what it returns is handed to ``replay`` as its
second argument: ``replay(x_request_id, note)``, the records made for that request). ``same`` is
pure. The protocol keeps such an answer under the request's key with that header's value left out
(``Memo.varied``), once a request so keyed was answered before, and answers from it a request
that the memo does not hold under its own key: a proxy asking about a new URI each time for the
same client gets its answer without scope, responders or header checks.

**Remembered relays.** A relay (``sidecar.proxy.fast`` inside ``AccessLog.taking``) that served a
request may leave ``scope["sidecar.relay"]``: ``relay(protocol, keep_alive, x_request_id,
traceparent)``, which serves the same request again the way it did (it takes the request over as a
relay does, with its own request id, log line and counters) for as long as it returns True; False:
no longer, nothing recorded. It is asked for only when the protocol sets
``scope["sidecar.keep_relay"]``: a kept-alive request without a header in ``VARIABLE``, with at
most one ``x-request-id`` and one ``traceparent``. The protocol keeps it in the memo under the
request's key (``RememberedRelay``); the same request again is relayed from it with no scope, no
responder, no relay asked.

The key leaves the values of ``x-request-id`` and ``traceparent`` out (a front proxy and a tracing
mesh send new ones with every request): the relay is kept with the request's ``_shape`` (where
those headers are) and serves only requests of that shape, handed the two values. The access log
decides the request id from the x-request-id and the peer (in the key) as on the full path
(``AccessLog._relaying``), and the relay serves only when that decision is the one its forward
plan was made for (the client's id, in its place, or ours, last); a traceparent goes upstream as
sent, in its slot of the forward plan (``scope["sidecar.one_traceparent"]``, set for a request
with one: ``Gateway._forward``). A request of another shape or decision takes the full path, and
the relay kept then replaces the other; one with two of either header is never remembered.

**Known requests.** A client asks the same thing with the same bytes (a keep-alive connection of a
load generator, a browser polling a URL, an app calling whoami). When a read held one request
whole, from its start, and the memo answered it, its bytes are kept with the memo key they parsed
to (``KnownRequest``; at most ``Memo.LIMIT``, none longer than ``KNOWN_REQUEST_SIZE``, none with a
header the key leaves out or varies on, a body, or a connection not kept alive). A read of the
same bytes from the same peer, with the parser at the start of a request, is then answered from
the memo under that key without being parsed: llhttp would give the same request and leave the
parser where the next request starts, as it is. If the memo no longer answers it, the bytes are
parsed as any others. That spares the parse and the protocol's callbacks (~20 % of the
instructions of a relayed request, bench/proxy_path.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from sidecar import waiting
from sidecar.request_target import REASONS, log_refusal, target_problem

log = logging.getLogger("sidecar")

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
Later = waiting.Later[Answer]
Later2 = waiting.Later["str | Answer"]
"""A remembered answer's ``Later`` (``RememberedLater``): its request id again, or another answer."""
Responder = Callable[[Any], Answer | Later | None]
Relay = Callable[[Any, Any, bool], bool]
# (method, version, target, peer, headers): the headers with the value of the first in
# ``VARIABLE`` None when the request has one, and then the request's key is (that key, the value).
MemoKey = tuple[Any, ...]
VARIABLE = frozenset({b"x-original-uri", b"x-forwarded-uri"})
"""The request headers a remembered answer may be varied on (``sidecar.vary``; the decision
endpoints' original URI)."""


class Memo(dict[MemoKey, "Remembered | RememberedRelay | RememberedLater"]):
    """The remembered answers of one listener, by request; emptied when it reaches ``LIMIT``
    entries, so clients choosing their headers cannot grow it without bound.

    An answer is remembered the second time its request is answered (``seen`` holds the keys
    answered once): what a remembered answer keeps alive (its bytes, the replay's closures) costs
    the garbage collector, and a request never asked again (a proxy whose users each ask for
    their own URIs) would pay that for nothing: it doubled such a request's CPU time
    (bench/decision_path.py ``protocol_unique``)."""

    LIMIT = 1024

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[MemoKey] = set()
        # Answers by request key with the value of one header in ``VARIABLE`` left out (None).
        self.varied: dict[MemoKey, Varied] = {}
        # Requests answered from the memo, by their bytes as read (``KnownRequest``).
        self.requests: dict[bytes, KnownRequest] = {}


KNOWN_REQUEST_SIZE = 4 * 1024
"""The longest request whose bytes the memo keeps (``KnownRequest``): at most ``Memo.LIMIT`` of
them, 4 MiB."""


class KnownRequest:
    """What parsing a request's bytes gave, for the same bytes read again (module docstring,
    "Known requests"): the peer it came from (part of the memo key) and its memo key. (Such a
    request keeps the connection alive: ``_know``.)"""

    __slots__ = ("key", "peer")

    def __init__(self, peer: str | None, key: MemoKey) -> None:
        self.peer = peer
        self.key = key


class Remembered:
    """An answer as written, split around its request id, and the ``replay`` that vouches for it."""

    __slots__ = ("head", "replay", "tail")

    def __init__(self, head: bytes, tail: bytes, replay: Callable[[bytes | None], str | None]) -> None:
        self.head = head
        self.tail = tail
        self.replay = replay


class RememberedRelay:
    """A proxied request's relay (``sidecar.proxy.fast``), served again for the same request:
    ``relay(protocol, keep_alive, x_request_id, traceparent)`` (the request's headers of those
    names, or None) is True when it took the request over as the relays do, False, with nothing
    recorded, when the request must take the full path. ``shape``: the request's ``_shape``, which
    the request served again must have."""

    __slots__ = ("relay", "shape")

    def __init__(
        self, relay: Callable[[Any, bool, bytes | None, bytes | None], bool], shape: tuple[int, int]
    ) -> None:
        self.relay = relay
        self.shape = shape


class RememberedLater:
    """An answer made from a load of the session store, as written, split around its request id:
    ``again(x_request_id)`` (``sidecar.logs.AccessLog._replaying_later``) is None when the same
    request must take the full path, else a ``Later`` of a new load whose ``make()`` is the request
    id of this answer again (records made) or another answer (the load gave another session).
    ``scope``: the first request's (for ``_write``, of another answer: the same method, target
    and peer)."""

    __slots__ = ("again", "head", "scope", "tail")

    def __init__(
        self, head: bytes, tail: bytes, again: Callable[[bytes | None], Later2 | None], scope: Any
    ) -> None:
        self.head = head
        self.tail = tail
        self.again = again
        self.scope = scope


class Varied:
    """A remembered answer for any value of one header that ``same`` vouches for
    (``sidecar.vary``)."""

    __slots__ = ("head", "replay", "same", "tail")

    def __init__(
        self,
        head: bytes,
        tail: bytes,
        same: Callable[[bytes], Any],
        replay: Callable[[bytes | None, Any], str | None],
    ) -> None:
        self.head = head
        self.tail = tail
        self.same = same
        self.replay = replay


# Request headers on_header looks at: framing, Expect, and the two a remembered answer is not keyed on.
_NOTED = frozenset(
    {b"expect", b"content-length", b"transfer-encoding", b"x-request-id", b"traceparent", *VARIABLE}
)
_UNKEYED = (b"x-request-id", b"traceparent")
_NO_IDS = (-1, -1)  # the ``_shape`` of a request with neither header
_UNMADE: Any = object()  # the ``_memo_key`` of a request whose keys are not made yet (``_keys``)
ONE_TRACEPARENT = "sidecar.one_traceparent"  # sidecar.proxy.forward.ONE_TRACEPARENT
ONE_REQUEST_ID = "sidecar.one_request_id"  # sidecar.proxy.forward.ONE_REQUEST_ID
KEEP_RELAY = "sidecar.keep_relay"  # sidecar.proxy.gateway.KEEP_RELAY (the protocol imports no proxy)
ID_HEADERS = "sidecar.id_headers"  # sidecar.logs.ID_HEADERS (the protocol imports no logs)
"""Set for the responders and relays: the request's first ``x-request-id`` and ``traceparent``
values (None: no such header), as ``on_header`` noted where they are, when it has at most one of
each; then ``AccessLog._request_id`` need not look for them in the headers again. Popped after."""
_NO_ID_VALUES = (None, None)
REPLAY_LATER = "sidecar.replay_later"  # sidecar.logs.REPLAY_LATER: the replay of a ``RememberedLater``
UNFRAMED = "sidecar.unframed"  # sidecar.proxy.gateway.UNFRAMED
"""Set for the relays when the request has neither a Content-Length nor a Transfer-Encoding header:
the gateway's framing check has nothing to look at."""
"""``relay(protocol, scope, keep_alive)``: True when it took the request over (a GET without a body,
nothing in flight): it sets ``protocol.cycle`` to a stand-in for uvicorn's cycle (its
``response_complete``, ``keep_alive``, ``disconnected``), writes the response to the transport
itself and calls ``protocol.on_response_complete()`` when done (``sidecar.proxy.fast``)."""


class _NoEvent:
    """``connection_lost`` sets its cycle's ``message_event``: nobody waits on a ``LaterCycle``'s."""

    __slots__ = ()

    def set(self) -> None:
        pass


class LaterCycle:
    """Stands in for uvicorn's ``RequestResponseCycle`` while an answer that needs I/O is awaited
    (``GuardedHttpToolsProtocol._later``): the protocol reads and writes these attributes (a
    pipelined request waits while ``response_complete`` is false, ``shutdown`` clears
    ``keep_alive``, ``connection_lost`` sets ``disconnected``)."""

    __slots__ = ("body", "disconnected", "keep_alive", "keys", "more_body", "response_complete")
    message_event = _NoEvent()

    def __init__(self, keep_alive: bool, keys: tuple[MemoKey, MemoKey | None] | None = None) -> None:
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.more_body = False
        self.body = bytearray()
        # The request's memo keys (``_keys``) when its answer may be remembered (``_remember_later``).
        self.keys = keys


# What ``RequestResponseCycle.send_500_response`` sends for an app that raised before its response.
SERVER_ERROR: Answer = (
    500,
    [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"21"),
        (b"connection", b"close"),
    ],
    b"Internal Server Error",
)


class Heads(dict[tuple[Any, ...], tuple[bytes, bytes, int, bool]]):
    """The heads ``_write`` made, by status, keep-alive and headers but the request id (the last):
    (the head up to the id, after it, the Content-Length, the keep-alive after the headers). An
    answer is made again and again with the same headers but its id (a decision for one session
    and rule, asked through one proxy; the misses of one token): uvicorn's checks and the encoding
    are made once. Emptied at ``LIMIT`` entries."""

    LIMIT = 512

    def keep(self, key: tuple[Any, ...], head: tuple[bytes, bytes, int, bool]) -> None:
        if len(self) >= self.LIMIT:
            self.clear()
        self[key] = head


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Subclass per listener with ``max_request_line`` and ``responders`` set (``guarded_protocol``)."""

    max_request_line = 8 * 1024
    responders: tuple[Responder, ...] = ()
    relays: tuple[Relay, ...] = ()
    memo: Memo | None = None
    heads: Heads | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._answered = False  # the current request was answered on the spot
        # The current request announced a body (True), has a Content-Length of 0 alone (False), or
        # neither a Content-Length nor a Transfer-Encoding header (None: ``UNFRAMED``).
        self._framed: bool | None = None
        self._unkeyed = False  # the current request has an x-request-id or traceparent header
        # The index in ``headers`` of the current request's x-request-id and of its traceparent:
        # -1 none, -2 more than one.
        self._id_at = -1
        self._trace_at = -1
        self._memo_key: MemoKey | None = None  # the current request's (None: no request parsed)
        self._vary_at = -1  # the index in ``headers`` of the first header in ``VARIABLE``
        self._vary_key: MemoKey | None = None  # the memo key with that header's value left out
        self._peer: str | None = None
        # The keep-alive timeout after answers made here (``_complete``): the loop time of the
        # last one when nothing was received since, and the one timer that checks it.
        self._idle_at: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        # The parser is at the start of a request (none begun since the last kept-alive one
        # ended), the requests begun in the current read, and whether the current request was
        # answered from the memo: together, when a read held one request whole (``_know``).
        self._at_start = True
        self._begun = 0
        self._from_memo = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._peer = self.client[0] if self.client else None

    def _refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` and close. Sticky for the connection: the parser goes on through the
        bytes already received, and a request pipelined behind a refused one must not run."""
        self._refused = True
        body = reason.encode("ascii")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, REASONS[status], len(body), body)
        )
        self.transport.close()
        log_refusal(status, reason)

    def _should_upgrade(self) -> bool:
        return not self._refused and super()._should_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def data_received(self, data: bytes) -> None:
        # uvicorn's, with its keep-alive disarm inlined (it runs for every read).
        self._idle_at = None
        task = self.timeout_keep_alive_task
        if task is not None:
            task.cancel()
            self.timeout_keep_alive_task = None
        start = self._at_start
        if start:
            memo = self.memo
            if memo is not None and memo.requests:
                known = memo.requests.get(data)
                if known is not None and known.peer == self._peer and self._answer_known(known):
                    return
        self._begun = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if start and self._from_memo and self._begun == 1 and self._at_start:
            self._know(data)

    def on_message_begin(self) -> None:
        # uvicorn's, but the scope: ``_begin_scope`` makes it once the memo has not answered.
        if not self._refused:
            self._idle_at = None  # a request pipelined behind an answer made here: not idle
            self._at_start = False
            self._begun += 1
            self._from_memo = False
            self._answered = False
            self._framed = None
            self._unkeyed = False
            self._id_at = -1
            self._trace_at = -1
            self._memo_key = None
            self._vary_at = -1
            self._vary_key = None
            self.url = b""
            self.expect_100_continue = False
            self.headers = []

    def _begin_scope(self) -> None:
        """The scope uvicorn's ``on_message_begin`` makes."""
        self.scope = {  # type: ignore[typeddict-item]
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }

    def on_url(self, url: bytes) -> None:
        if self._refused:
            return
        self.url += url
        # Method, target and "HTTP/1.1" with their two spaces and CRLF: the request line.
        if len(self.parser.get_method()) + len(self.url) + 12 > self.max_request_line:
            self._refuse(414, f"request line longer than {self.max_request_line} bytes")
        elif url.find(b"#") != -1:  # not ``in``: see sidecar.proxy.paths.normalise_path
            self._refuse(400, "a '#' in the request target")

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, inlined (it runs for every header of every request), noting a body.
        if self._refused:
            return
        name = name.lower()
        value = value.rstrip(b" \t")
        if name in _NOTED:
            if name == b"expect":
                if value.lower() == b"100-continue":
                    self.expect_100_continue = True
            elif name == b"transfer-encoding" or name == b"content-length":
                if value != b"0" or name == b"transfer-encoding":
                    self._framed = True
                elif self._framed is None:
                    self._framed = False
            elif name in VARIABLE:
                if self._vary_at < 0:
                    self._vary_at = len(self.headers)
            elif name == b"x-request-id":
                self._unkeyed = True
                self._id_at = len(self.headers) if self._id_at == -1 else -2
            else:
                self._unkeyed = True
                self._trace_at = len(self.headers) if self._trace_at == -1 else -2
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        if self.memo is not None:
            self._memo_key = _UNMADE  # made when first asked for (``_keys``)
            if self._remembered():
                self._answered = self._from_memo = True
                return
        self._begin_scope()
        # ``on_url`` refused a "#": what is left to check needs a "%".
        problem = target_problem(self.url) if self.url.find(b"%") != -1 else None
        if problem is not None:
            self._refuse(400, problem)
            return
        if (self.responders or self.relays) and self._answer_now():
            self._answered = True
            return
        # A request answered on the spot earlier in this read armed the keep-alive timer: this
        # one is in flight now (uvicorn disarms it for every read, before the parser runs).
        self._unset_keepalive_if_required()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused and not self._answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            # After a request that does not keep the connection alive llhttp takes no other.
            self._at_start = self.parser.should_keep_alive()
            if not self._answered:
                super().on_message_complete()

    # --- synchronous answers ---------------------------------------------------------------

    def _know(self, data: bytes) -> None:
        """Keep the bytes of a request the memo answered, read whole in one read, with what parsing
        them gave (``KnownRequest``): the same bytes again are answered without parsing them
        (``_answer_known``). Not a request with a header the memo key leaves out or varies on
        (their values change from request to request), nor one with a body."""
        memo = self.memo
        key = self._memo_key
        if (
            memo is None
            or key is None
            or key is _UNMADE
            or self._unkeyed
            or self._vary_at >= 0
            or self._framed
            or len(data) > KNOWN_REQUEST_SIZE
        ):
            return
        entry = memo.pop(key, None)
        if entry is None:  # (answered from ``Memo.varied``, or forgotten meanwhile)
            return
        # Kept again under this very key object: a known request's look-up then finds it by
        # identity, without comparing the key's headers (~1k instructions a request).
        memo[key] = entry
        requests = memo.requests
        if len(requests) >= memo.LIMIT:
            requests.clear()
        requests[data] = KnownRequest(self._peer, key)

    def _answer_known(self, known: KnownRequest) -> bool:
        """Answer from the memo a read whose bytes are a ``KnownRequest``'s, as parsing them would
        (``on_message_begin``, ``on_url``, ``on_header`` and ``on_headers_complete`` give the same
        parse for the same bytes, and the parser is left at the start of the next request, where
        it ended the known one); False, with nothing done, when the memo does not answer it: the
        bytes are then parsed."""
        if self._refused:
            return False
        self._memo_key = known.key
        self._vary_key = None
        self._unkeyed = False
        self._id_at = self._trace_at = self._vary_at = -1
        # (A known request keeps the connection alive: ``_know`` is asked only then.)
        if self._remembered(True):
            self._answered = True
            return True
        return False

    def _remembered(self, keep_alive: bool | None = None) -> bool:
        """Answer from the memo (module docstring); True when it did. An answer is remembered only
        when every condition of ``_answer_now`` that the request decides held for it, so the same
        request meets them again; what the connection decides is checked here. ``keep_alive``:
        the request's (``_answer_known``), else the parser's."""
        memo = self.memo
        assert memo is not None
        if not memo and not memo.varied:
            return False  # (the request's keys are made when asked for: ``_keys``)
        varied = None
        key, vkey = self._keys()
        remembered = memo.get(key)
        if remembered is None and vkey is not None:
            varied = memo.varied.get(vkey)
        if remembered is None and varied is None:
            return False
        headers = self.headers
        incoming = None
        if self._id_at >= 0:
            incoming = headers[self._id_at][1]
        elif self._id_at == -2:
            for name, value in headers:
                if name == b"x-request-id":
                    incoming = value
                    break
        cycle = self.cycle
        transport = self.transport
        if (
            (cycle is not None and not cycle.response_complete)
            or transport.is_closing()
            or self.flow.write_paused
            or self.server_state.default_headers
        ):
            return False
        if isinstance(remembered, RememberedRelay):
            return self._relay_again(remembered, key, keep_alive)
        if isinstance(remembered, RememberedLater):
            return self._again_later(remembered, key, incoming, keep_alive)
        if remembered is not None:
            request_id = remembered.replay(incoming)
            if request_id is None:
                del memo[key]
                return False
            head, tail = remembered.head, remembered.tail
        else:
            assert varied is not None and vkey is not None
            note = varied.same(headers[self._vary_at][1])
            if note is None:  # not for this value: the responders answer it
                return False
            request_id = varied.replay(incoming, note)
            if request_id is None:
                del memo.varied[vkey]
                return False
            head, tail = varied.head, varied.tail
        transport.write(b"%b%b%b" % (head, request_id.encode(), tail))
        self._complete()
        return True

    def _keys(self) -> tuple[MemoKey, MemoKey | None]:
        """The request's memo key and, with a header in ``VARIABLE``, its key with that header's
        value left out (``Memo.varied``; the memo key is then that key and the value). Made once
        per request, when first asked for: a request when nothing is remembered or seen (every
        request with the session cache off) is spared them."""
        key = self._memo_key
        if key is not _UNMADE:
            assert key is not None  # (asked for about a parsed request only)
            return key, self._vary_key
        parser, headers = self.parser, self.headers
        method, version, url, peer = parser.get_method(), parser.get_http_version(), self.url, self._peer
        at = self._vary_at
        if at < 0:
            keyed = self._keyed(headers) if self._unkeyed else tuple(headers)
            key = self._memo_key = (method, version, url, peer, keyed)
            return key, None
        # One tuple of the headers built, not two.
        blank: list[tuple[bytes, bytes | None]] = list(headers)
        name, value = headers[at]
        blank[at] = (name, None)
        vkey = self._vary_key = (
            method,
            version,
            url,
            peer,
            self._keyed(blank) if self._unkeyed else tuple(blank),
        )
        key = self._memo_key = (vkey, value)
        return key, vkey

    def _shape(self) -> tuple[int, int]:
        """Where the request's ``x-request-id`` and ``traceparent`` are among its headers (-1: none,
        -2: more than one). With the memo key, which leaves their values out, it gives the
        request's headers but for those values. (Whether the access log takes the id, which moves
        it in the forward plan, the relay checks itself: ``FastProxy.take``.)"""
        at, trace = self._id_at, self._trace_at
        if at == -1 and trace == -1:
            return _NO_IDS
        return at, trace

    def _keyed(self, headers: list[Any]) -> tuple[Any, ...]:
        """``headers`` without ``x-request-id`` and ``traceparent`` (the request has one of them),
        for the memo key: cut out where ``on_header`` saw them (a comprehension when there are two
        of one)."""
        at, trace = self._id_at, self._trace_at
        if at == -2 or trace == -2:
            return tuple([h for h in headers if h[0] not in _UNKEYED])
        if trace < 0:
            return tuple(headers[:at] + headers[at + 1 :])
        if at < 0:
            return tuple(headers[:trace] + headers[trace + 1 :])
        first, second = (at, trace) if at < trace else (trace, at)
        return tuple(headers[:first] + headers[first + 1 : second] + headers[second + 1 :])

    def _relay_again(self, remembered: RememberedRelay, key: MemoKey, keep_alive: bool | None = None) -> bool:
        """A remembered relay (module docstring) serves the request; False sends it the full way.
        The key leaves a request's ``x-request-id`` and ``traceparent`` out; the relay serves a
        request of its own ``shape`` only (the others take the full way, and the relay kept then
        replaces it) and is handed their values."""
        at, trace = self._id_at, self._trace_at
        if self._unkeyed:
            if self._shape() != remembered.shape:  # (with two of a header: never remembered)
                return False
        elif remembered.shape is not _NO_IDS:
            return False
        if self.limit_concurrency is not None:
            return False
        headers = self.headers
        try:
            taken = remembered.relay(
                self,
                self.parser.should_keep_alive() if keep_alive is None else keep_alive,
                headers[at][1] if at >= 0 else None,
                headers[trace][1] if trace >= 0 else None,
            )
        except Exception:
            log.exception("a remembered relay failed; the request goes down the full path")
            taken = False
        if not taken:
            self.memo.pop(key, None)  # type: ignore[union-attr]
        return taken

    def _remember(self, head: bytes, tail: bytes, scope: Any) -> None:
        """Keep what ``_write`` wrote (before the request id, after it) for the memo, when its
        responder offered a replay; note the request as answered once when it did not (it was not
        asked to: ``_answer_now``)."""
        replay = scope.pop("sidecar.replay", None)
        vary = scope.pop("sidecar.vary", None)
        memo = self.memo
        if memo is None or self._memo_key is None:  # (no request parsed: a test's ``_write``)
            return
        key, vkey = self._keys()
        seen = memo.seen
        if len(seen) >= memo.LIMIT:
            seen.clear()
        if replay is None:
            seen.add(key)
            if vkey is not None:
                seen.add(vkey)
            return
        if key in seen:
            seen.discard(key)
            if len(memo) >= memo.LIMIT:
                memo.clear()
            memo[key] = Remembered(head, tail, replay)
        else:
            seen.add(key)
        if (
            vkey is not None
            and vkey in seen
            and vary is not None
            and vary[0] == self.headers[self._vary_at][0]
        ):
            seen.discard(vkey)
            varied = memo.varied
            if len(varied) >= memo.LIMIT:
                varied.clear()
            varied[vkey] = Varied(head, tail, vary[1], replay)

    def _remember_later(
        self, head: bytes, tail: bytes, scope: Any, keys: tuple[MemoKey, MemoKey | None]
    ) -> None:
        """``_remember`` for an answer made from a load (``RememberedLater``), under the keys its
        request had (the parser may be on a request pipelined behind it by now). Not across one
        header's values (``Varied``): only noted then, as ``_remember`` notes an answer it does not
        keep."""
        again = scope.pop(REPLAY_LATER, None)
        memo = self.memo
        if memo is None:
            return
        key, vkey = keys
        seen = memo.seen
        if len(seen) >= memo.LIMIT:
            seen.clear()
        if again is None or key not in seen:
            seen.add(key)
            if vkey is not None:
                seen.add(vkey)
            return
        seen.discard(key)
        if len(memo) >= memo.LIMIT:
            memo.clear()
        memo[key] = RememberedLater(head, tail, again, scope)

    def _answer_now(self) -> bool:
        """Ask the responders; True when the request is done with: one answered and the answer
        went out (or, for a broken answer, the connection was closed), or the connection is closing.
        The conditions are the module docstring's."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return False
        if self.transport.is_closing():
            # Pipelined behind an answer that closed the connection: uvicorn would queue it behind
            # that response and then never run it; neither do we.
            return True
        if (
            self.expect_100_continue
            or self._framed
            or self.flow.write_paused
            or self.limit_concurrency is not None
            or self.root_path
            or self.url[:1] != b"/"
        ):
            return False
        parser = self.parser
        if parser.should_upgrade():
            return False
        # The scope as uvicorn's on_headers_complete completes it.
        parsed = httptools.parse_url(self.url)
        raw_path: bytes = parsed.path
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            return False
        if "%" in path:
            path = urllib.parse.unquote(path)
        method = parser.get_method().decode("ascii")
        http_version = parser.get_http_version()
        scope: Any = self.scope
        scope["method"] = method
        if http_version != "1.1":
            scope["http_version"] = http_version
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = parsed.query or b""
        memo = self.memo
        if memo is not None and memo.seen:
            keys = self._keys()
            if keys[0] in memo.seen or keys[1] in memo.seen:
                scope["sidecar.remember"] = True  # answered once before: a replay is wanted
        at, trace = self._id_at, self._trace_at
        if at == -1 and trace == -1:
            scope[ID_HEADERS] = _NO_ID_VALUES
        elif at != -2 and trace != -2:
            headers = self.headers
            scope[ID_HEADERS] = (
                headers[at][1] if at >= 0 else None,
                headers[trace][1] if trace >= 0 else None,
            )
        for responder in self.responders:
            try:
                answer = responder(scope)
            except Exception:
                log.exception("a synchronous responder failed; the request goes down the ASGI path")
                return False
            if answer is not None:
                keep_alive = http_version != "1.0" and parser.should_keep_alive()
                if isinstance(answer, tuple):
                    self._write(answer, scope, keep_alive)
                else:
                    noted = self._keys() if memo is not None and keep_alive else None
                    self._answer_later(answer, scope, keep_alive, noted)
                return True
        scope.pop("sidecar.remember", None)
        if method == "GET" and http_version == "1.1" and not self.access_log:
            # Answered later, from callbacks (the proxy's upstream hop): the relay stands in for
            # the cycle, so a pipelined request waits for it as for an ASGI response.
            keep_alive = parser.should_keep_alive()
            key = self._keys()[0] if memo is not None else None
            # Not with two of an id header: which one the upstream sees is the access log's to
            # decide, every time (a traceparent goes on as sent, in its slot of the forward plan).
            trace, at = self._trace_at, self._id_at
            keep = memo is not None and key is not None and not self._vary_key and at != -2 and trace != -2
            if keep:
                scope[KEEP_RELAY] = True  # the relay may be remembered (``_keep_relay``)
            if self._framed is None:
                scope[UNFRAMED] = True
            if trace >= 0:
                scope[ONE_TRACEPARENT] = self.headers[trace][1]
            if at >= 0:
                scope[ONE_REQUEST_ID] = self.headers[at][1]
            try:
                for relay in self.relays:
                    if relay(self, scope, keep_alive):
                        if keep:
                            self._keep_relay(scope, key)
                        return True
            except Exception:
                log.exception("a relay failed; the request goes down the ASGI path")
                return False
            finally:
                scope.pop(ID_HEADERS, None)
                scope.pop(KEEP_RELAY, None)
                scope.pop(UNFRAMED, None)
                scope.pop(ONE_TRACEPARENT, None)
                scope.pop(ONE_REQUEST_ID, None)
                scope.pop("sidecar.relay", None)
        scope.pop(ID_HEADERS, None)
        return False

    def _keep_relay(self, scope: Any, key: Any) -> None:
        """Remember the relay a request left (``scope["sidecar.relay"]``: ``sidecar.proxy.fast``
        inside ``AccessLog.taking``), for the same request again (``_remembered``)."""
        relay = scope.get("sidecar.relay")
        memo = self.memo
        if relay is None or memo is None or self.server_state.default_headers:
            return
        if len(memo) >= memo.LIMIT:
            memo.clear()
        memo[key] = RememberedRelay(relay, self._shape())

    def _answer_later(
        self, later: Later, scope: Any, keep_alive: bool, keys: tuple[MemoKey, MemoKey | None] | None = None
    ) -> None:
        """Make a responder's ``Later`` once its I/O has settled (module docstring, "Answers that
        need I/O"), with a stand-in for uvicorn's cycle meanwhile: a request pipelined behind it
        waits its turn. ``keys``: the request's (``_keys``) when its answer may be remembered."""
        cycle = self._waiting(later.shared, keep_alive, keys)
        later.shared.subscribe(functools.partial(self._later, later, scope, cycle))

    def _waiting(
        self, shared: waiting.Shared[Any], keep_alive: bool, keys: tuple[MemoKey, MemoKey | None] | None
    ) -> LaterCycle:
        """The stand-in for uvicorn's cycle while the request waits for ``shared``."""
        cycle = LaterCycle(keep_alive, keys)
        self.cycle = cycle  # type: ignore[assignment]
        # As uvicorn's tasks: a graceful shutdown waits for the I/O (and cancels it when out of time).
        task = shared.task
        tasks = self.tasks
        if task is not None and task not in tasks:
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return cycle

    def _later(self, later: Later, scope: Any, cycle: LaterCycle) -> None:
        """What ``RequestResponseCycle.run_asgi`` and ``send`` do for an app that sends ``later``'s
        answer in one body message: a 500 (logged as uvicorn logs it) when making it raises, a wait
        for the client to drain its side before writing, nothing written once it has gone."""
        try:
            answer = later.make()
        except BaseException as exc:  # as run_asgi: even a cancellation gets its 500
            self.logger.error("Exception in ASGI application\n", exc_info=exc)
            answer = SERVER_ERROR
        self._deliver(answer, scope, cycle)

    def _again_later(
        self,
        remembered: RememberedLater,
        key: MemoKey,
        incoming: bytes | None,
        keep_alive: bool | None = None,
    ) -> bool:
        """Answer from a ``RememberedLater``: once a new load of the session has settled, the same
        bytes with a new request id when it gave the same session, else the answer made from what
        it gave (the entry then forgotten). False, the entry forgotten, when the request must take
        the full path now. ``keep_alive``: as ``_remembered``'s."""
        memo = self.memo
        assert memo is not None
        waited = remembered.again(incoming)
        if waited is None:
            if memo.get(key) is remembered:
                del memo[key]
            return False
        if keep_alive is None:
            keep_alive = self.parser.should_keep_alive()
        cycle = self._waiting(waited.shared, keep_alive, None)
        waited.shared.subscribe(functools.partial(self._later_again, waited, remembered, key, cycle))
        return True

    def _later_again(
        self, waited: Later2, remembered: RememberedLater, key: MemoKey, cycle: LaterCycle
    ) -> None:
        try:
            made = waited.make()
        except BaseException as exc:  # as ``_later``
            self.logger.error("Exception in ASGI application\n", exc_info=exc)
            made = SERVER_ERROR
        scope = remembered.scope
        if isinstance(made, str):
            self._deliver((remembered, made), scope, cycle)
            return
        memo = self.memo
        if memo is not None and memo.get(key) is remembered:
            del memo[key]  # another session now: the next request takes the full path
        self._deliver(made, scope, cycle)

    def _deliver(self, answer: Answer | tuple[RememberedLater, str], scope: Any, cycle: LaterCycle) -> None:
        if self.flow.write_paused and not cycle.disconnected:
            task = self.loop.create_task(self._drained(answer, scope, cycle))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        self._after_drain(answer, scope, cycle)

    async def _drained(
        self, answer: Answer | tuple[RememberedLater, str], scope: Any, cycle: LaterCycle
    ) -> None:
        """``_deliver``'s write once the client has drained its side."""
        await self.flow.drain()
        self._after_drain(answer, scope, cycle)

    def _after_drain(
        self, answer: Answer | tuple[RememberedLater, str], scope: Any, cycle: LaterCycle
    ) -> None:
        # Gone: ``connection_lost`` tells only the current cycle, which may be a request pipelined
        # behind this one; a closing transport says it for every cycle.
        if cycle.disconnected or self.transport.is_closing():
            return
        first = answer[0]
        if not isinstance(first, RememberedLater):
            self._write(answer, scope, cycle.keep_alive, cycle)  # type: ignore[arg-type]
            return
        request_id = answer[1]
        assert isinstance(request_id, str)
        tail = first.tail
        if not cycle.keep_alive:  # (a shutdown meanwhile) the header ``_write`` adds then
            tail = b"\r\nconnection: close" + tail
        transport = self.transport
        transport.write(b"%b%b%b" % (first.head, request_id.encode(), tail))
        cycle.response_complete = True
        if not cycle.keep_alive:
            transport.close()
        self.on_response_complete()

    def _write(self, answer: Answer, scope: Any, keep_alive: bool, later: LaterCycle | None = None) -> None:
        """What ``RequestResponseCycle.send`` writes for a response in one body message, then what
        it and ``on_response_complete`` do once the response is complete. ``later``: the cycle of
        an answer that needed I/O (``_later``): not remembered, and what was pipelined behind it
        runs now."""
        status, headers, body = answer
        method = scope["method"]
        if self.access_log:  # uvicorn's own line (``sidecar serve`` turns it off)
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),
                method,
                get_path_with_query_string(scope),
                scope["http_version"],
                status,
            )
        default = self.server_state.default_headers
        heads = self.heads
        known = None
        key: tuple[Any, ...] = ()
        # An answer that ends with its request id (the access log's) may have its head but for the
        # id made before, for the same status, keep-alive and other headers (``Heads``).
        remembers = not default and bool(headers) and headers[-1][0] == b"x-request-id"
        if remembers and heads is not None:
            key = (status, keep_alive, *headers[:-1])
            known = heads.get(key)
        if known is not None and not HEADER_VALUE_RE.search(headers[-1][1]):
            head, tail, length, keep_alive = known
            request_id = headers[-1][1]
        else:
            if default:
                headers = [*default, *headers]
            encoded = self._encode(status, headers, keep_alive)
            if encoded is None:
                return
            content, length, kept_alive = encoded
            if remembers:  # the id's value is the last header's, followed by its CRLF
                cut = 4 * len(headers) - 1
                head, request_id, tail = b"".join(content[:cut]), content[cut], b"".join(content[cut + 1 :])
                if heads is not None:
                    heads.keep(key, (head, tail, length, kept_alive))
            else:
                head, request_id, tail = b"".join(content), b"", b""
            keep_alive = kept_alive
        if method != "HEAD":
            if length != len(body):
                self._broken("no content-length, or not the body's")
                return
            tail += body
        transport = self.transport
        transport.write(b"%b%b%b" % (head, request_id, tail))
        if later is not None:
            if later.keys is not None and keep_alive and remembers:
                self._remember_later(head, tail, scope, later.keys)
            later.response_complete = True
            if not keep_alive:
                transport.close()
            self.on_response_complete()  # the next request pipelined behind this one, if any
            return
        if keep_alive and remembers:
            self._remember(head, tail, scope)
        if not keep_alive:
            transport.close()
        self._complete()

    def _encode(
        self, status: int, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> tuple[list[bytes], int, bool] | None:
        """The response head's pieces as ``RequestResponseCycle.send`` writes them (its checks,
        names lower-cased, ``connection: close`` when not kept alive), the Content-Length and the
        keep-alive after the headers; None, with the connection closed, for a head uvicorn would
        refuse."""
        # uvicorn checks each name and value with these patterns; one search over all the names
        # (none of them may hold a character the name pattern refuses) and one over all the
        # values joined by a tab (which values may hold) finds the same.
        if HEADER_RE.search(b"".join([n for n, _ in headers])) or HEADER_VALUE_RE.search(
            b"\t".join([v for _, v in headers])
        ):
            self._broken("an invalid header name or value")
            return None
        content = [STATUS_LINE[status]]
        length = -1
        close = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length":
                if length < 0:
                    length = int(value) if value.isdigit() else -2
            elif name == b"connection" and b"close" in [t.lower().strip() for t in value.split(b",")]:
                keep_alive = False
                close = True
            content += (name, b": ", value, b"\r\n")
        if length < 0:
            self._broken("no content-length, or not the body's")
            return None
        if not keep_alive and not close:
            content.append(b"connection: close\r\n")
        content.append(b"\r\n")
        return content, length, keep_alive

    def on_response_complete(self) -> None:
        # uvicorn's, after an ASGI response or a relay (``sidecar.proxy.fast``): with nothing
        # pipelined, ``_complete``'s keep-alive timing instead of a new timer per response.
        if self.pipeline:
            super().on_response_complete()
        else:
            self._complete()

    def _complete(self) -> None:
        """What uvicorn's ``on_response_complete`` does after a response, with nothing pipelined
        (a request answered on the spot has nothing queued behind it).

        Its keep-alive timer (the connection closed ``timeout_keep_alive`` seconds after the last
        response when nothing was received since) is kept coarser: a new timer per response cost
        ~4k instructions of a ~80k remembered answer. The time of the answer is noted instead
        (``_idle_at``; any read or request begun clears it) and one timer per connection looks at
        it when due (``_idle_check``): it closes at the same moment uvicorn's would have."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        task = self.timeout_keep_alive_task
        if task is not None:
            task.cancel()
            self.timeout_keep_alive_task = None
        if self.flow.read_paused:
            self.flow.resume_reading()
        idle_at = self._idle_at = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_at(idle_at + self.timeout_keep_alive, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        idle_at = self._idle_at
        if idle_at is None or self.transport.is_closing():
            # Something was received since the last answer made here: the request it began is
            # timed as uvicorn times it (its timer after an ASGI response, ``_complete`` after
            # one made here, none while it is incomplete or running).
            return
        due = idle_at + self.timeout_keep_alive
        if due <= self.loop.time():
            self.timeout_keep_alive_handler()
        else:
            self._idle_timer = self.loop.call_at(due, self._idle_check)

    def _broken(self, what: str) -> None:
        # uvicorn raises in ``send`` after the response started: the app's error, the connection closed.
        log.error("a synchronous answer was not valid HTTP (%s); connection closed", what)
        self.transport.close()


def guarded_protocol(
    max_request_line: int, responders: tuple[Responder, ...] = (), relays: tuple[Relay, ...] = ()
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one listener (uvicorn builds it with its own arguments)."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_request_line": max_request_line,
            "responders": responders,
            "relays": relays,
            "memo": Memo() if responders else None,
            "heads": Heads() if responders else None,
        },
    )

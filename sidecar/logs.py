"""Logging: JSON lines in production, readable text in ``--dev``; the per-request access log."""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from sidecar import waiting
from sidecar.config.model import LogConfig

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from sidecar.metrics import Metrics
    from sidecar.tracing import Tracing

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}
_STANDARD = set(vars(logging.makeLogRecord({})))


# Characters that could end a log line, start a forged one, or reorder what a terminal shows:
# C0 and C1 controls, DEL, the Unicode line and paragraph separators, bidi overrides and isolates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every unsafe character as a visible escape (``\\x0a``): one record, one line."""
    return _UNSAFE.sub(_escape_char, text) if _UNSAFE.search(text) else text


class TextFormatter(logging.Formatter):
    """The readable format, with request-controlled text unable to forge lines.

    The message is escaped whole. A traceback keeps its line breaks (it is ours), but every other
    control character in it is escaped and each of its lines is indented, so even an exception
    message carrying a newline cannot start what looks like a new record.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        text = super().formatException(ei)
        lines = (escape_controls(line) for line in text.replace("\r", "\n").split("\n"))
        return "\n".join("    " + line for line in lines)

    def formatStack(self, stack_info: str) -> str:
        return "\n".join("    " + escape_controls(line) for line in stack_info.split("\n"))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Structured fields passed with ``extra=`` become top-level keys.
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure_logging(config: LogConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[config.level])
    # Libraries' info lines say nothing an operator needs at start or per request: uvicorn's
    # "Started server process" (once per listener), granian's "Started worker-1" (its Rust side
    # logs as ``_granian.*``), alembic's plugin and context lines, and
    # httpx's "HTTP Request: GET <url with query string>" (a query string may carry a token).
    quiet = logging.DEBUG if config.level in ("trace", "debug") else logging.WARNING
    for noisy in ("uvicorn.error", "granian", "_granian", "alembic"):
        logging.getLogger(noisy).setLevel(quiet)
    for leaky in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(leaky).setLevel(logging.WARNING)
    # The console's audit lines (sidecar/console/audit.py) are written at any log level.
    logging.getLogger("sidecar.console.audit").setLevel(logging.INFO)


# --- access log ---------------------------------------------------------------------------------
#
# Scope keys the handlers fill in for the access log (all optional; plain ``str`` values):
#   scope["sidecar.request_id"]   set here before the app runs; reuse it, never make another one
#   scope["sidecar.path"]         the normalised path the rules matched (else scope["path"] is logged)
#   scope["sidecar.route_class"]  proxy | decision | api | page | health | admin | metrics
#   scope["sidecar.rule"]         id of the access rule that matched
#   scope["sidecar.decision"]     allow | redirect | unauthorized | forbidden | step_up | unavailable
#   scope["sidecar.identity_id"]  the signed-in identity's id
#   scope["sidecar.replay"]       set by a synchronous answer that may be remembered: a callable,
#                                 True while the same request would get the same answer, with that
#                                 answer's records made again (``AccessLog.answering``)
#   scope["sidecar.id_headers"]   set by the HTTP protocol before a synchronous answer or relay (and
#                                 popped after): (x-request-id, traceparent), the request's first
#                                 values of those headers or None, which ``_request_id`` then need
#                                 not look for (absent: it looks itself)
#   scope["sidecar.vary"]         with ``sidecar.replay``: (header name, same), the answer is also the
#                                 same for another value of that header when ``same(value)`` gives
#                                 the path to log for it (``DecisionEndpoints.answer_cached``)
# Never put tokens, cookies, passwords, codes or query strings there: they are written verbatim.

UNTRACED = ("health", "metrics")
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
"""(status, headers, body) of a response made without ASGI (``sidecar.proxy.responses.Answer``)."""
Later = waiting.Later[Answer]
"""An ``Answer`` that needs I/O first (``AccessLog.answering``; ``sidecar.waiting``)."""
REQUEST_ID_HEADER = b"x-request-id"
REPLAY_LATER = "sidecar.replay_later"  # sidecar.proxy.access.REPLAY_LATER (the scope's keys above)
# What the access path records in the scope (``sidecar.proxy.access.Access._record``).
_RECORDED = frozenset({"sidecar.path", "sidecar.rule", "sidecar.decision", "sidecar.identity_id"})
_REQUEST_ID_OK = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")
_NAME = operator.itemgetter(0)  # a header's name
TRACEPARENT_HEADER = b"traceparent"
ID_HEADERS = "sidecar.id_headers"  # sidecar.http_protocol.ID_HEADERS (the scope's keys above)
# W3C Trace Context: version-traceid-parentid-flags; an all-zero trace or parent id is invalid.
_TRACEPARENT = re.compile(rb"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def trace_id_of(traceparent: bytes) -> str | None:
    """The trace id of a well-formed ``traceparent`` value, else None."""
    m = _TRACEPARENT.fullmatch(traceparent.strip())
    if m is None or m.group(1) == b"0" * 32 or m.group(2) == b"0" * 16 or traceparent[:2] == b"ff":
        return None
    return m.group(1).decode("ascii")


_RANDOM = 4096  # random bytes read from the kernel at a time (``_RandomIds``)
_RANDOM_HEX = 2 * _RANDOM


class _RandomIds:
    """128 random bits as 32 hex digits, like ``uuid4().hex`` (the same entropy source), read from
    the kernel 4 KiB at a time and written in hex at once: one ``getrandom`` call per 256 ids
    instead of one per request, which runs on every request without a trusted X-Request-ID, and
    then an id is a slice of that text. ``take`` is the call (a bound method: calling an instance's
    ``__call__`` and hex-encoding each id cost ~2k instructions more an id). A forked child starts
    afresh, so it never repeats its parent's ids."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pool, self._at = "", _RANDOM_HEX

    def take(self) -> str:
        at = self._at
        if at >= _RANDOM_HEX:
            self._pool, at = os.urandom(_RANDOM).hex(), 0
        self._at = at + 32
        return self._pool[at : at + 32]


_random_ids = _RandomIds()
new_request_id = _random_ids.take
os.register_at_fork(after_in_child=_random_ids.reset)


# One encoder for the access line's values: ``json.dumps`` with options builds one per call.
_ENCODE = json.JSONEncoder(default=str, separators=(",", ":")).encode
_ESCAPE = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _str(value: str) -> str:
    return str(_ESCAPE(value)) if type(value) is str else _ENCODE(value)


class _Escaped(dict[Any, str]):
    """Each value's JSON text, computed at its first use; cleared when it has grown past
    ``LIMIT`` entries, so client-chosen paths cannot grow it without bound."""

    LIMIT = 4096

    def __init__(self) -> None:
        super().__init__({None: "null"})

    def __missing__(self, value: Any) -> str:
        text = _str(value)
        if len(self) >= self.LIMIT:
            self.clear()
            self[None] = "null"
        self[value] = text
        return text


class _Clock:
    """``datetime.now(UTC).isoformat(timespec="milliseconds")``: the text is made once a
    millisecond (requests in the same millisecond share it) and the date part once a second."""

    __slots__ = ("_ms", "_prefix", "_second", "_text")

    def __init__(self) -> None:
        self._ms = -1
        self._text = ""
        self._second = -1
        self._prefix = ""

    def stamp(self) -> str:
        ms = int(time.time() * 1000)
        if ms == self._ms:
            return self._text
        self._ms = ms
        second, frac = divmod(ms, 1000)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        self._text = text = self._prefix + _MILLISECONDS[frac]
        return text


# A time stamp's text after its second: ``.000+00:00`` to ``.999+00:00`` (a format spec each
# millisecond cost ~1k instructions).
_MILLISECONDS = tuple(f".{ms:03d}+00:00" for ms in range(1000))


# A latency's text after its whole milliseconds: ``repr(f / 1000)[1:]`` (``.0``, ``.5``, ``.123``).
_FRACTIONS = tuple(repr(f / 1000)[1:] for f in range(1000))


class _Latencies(dict[int, str]):
    """A latency in whole microseconds → its JSON text in milliseconds (``repr(us / 1000)``, as
    ``json.dumps`` writes the float): kept for latencies under ``LIMIT`` µs, which repeat, so
    most requests skip float formatting (~0.5 µs); at most ``LIMIT`` entries. Longer ones (a
    proxied request at concurrency 50 takes 10-30 ms) are put together from the whole
    milliseconds and ``_FRACTIONS``, which is the same text below 10**12 µs (tests/ops/test_logs.py):
    225 ns instead of 300 for such a miss (timeit, uncached 23,456 µs)."""

    LIMIT = 10_000

    def __missing__(self, us: int) -> str:
        if us < self.LIMIT:
            text = self[us] = repr(us / 1000)
            return text
        if us < 10**12:
            return f"{us // 1000}{_FRACTIONS[us % 1000]}"
        return repr(us / 1000)


class AccessLog:
    """Raw-ASGI wrapper: one log line and one ``Metrics.request`` per HTTP/WebSocket request.

    The request id is the client's ``X-Request-ID`` when the peer is a trusted proxy (and the
    value is short and plain), else a new one. It is put into the request headers the app sees
    (so the proxy forwards it upstream), into ``scope["sidecar.request_id"]`` and onto the
    response. The line is built after the response has been sent, so it costs the client
    nothing: one f-string, handed to ``write`` (a buffer written out in chunks) or to ``stream``.
    """

    def __init__(
        self,
        app: Any,
        *,
        listener: str,
        trusted: Callable[[str | None], bool],
        metrics: Metrics | None = None,
        text: bool = False,
        stream: TextIO | None = None,
        enabled: bool = True,
        classify: Callable[[str], str] | None = None,
        leak_sensitive_values: bool = False,
        write: Callable[[str], None] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """``write`` takes each line (``BufferedLineWriter.write`` in ``sidecar serve``: no I/O on
        the event loop); without it, lines go straight to ``stream`` (default ``sys.stderr``)."""
        self.app = app
        # None when off: the request pays one ``is None`` test for tracing.
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        # Kratos' log.leak_sensitive_values: the query string and every request header (cookies,
        # tokens) go into the line. Off, nothing secret is ever written.
        self.leak = leak_sensitive_values
        self.write = write
        self.listener = listener
        self.trusted = trusted
        self.metrics = metrics
        self.text = text
        self.stream = stream
        self.enabled = enabled
        self.classify = classify or (lambda path: listener)
        self._classes: dict[str, str] = {}
        self._clock = _Clock()
        self._head = f'"level":"info","logger":"sidecar.access","msg":"request","listener":{_str(listener)},'
        self._escaped = _Escaped()
        self._latencies = _Latencies()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or "sidecar.request_id" in scope:
            # Lifespan, or already wrapped (a second wrapper must not log the request twice).
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = self._request_id(scope)
        rid = request_id.encode()
        scope["sidecar.request_id"] = request_id
        state = [0, 0]  # status, body bytes
        span = self._open_span(scope, request_id) if self.tracing is not None else None

        async def send_wrapper(message: Any) -> None:
            mtype = message["type"]
            if mtype == "http.response.body":
                state[1] += len(message.get("body", b""))
            elif mtype in ("http.response.start", "websocket.http.response.start"):
                state[0] = message["status"]
                headers = message.get("headers", ())
                for k, _ in headers:
                    if k.lower() == REQUEST_ID_HEADER:
                        break
                else:
                    message = {**message, "headers": [*headers, (REQUEST_ID_HEADER, rid)]}
            elif mtype == "websocket.accept":
                state[0] = 101
            elif mtype == "websocket.close" and not state[0]:
                state[0] = 403  # closed before the handshake completed: uvicorn answers 403
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            state[0] = state[0] or 500
            raise
        finally:
            self._finish(scope, state[0], state[1], time.perf_counter() - started, request_id)
            if span is not None:
                self._close_span(span, scope, state[0])

    def answering(
        self,
        inner: Callable[[Any], Answer | Later | None],
        claims: Callable[[Any], bool] | None = None,
    ) -> Callable[[Any], Answer | Later | None]:
        """``inner`` (a synchronous answer to an HTTP scope, or None: ``sidecar.http_protocol``'s
        responders) inside this log, as ``__call__`` puts an ASGI app inside it: the same request
        id (in the scope's headers and ``sidecar.request_id`` while ``inner`` runs, and on the
        response), the same line and ``Metrics.request``. When ``inner`` answers None the scope is
        given back as it came, for the ASGI path to start afresh. Not with tracing on (the
        request's span is opened around the ASGI app): then this answers None at once.

        ``claims(scope)``, when given, is asked first: False means ``inner`` would answer None, so
        None at once, without making and undoing a request id (every proxied request asks the
        responders first: that cost it ~4 % of its instructions).

        ``inner`` may answer a ``Later`` instead (an answer that needs I/O, ``sidecar.waiting``:
        ``sidecar.http_protocol`` makes it once its I/O has settled and writes it): then so does
        this, one whose ``make`` makes ``inner``'s and adds what ``__call__`` adds: the request id
        on the response, the line and ``Metrics.request`` (status 500 when it raises, as
        ``__call__`` logs an app that raised before its response; the exception goes on)."""

        def answer(scope: Any) -> Answer | Later | None:
            if self.tracing is not None or scope["type"] != "http" or "sidecar.request_id" in scope:
                return None
            if claims is not None and not claims(scope):
                return None
            started = time.perf_counter()
            headers = scope["headers"]
            request_id = self._request_id(scope)
            scope["sidecar.request_id"] = request_id
            answered = None
            try:
                answered = inner(scope)
            finally:
                if answered is None:
                    scope["headers"] = headers
                    for key in (
                        "sidecar.request_id",
                        "sidecar.trace_id",
                        "sidecar.traceparent",
                        "sidecar.replay",
                        "sidecar.vary",
                    ):
                        scope.pop(key, None)
            if answered is None:
                return None
            if not isinstance(answered, tuple):
                return self._later(answered, scope, started, request_id)
            status, out, body = answered
            replay = scope.pop("sidecar.replay", None)
            vary = scope.pop("sidecar.vary", None)
            if REQUEST_ID_HEADER in map(bytes.lower, map(_NAME, out)):
                replay = None
            else:
                out = [*out, (REQUEST_ID_HEADER, request_id.encode())]
            self._finish(scope, status, len(body), time.perf_counter() - started, request_id)
            if replay is not None and not self.text and not self.leak:
                scope["sidecar.replay"] = self._replaying(replay, scope, status, len(body))
                if vary is not None:
                    scope["sidecar.vary"] = vary
            return status, out, body

        return answer

    def _later(self, later: Later, scope: Any, started: float, request_id: str) -> Later:
        """``answering``'s ``Later`` around ``inner``'s (its docstring)."""
        inner = later.make

        def make() -> Answer:
            status = 500
            size = 0
            try:
                status, out, body = inner()
                size = len(body)
                if REQUEST_ID_HEADER not in map(bytes.lower, map(_NAME, out)):  # (in C, no loop here)
                    out = [*out, (REQUEST_ID_HEADER, request_id.encode())]
                return status, out, body
            finally:
                self._finish(scope, status, size, time.perf_counter() - started, request_id)
                again = scope.pop(REPLAY_LATER, None)
                if again is not None and status != 500 and not self.text and not self.leak:
                    scope[REPLAY_LATER] = self._replaying_later(again, scope, status, size)

        return waiting.wrapped(later, make)

    def _replay_parts(
        self, scope: Any, status: int, size: int
    ) -> tuple[bool, str, str, str, str, Callable[[], None] | None]:
        """What a replay of an answer to the request in ``scope`` needs for its line and count, made
        once (``_replaying``, ``_replaying_later``): whether the peer is trusted (its request id
        is taken), the JSON line's parts before and after the path, the whole middle, its tail,
        and the request counter (None without metrics)."""
        route_class = scope.get("sidecar.route_class") or self.classify(scope["path"])
        client = scope.get("client")
        trusted = self.trusted(client[0] if client else None)
        before, logged, after, tail = self._json_parts(scope, route_class, status, size)
        count = self.metrics.request_counter(route_class, status) if self.metrics is not None else None
        return trusted, before, after, before + logged + after, tail, count

    def _replaying(
        self, inner: Callable[[], bool], scope: Any, status: int, size: int
    ) -> Callable[[bytes | None, str | None], str | None]:
        """For an answer ``answering`` gave whose inner ``replay`` (the scope's ``sidecar.replay``)
        says when it holds, and which ends with our ``x-request-id``: ``replayed(x_request_id,
        path=None)``, the request id of the same request asked again (its ``x-request-id`` header,
        the first, or None) with the same line and ``Metrics.request`` as ``answer`` makes; None,
        with nothing recorded, when ``inner`` no longer holds. ``path``: the line's path instead of
        this request's (a request that differs in its ``sidecar.vary`` header alone). The line's
        parts that only the request's method, target, headers and peer decide are made here, once."""
        trusted, before, after, middle, tail, count = self._replay_parts(scope, status, size)
        clock, latencies, head = self._clock, self._latencies, self._head
        enabled, write, stream = self.enabled, self.write, self.stream

        def replayed(incoming: bytes | None, path: str | None = None) -> str | None:
            started = time.perf_counter()
            if not inner():
                return None
            if incoming is not None and trusted and _REQUEST_ID_OK.fullmatch(incoming):
                request_id = str(incoming.decode("ascii"))
            else:
                request_id = new_request_id()
            if count is not None:
                count()
            if enabled:
                latency = latencies[int((time.perf_counter() - started) * 1e6 + 0.5)]
                start = f'{{"time":"{clock.stamp()}",{head}"request_id":"{request_id}",'
                if path is None:
                    line = f"{start}{middle}{latency}{tail}"
                else:
                    # Not through ``_escaped``: a path seen once would only churn it.
                    line = f"{start}{before}{_str(path)}{after}{latency}{tail}"
                if write is not None:
                    write(line)
                else:
                    with contextlib.suppress(OSError, ValueError):
                        (stream or sys.stderr).write(line)
            return request_id

        return replayed

    def _replaying_later(
        self, inner: Callable[[], waiting.Later[Any] | None], scope: Any, status: int, size: int
    ) -> Callable[[bytes | None], waiting.Later[str | Answer] | None]:
        """``_replaying`` for an answer made from a load of the session store (the scope's
        ``sidecar.replay_later``): ``replayed(x_request_id)``, None with nothing recorded when the
        request must take the full path, else a ``Later`` of a new load whose ``make()`` is the
        request id of the same answer again, with the same line and ``Metrics.request`` as
        ``answering`` makes; or, when the load gave another answer (``inner``'s ``make()``: (the
        answer, the scope it was recorded in)), that answer with its request id, line and count."""
        trusted, _, _, middle, tail, count = self._replay_parts(scope, status, size)
        clock, latencies, head = self._clock, self._latencies, self._head
        enabled, write, stream = self.enabled, self.write, self.stream

        def replayed(incoming: bytes | None) -> waiting.Later[str | Answer] | None:
            started = time.perf_counter()
            waited = inner()
            if waited is None:
                return None
            if incoming is not None and trusted and _REQUEST_ID_OK.fullmatch(incoming):
                request_id = str(incoming.decode("ascii"))
            else:
                request_id = new_request_id()
            judged = waited.make

            def made() -> str | Answer:
                anew = None
                status = 500
                size = 0
                try:
                    again = judged()
                    if again is None:
                        if count is not None:
                            count()
                        if enabled:
                            latency = latencies[int((time.perf_counter() - started) * 1e6 + 0.5)]
                            start = f'{{"time":"{clock.stamp()}",{head}"request_id":"{request_id}",'
                            line = f"{start}{middle}{latency}{tail}"
                            if write is not None:
                                write(line)
                            else:
                                with contextlib.suppress(OSError, ValueError):
                                    (stream or sys.stderr).write(line)
                        return request_id
                    (status, out, body), anew = again
                    size = len(body)
                    if REQUEST_ID_HEADER not in map(bytes.lower, map(_NAME, out)):
                        out = [*out, (REQUEST_ID_HEADER, request_id.encode())]
                    return status, out, body
                except BaseException:
                    anew = {k: v for k, v in scope.items() if k not in _RECORDED}
                    raise
                finally:
                    if anew is not None:
                        anew["sidecar.request_id"] = request_id
                        self._finish(anew, status, size, time.perf_counter() - started, request_id)

            return waiting.wrapped(waited, made)

        return replayed

    def taking(self, inner: Callable[..., Any]) -> Callable[..., Any]:
        """``inner(scope, done, *args)`` inside this log: a request taken over without ASGI and
        answered later (``sidecar.proxy.fast``). As ``answering``: the same request id, in the
        scope's headers and ``sidecar.request_id`` (the response's ``x-request-id`` is ``inner``'s
        to add, as the ASGI wrapper adds it); ``done(status, body_bytes, memo)``, called once the
        response is complete, writes the line and ``Metrics.request``. None from ``inner`` gives
        the scope back as it came.

        ``memo``: None, or a dict ``inner`` keeps for every request whose line differs from this
        one's only in the time, request id, status, latency, size and path (a forward plan's, kept
        for one method, normalised path, peer, rule and session on this listener; a session's
        rewrite's, for every path): the rest of the line and the metrics' counter are made once per
        route class and status and kept there (``_finish_from``). Making the line from the scope
        cost ~28k instructions a request, most of a proxied request's access-log cost."""
        finish, finish_from = self._finish, self._finish_from

        def take(scope: Any, *args: Any) -> Any:
            if self.tracing is not None or scope["type"] != "http" or "sidecar.request_id" in scope:
                return None
            started = time.perf_counter()
            headers = scope["headers"]
            request_id = self._request_id(scope)
            scope["sidecar.request_id"] = request_id

            def done(status: int, size: int, memo: dict[Any, Any] | None = None) -> None:
                if memo is None:
                    finish(scope, status, size, time.perf_counter() - started, request_id)
                else:
                    finish_from(memo, scope, status, size, time.perf_counter() - started, request_id)

            taken = None
            try:
                taken = inner(scope, done, *args)
            finally:
                if taken is None:
                    scope["headers"] = headers
                    for key in (
                        "sidecar.request_id",
                        "sidecar.trace_id",
                        "sidecar.traceparent",
                        "sidecar.relay",
                    ):
                        scope.pop(key, None)
            if taken is not None and "sidecar.relay" in scope:
                relay = scope.pop("sidecar.relay")
                if not self.text and not self.leak:
                    scope["sidecar.relay"] = self._relaying(relay, scope)
            return taken

        return take

    def _relaying(self, inner: Callable[..., Any], scope: Any) -> Callable[..., bool]:
        """For a request ``taking`` served whose ``inner`` left a ``sidecar.relay`` (the same
        request served again while it holds: ``sidecar.proxy.fast``): ``relayed(proto,
        keep_alive, x_request_id=None, traceparent=None)`` (the request's headers of those names,
        from ``sidecar.http_protocol``), True when it served the same request again, with
        the request id ``_request_id`` gives a request with that ``x-request-id`` header (its
        first) from this request's peer (the header's value from a trusted proxy when short and
        plain, else a new one), and the same line and ``Metrics.request`` as ``take`` makes once
        the response is complete; False, with nothing recorded, when ``inner`` no longer holds.
        ``inner(request_id, done, proto, keep_alive, x_request_id, traceparent)``. Not in the text and
        leak modes (their lines hold what the scope alone says, such as the request's own headers)."""
        finish, finish_from = self._finish, self._finish_from
        route_class = scope.get("sidecar.route_class") or self.classify(scope["path"])
        path = scope.get("sidecar.path") or scope["path"]
        client = scope.get("client")
        trusted = self.trusted(client[0] if client else None)

        def relayed(
            proto: Any, keep_alive: bool, incoming: bytes | None = None, traceparent: bytes | None = None
        ) -> bool:
            started = time.perf_counter()
            if incoming is not None and trusted and _REQUEST_ID_OK.fullmatch(incoming):
                request_id = str(incoming.decode("ascii"))
            else:
                request_id = new_request_id()

            def done(status: int, size: int, memo: dict[Any, Any] | None = None) -> None:
                if memo is None:
                    finish(scope, status, size, time.perf_counter() - started, request_id)
                else:
                    seconds = time.perf_counter() - started
                    finish_from(memo, scope, status, size, seconds, request_id, route_class, path)

            return inner(request_id, done, proto, keep_alive, incoming, traceparent) is not None

        return relayed

    def _open_span(self, scope: Any, request_id: str) -> tuple[Span, object] | None:
        """The request's SERVER span, continuing a trusted proxy's trace; none for health and
        metrics (scraped every few seconds, they would drown the traces that matter)."""
        tracing = self.tracing
        path = scope["path"]
        if tracing is None:
            return None
        if scope["type"] != "http" or self.classify(path) in UNTRACED:
            return None
        client = scope.get("client")
        span, token = tracing.start_request(
            f"{scope['method']} {self.listener}",
            scope.pop("sidecar.traceparent", None),
            {
                "http.request.method": scope["method"],
                "url.path": path,
                "url.scheme": scope.get("scheme", "http"),
                "client.address": client[0] if client else None,
                "sidecar.listener": self.listener,
                "sidecar.request_id": request_id,
            },
        )
        scope["sidecar.trace_id"] = tracing.trace_id(span)
        return span, token

    def _close_span(self, opened: tuple[Span, object], scope: Any, status: int) -> None:
        tracing = self.tracing
        if tracing is None:
            return
        span, token = opened
        # The request's own path: a decision endpoint's ``sidecar.path`` is the original URI it judged.
        route_class = scope.get("sidecar.route_class") or self.classify(scope["path"])
        span.update_name(f"{scope['method']} {route_class}")
        tracing.finish_request(
            span,
            token,
            status or 500,
            {
                "sidecar.route_class": route_class,
                "sidecar.rule": scope.get("sidecar.rule"),
                "sidecar.decision": scope.get("sidecar.decision"),
                "enduser.id": scope.get("sidecar.identity_id"),
            },
        )

    def _request_id(self, scope: Any) -> str:
        headers = scope["headers"]
        known = scope.get(ID_HEADERS)
        if known is not None:  # the HTTP protocol's, noted as it parsed the headers
            incoming, traceparent = known
        else:
            incoming = traceparent = None
            for name, value in headers:
                if name == REQUEST_ID_HEADER and incoming is None:  # ASGI servers give lower-case names
                    incoming = value
                elif name == TRACEPARENT_HEADER and traceparent is None:
                    traceparent = value
        client = scope.get("client")
        if traceparent is not None and self.trusted(client[0] if client else None):
            # The trace a trusted proxy started: audit events and the upstream share its id.
            trace_id = trace_id_of(traceparent)
            if trace_id is not None:
                scope["sidecar.trace_id"] = trace_id
                scope["sidecar.traceparent"] = traceparent
        if incoming is not None:
            if _REQUEST_ID_OK.fullmatch(incoming) and self.trusted(client[0] if client else None):
                return str(incoming.decode("ascii"))
            # An untrusted client's id must not reach the upstream or our logs as if it were ours.
            headers = [(k, v) for k, v in headers if k != REQUEST_ID_HEADER]
        request_id = new_request_id()
        scope["headers"] = [*headers, (REQUEST_ID_HEADER, request_id.encode())]
        return request_id

    def _class_of(self, path: str) -> str:
        """``classify(path)``, memoised: the paths whose class the handler left to us repeat (a
        decision endpoint's, whoami's). Bounded: clients choose them."""
        classes = self._classes
        if len(classes) >= 1024:
            classes.clear()
        route_class = classes[path] = self.classify(path)
        return route_class

    def _finish(self, scope: Any, status: int, size: int, seconds: float, request_id: str) -> None:
        # Classified by the request's own path: a decision endpoint logs the URI it judged as the
        # path, but the request is still a decision, not a proxied one.
        route_class = scope.get("sidecar.route_class")
        if not route_class:
            path = scope["path"]
            route_class = self._classes.get(path) or self._class_of(path)
        if self.metrics is not None:
            self.metrics.request(route_class, status)
        if not self.enabled:
            return
        if self.text:
            method = scope.get("method", "GET") if scope["type"] == "http" else "WS"
            path = scope.get("sidecar.path") or scope["path"]
            rule = scope.get("sidecar.rule")
            decision = scope.get("sidecar.decision")
            identity = scope.get("sidecar.identity_id")
            extra = "".join(
                f" {k}={v}" for k, v in (("rule", rule), ("decision", decision), ("identity", identity)) if v
            )
            # The path is the client's, decoded: a %0d%0a in it must not end the line.
            if self.leak:
                leaked = _ENCODE(_headers(scope))
                extra += f" query={escape_controls(_query(scope))} headers={escape_controls(leaked)}"
            ms = round(seconds * 1000, 3)
            line = f"{method} {escape_controls(path)} {status} {ms}ms {size}B rid={request_id}{extra}\n"
        elif self.leak:
            latency = self._latencies[int(seconds * 1e6 + 0.5)]
            before, logged, after, tail = self._json_parts(scope, route_class, status, size)
            line = (
                f'{{"time":"{self._clock.stamp()}",{self._head}"request_id":"{request_id}",'
                f"{before}{logged}{after}{latency}{tail}"
            )
        else:
            # ``_json_parts``'s line, in one string (its parts are for the lines made again from
            # them); the status and size as ``str`` writes an int (``:d`` took ~1k instructions
            # more a number). The request id needs no escaping: it is ours (hex) or matched _REQUEST_ID_OK,
            # which admits no quote, backslash or control character.
            esc = self._escaped
            client = scope.get("client")
            line = (
                f'{{"time":"{self._clock.stamp()}",{self._head}"request_id":"{request_id}",'
                f'"method":{esc[scope.get("method", "GET") if scope["type"] == "http" else "WS"]},'
                f'"path":{esc[scope.get("sidecar.path") or scope["path"]]},'
                f'"route_class":{esc[route_class]},"status":{status},'
                f'"latency_ms":{self._latencies[int(seconds * 1e6 + 0.5)]},"bytes":{size},'
                f'"client":{esc[client[0]] if client else "null"},"rule":{esc[scope.get("sidecar.rule")]},'
                f'"decision":{esc[scope.get("sidecar.decision")]},'
                f'"identity_id":{esc[scope.get("sidecar.identity_id")]}}}\n'
            )
        if self.write is not None:
            self.write(line)
            return
        stream = self.stream or sys.stderr
        # A closed or broken log pipe must not fail requests.
        with contextlib.suppress(OSError, ValueError):
            stream.write(line)

    def _finish_from(
        self,
        memo: dict[Any, Any],
        scope: Any,
        status: int,
        size: int,
        seconds: float,
        request_id: str,
        route_class: str | None = None,
        path: str | None = None,
    ) -> None:
        """``_finish`` for a request of ``taking`` with a ``memo``: the same line and count, its
        parts that the memo's requests share made once per route class and status, and the path's
        text put in when it is not the one they were made with. ``route_class``, ``path``: the
        scope's, when the caller knows them (``_relaying``: the same scope every time)."""
        if route_class is None:
            route_class = scope.get("sidecar.route_class") or self.classify(scope["path"])
        key = (route_class, status)
        parts = memo.get(key)
        if parts is None:
            if self.text or self.leak:  # lines that hold more than the plan decides
                self._finish(scope, status, size, seconds, request_id)
                return
            parts = memo[key] = self._shared_parts(scope, route_class, status)
        count, middle, tail, made_for, around = parts
        if path is None:
            path = scope.get("sidecar.path") or scope["path"]
        if path is not made_for and path != made_for:  # another path (a rewrite's memo)
            method, before, after = around
            if scope.get("method", "GET") != method:  # (not a memo's request: the fast path's GETs)
                self._finish(scope, status, size, seconds, request_id)
                return
            middle = before + _str(path) + after
        if count is not None:
            count()
        if not self.enabled:
            return
        line = (
            f'{{"time":"{self._clock.stamp()}",{self._head}"request_id":"{request_id}",'
            f'{middle}{self._latencies[int(seconds * 1e6 + 0.5)]},"bytes":{size}{tail}'
        )
        if self.write is not None:
            self.write(line)
            return
        with contextlib.suppress(OSError, ValueError):
            (self.stream or sys.stderr).write(line)

    def _shared_parts(
        self, scope: Any, route_class: str, status: int
    ) -> tuple[Callable[[], None] | None, str, str, str, tuple[str, str, str]]:
        """``_finish_from``'s memo entry: the metrics' counter for the route class and status; the
        line's text after the request id up to the latency, and after the size to the end; the
        path they were made for; and the method they were made for with the text up to the latency
        before and after the path's."""
        before, logged, after, tail = self._json_parts(scope, route_class, status, 0)
        sized = ',"bytes":0'
        assert tail.startswith(sized)
        count = self.metrics.request_counter(route_class, status) if self.metrics is not None else None
        path = scope.get("sidecar.path") or scope["path"]
        around = (scope.get("method", "GET"), before, after)
        return count, before + logged + after, tail[len(sized) :], path, around

    def _json_parts(self, scope: Any, route_class: str, status: int, size: int) -> tuple[str, str, str, str]:
        """The JSON line's text after the request id up to the latency, in three (up to the path,
        the path, after it), and after the latency to the end: the same line
        ``json.dumps(entry, default=str, separators=(",", ":"))`` writes, with each string escaped
        once and then looked up (methods, paths, rules, decisions, identities and clients repeat)."""
        method = scope.get("method", "GET") if scope["type"] == "http" else "WS"
        path = scope.get("sidecar.path") or scope["path"]
        client = scope.get("client")
        esc = self._escaped
        before = f'"method":{esc[method]},"path":'
        after = f',"route_class":{esc[route_class]},"status":{status:d},"latency_ms":'

        tail = (
            f',"bytes":{size:d},"client":{esc[client[0]] if client else "null"},'
            f'"rule":{esc[scope.get("sidecar.rule")]},"decision":{esc[scope.get("sidecar.decision")]},'
            f'"identity_id":{esc[scope.get("sidecar.identity_id")]}'
        )
        if self.leak:
            tail += f',"query":{_str(_query(scope))},"headers":{_ENCODE(_headers(scope))}'
        return before, esc[path], after, tail + "}\n"


def _query(scope: Any) -> str:
    return bytes(scope.get("query_string") or b"").decode("latin-1")


def _headers(scope: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1")
        out[key] = f"{out[key]}, {value.decode('latin-1')}" if key in out else value.decode("latin-1")
    return out


def public_route_classifier(prefix: str) -> Callable[[str], str]:
    """Route class from the path alone, for requests whose handler did not name one."""
    api = prefix + "/" if prefix else None
    authz = (prefix + "/authz/", prefix + "/decisions/")
    health = (prefix + "/health/",)

    length = len(api) if api is not None else 0

    def classify(path: str) -> str:
        # Every class but "proxy" is under ``api`` (with a prefix): a proxied path, the most asked,
        # is told by one slice compared (``startswith``'s argument parsing costs ~250 instructions).
        if api is not None and path[:length] != api:
            return "api" if path == prefix else "proxy"
        if path.startswith(authz):
            return "decision"
        if path.startswith(health):
            return "health"
        return "api"

    return classify


def admin_route_classifier(path: str) -> str:
    if path == "/metrics":
        return "metrics"
    if path.startswith(("/health/", "/admin/health/")):
        return "health"
    return "admin"

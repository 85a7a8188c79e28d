"""uvicorn's httptools protocol with a guard on the request target, before any app sees it.

Refused here, with the connection closed, because by the time a request reaches ASGI the
evidence is gone or the harm is done:

- a request line longer than ``serve.<listener>.max_request_line_size`` (default 8 KiB): 414.
  httptools has no limit of its own and uvicorn would buffer the target whole;
- a raw ``#`` in the target: 400. A fragment is never sent by a client (RFC 9112 §3.2), and
  httptools silently drops it, so ``/public#/../admin`` would reach the app as ``/public`` while
  a proxy in front may have read something else;
- a path that is not UTF-8 after one percent-decode (``%C0%AF``, ``%FF``): 400. Lenient decoders
  downstream turn such bytes into ``/`` or U+FFFD, so two readers would disagree on the path.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sidecar.request_target import REASONS, log_refusal, target_problem


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Subclass per listener with ``max_request_line`` set (``guarded_protocol``)."""

    max_request_line = 8 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False

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

    def on_message_begin(self) -> None:
        if not self._refused:
            super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self._refused:
            return
        super().on_url(url)
        # Method, target and "HTTP/1.1" with their two spaces and CRLF: the request line.
        if len(self.parser.get_method()) + len(self.url) + 12 > self.max_request_line:
            self._refuse(414, f"request line longer than {self.max_request_line} bytes")
        elif b"#" in url:
            self._refuse(400, "a '#' in the request target")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        problem = target_problem(self.url)
        if problem is not None:
            self._refuse(400, problem)
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()


def guarded_protocol(max_request_line: int) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one listener (uvicorn builds it with its own arguments)."""
    return type(
        "GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"max_request_line": max_request_line}
    )

"""What a flow step needs from the request, and what it answers, as plain values.

The API layer builds a ``Client`` from the HTTP request and turns an outcome into a response:
a flow to show (JSON, or a 303 to the UI for browsers), a replacement for an expired flow, a
redirect for an already signed-in browser, or a completed flow with its session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sidecar.flows.messages import Text
from sidecar.flows.model import Flow
from sidecar.identity.model import Identity
from sidecar.session.model import Device, Session


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The request as web hooks see it (Kratos' ``request_*`` ctx fields)."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    cookies: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Client:
    ip: str | None = None
    user_agent: str | None = None
    csrf_token: str | None = None
    """The CSRF base token from the browser's cookie (or freshly issued on init)."""
    csrf_submitted: str | None = None
    """The masked token from the body's ``csrf_token`` or the ``X-CSRF-Token`` header."""
    session: Session | None = None
    session_token: str | None = None
    browser_markers: bool = False
    """The request carried cookies or an ``Origin`` header: API flows refuse it (Kratos does)."""
    request_id: str | None = None
    """The access log's request id (audit events carry it)."""
    trace_id: str | None = None
    """The W3C trace id of the request, when it is traced or a trusted proxy sent one."""
    request: RequestInfo | None = None
    """Method, URL, headers and cookies, for web hooks' ``ctx``."""

    def device(self) -> Device:
        return Device(ip_address=self.ip, user_agent=(self.user_agent or "")[:512] or None)


class FlowInvalid(Exception):
    """A submission a strategy rejects: the flow is shown again with these messages."""

    def __init__(
        self,
        messages: list[Text] | None = None,
        *,
        node_messages: dict[str, list[Text]] | None = None,
        values: dict[str, Any] | None = None,
        status: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__("flow submission is invalid")
        self.messages = messages or []
        self.node_messages = node_messages or {}
        self.values = values or {}
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class ShowFlow:
    flow: Flow
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FlowReplaced:
    """The flow expired; ``flow`` is the replacement carrying the 40x0001 message."""

    flow: Flow
    expired: Flow


@dataclass(frozen=True, slots=True)
class AlreadySignedIn:
    redirect_to: str


@dataclass(frozen=True, slots=True)
class Completed:
    flow: Flow
    identity: Identity
    redirect_to: str
    session: Session | None = None
    token: str | None = None
    """The session token to hand out (API flows) or to put in the cookie (browser flows)."""
    continue_with: tuple[dict[str, Any], ...] = ()
    """Kratos ``continue_with`` items (``show_verification_ui``, ``show_settings_ui``, ...)."""


Outcome = ShowFlow | FlowReplaced | AlreadySignedIn | Completed

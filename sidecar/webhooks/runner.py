"""One ``web_hook`` call, as Kratos' ``selfservice/hook/web_hook.go`` and ``request/builder.go`` make it.

The body is the hook's Jsonnet called with ``ctx`` (the flow, the allowed request headers, method,
URL and cookies, and the identity / session when there is one), in the same sandbox as the OIDC
mappers; a snippet that ends in ``error 'cancel'`` skips the call. Headers, ``api_key`` (header or
cookie) and ``basic_auth`` are applied; a JSON ``Content-Type`` is the default.

The answer: 2xx is success; with ``response.parse`` a 200 body ``{"identity": {...}}`` may replace
traits, metadata, state, addresses or ``external_id``; a 4xx/5xx from a ``parse``/``can_interrupt``
hook with Kratos' ``{"messages": [{"instance_ptr", "messages": [{"id", "text", "type", "context"}]}]}``
stops the flow with those messages; any other 4xx/5xx is Kratos' 502 "A third-party upstream service
responded improperly"; a timeout is its 504.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from sidecar import errors, request_builder
from sidecar.config.webhook import WebHookConfig
from sidecar.request_builder import canonical
from sidecar.security import jsonnet
from sidecar.security.jsonnet import load_source
from sidecar.tracing import Tracing

log = logging.getLogger("sidecar.webhooks")

DEFAULT_TIMEOUT = 30.0  # Kratos' webhook HTTP client timeout
MAX_ANSWER = 5 << 20  # Kratos reads at most 5 MB of an answer
# Kratos' clients.web_hook.header_allowlist default.
DEFAULT_HEADER_ALLOWLIST = (
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Content-Length",
    "Content-Type",
    "Origin",
    "Priority",
    "Referer",
    "Sec-Ch-Ua",
    "Sec-Ch-Ua-Mobile",
    "Sec-Ch-Ua-Platform",
    "Sec-Fetch-Dest",
    "Sec-Fetch-Mode",
    "Sec-Fetch-Site",
    "Sec-Fetch-User",
    "True-Client-Ip",
    "User-Agent",
)


@dataclass(frozen=True, slots=True)
class HookMessage:
    instance_ptr: str
    messages: list[dict[str, Any]]


class WebHookInterrupted(Exception):
    """A ``parse``/``can_interrupt`` hook stopped the flow with Kratos' field messages."""

    def __init__(self, found: list[HookMessage]) -> None:
        super().__init__("a webhook target returned an error")
        self.found = found


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """What goes on the wire; the outbox stores exactly this for fire-and-forget hooks."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes | None
    hook_id: str | None = None
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class CallResult:
    identity_patch: dict[str, Any] | None = None
    skipped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class WebHookRunner:
    def __init__(
        self,
        client: httpx.AsyncClient,
        sandbox: jsonnet.JsonnetSandbox,
        *,
        header_allowlist: Sequence[str] = DEFAULT_HEADER_ALLOWLIST,
        tracing: Tracing | None = None,
    ) -> None:
        self._client = client
        self._sandbox = sandbox
        self._tracing = tracing or Tracing.off()
        self._allow = {h.lower() for h in header_allowlist}
        self._bodies: dict[str, str] = {}

    def context(
        self,
        flow: Mapping[str, Any],
        request: Mapping[str, Any] | None,
        *,
        identity: Mapping[str, Any] | None = None,
        session: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Kratos' ``templateContext``: request headers filtered by the allowlist."""
        request = request or {}
        headers: dict[str, list[str]] = {}
        for name, value in request.get("headers", ()):
            if name.lower() in self._allow:
                headers.setdefault(canonical(name), []).append(value)
        ctx: dict[str, Any] = {
            "flow": dict(flow),
            "request_headers": headers,
            "request_method": request.get("method", ""),
            "request_url": request.get("url", ""),
            "request_cookies": dict(request.get("cookies", {})),
        }
        if identity is not None:
            ctx["identity"] = dict(identity)
        if session is not None:
            ctx["session"] = dict(session)
        return ctx

    async def prepare(self, hook: WebHookConfig, ctx: Mapping[str, Any]) -> PreparedCall | None:
        """The request, or None when the body snippet cancelled the call."""
        headers = request_builder.headers(hook)
        body: bytes | None = None
        # Kratos: every method but TRACE may carry a body.
        if hook.method.upper() != "TRACE" and hook.body:
            source = self._bodies.get(hook.body)
            if source is None:
                source = self._bodies[hook.body] = load_source(hook.body, "body")
            try:
                body = await request_builder.body(self._sandbox, source, ctx, headers["Content-Type"])
            except jsonnet.JsonnetError as exc:
                # Kratos' test (request/builder.go): go-jsonnet's text of `error 'cancel'`.
                if "RUNTIME ERROR: cancel" in str(exc):
                    return None
                raise errors.InternalError(reason=f"The web hook body Jsonnet failed: {exc}") from None
        timeout = hook.timeout.total_seconds() if hook.timeout else DEFAULT_TIMEOUT
        return PreparedCall(hook.method.upper(), hook.url, sorted(headers.items()), body, hook.id, timeout)

    async def send(self, call: PreparedCall, extra_headers: Sequence[tuple[str, str]] = ()) -> httpx.Response:
        """One attempt; transport failures become Kratos' 502, timeouts its 504. Traced as a client
        span whose ``traceparent`` the receiver gets (the host only: a URL may carry a secret)."""
        attrs = {
            "http.request.method": call.method,
            "server.address": urlsplit(call.url).hostname,
            "sidecar.webhook.id": call.hook_id,
        }
        with self._tracing.span("sidecar.webhook.call", attrs, client=True) as span:
            traceparent = self._tracing.inject()
            if traceparent is not None:
                extra_headers = [*extra_headers, ("traceparent", traceparent.decode())]
            response = await self._send(call, extra_headers)
            if span is not None:
                span.set_attribute("http.response.status_code", response.status_code)
            return response

    async def _send(self, call: PreparedCall, extra_headers: Sequence[tuple[str, str]]) -> httpx.Response:
        started = time.monotonic()
        try:
            response = await self._client.request(
                call.method,
                call.url,
                headers=[*call.headers, *extra_headers],
                content=call.body,
                timeout=call.timeout,
            )
        except httpx.TimeoutException:
            log.warning(
                "web hook %s %s timed out after %.1fs", call.method, call.url, time.monotonic() - started
            )
            raise errors.GatewayTimeout(
                reason="A third-party upstream service could not be reached. Please try again later."
            ) from None
        except httpx.HTTPError as exc:
            log.warning("web hook %s %s failed: %s", call.method, call.url, type(exc).__name__)
            raise errors.BadGateway(
                reason="A third-party upstream service could not be reached. Please try again later."
            ) from None
        log.info(
            "web hook %s %s answered %d in %.0f ms",
            call.method,
            call.url,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return response

    async def call(self, hook: WebHookConfig, ctx: Mapping[str, Any]) -> CallResult:
        """A synchronous hook (the flow waits): Kratos' ``execute`` without ``response.ignore``."""
        prepared = await self.prepare(hook, ctx)
        if prepared is None:
            return CallResult(skipped=True)
        response = await self.send(prepared)
        body = response.content[:MAX_ANSWER]
        if response.status_code >= 400:
            if hook.interrupts:
                raise WebHookInterrupted(_messages(body))
            raise errors.BadGateway(
                reason="A third-party upstream service responded improperly. Please try again later.",
                details={"error": f"webhook failed with status code {response.status_code}"},
            )
        if hook.response.parse and response.status_code == 200:
            return CallResult(identity_patch=_identity_patch(body))
        return CallResult()


def _messages(body: bytes) -> list[HookMessage]:
    try:
        data = json.loads(body)
    except ValueError:
        raise errors.BadGateway(
            reason="webhook response could not be unmarshalled properly from JSON"
        ) from None
    found = []
    for entry in data.get("messages") or [] if isinstance(data, Mapping) else []:
        if not isinstance(entry, Mapping):
            continue
        texts = []
        for detail in entry.get("messages") or []:
            if isinstance(detail, Mapping):
                text: dict[str, Any] = {
                    "id": int(detail.get("id") or 0),
                    "text": str(detail.get("text") or ""),
                    "type": "error" if detail.get("type") == "error" else "info",
                }
                if isinstance(detail.get("context"), Mapping):
                    text["context"] = dict(detail["context"])
                texts.append(text)
        found.append(HookMessage(str(entry.get("instance_ptr") or "#/"), texts))
    if not found:
        raise errors.BadGateway(reason="error while parsing webhook response: got no validation errors")
    return found


_PATCHABLE = (
    "traits",
    "schema_id",
    "state",
    "verifiable_addresses",
    "recovery_addresses",
    "metadata_public",
    "metadata_admin",
)


def _identity_patch(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        raise errors.BadGateway(
            reason="webhook response could not be unmarshalled properly from JSON"
        ) from None
    identity = data.get("identity") if isinstance(data, Mapping) else None
    if not isinstance(identity, Mapping):
        return None
    patch = {k: identity[k] for k in _PATCHABLE if identity.get(k)}
    if "external_id" in identity:
        patch["external_id"] = identity["external_id"]
    return patch

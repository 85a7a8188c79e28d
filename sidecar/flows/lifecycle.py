"""What every self-service flow shares: creation, loading with CSRF and API-flow checks, expiry,
``return_to`` and where to send the browser afterwards (kratos-api.md §6)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sidecar import errors
from sidecar.config.model import Config, FlowConfig
from sidecar.flows import messages, nodes
from sidecar.flows.messages import Text
from sidecar.flows.model import Flow, FlowKind, FlowType, Ui
from sidecar.flows.outcome import Client, FlowInvalid, FlowReplaced, ShowFlow
from sidecar.flows.store import FlowStore
from sidecar.flows.web_hooks import FlowWebHooks, WebHookServices
from sidecar.identity.model import utcnow
from sidecar.security import csrf
from sidecar.security.return_to import resolve_return_to

_UI_PATHS: dict[FlowKind, str] = {
    "login": "/ui/login",
    "registration": "/ui/registration",
    "settings": "/ui/settings",
    "recovery": "/ui/recovery",
    "verification": "/ui/verification",
}


def contains_nul(value: Any, depth: int = 0) -> bool:
    """NUL anywhere in a submitted string (keys included) is refused before it reaches a store."""
    if isinstance(value, str):
        return "\x00" in value
    if depth > 64:
        return True
    if isinstance(value, Mapping):
        return any(contains_nul(k, depth + 1) or contains_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(v, depth + 1) for v in value)
    return False


def check_submitted(flow: Flow, body: Mapping[str, Any]) -> None:
    """A finished flow is not submitted again (Kratos' ``*_retry_success`` message)."""
    if flow.state == "passed_challenge":
        raise FlowInvalid([messages.retry_success(flow.kind)])
    refuse_nul(body)


def refuse_nul(body: Mapping[str, Any]) -> None:
    if contains_nul(body):
        raise FlowInvalid([messages.generic("The request contains a NUL character, which is not allowed.")])


def failure_reason(exc: FlowInvalid) -> str:
    """The message ids of a rejected submission (``4000006``, ``4000002``): what audit events carry,
    never the text (which may quote what the user typed)."""
    texts = [*exc.messages, *(t for ts in exc.node_messages.values() for t in ts)]
    ids = sorted({str(t["id"]) for t in texts if t.get("type") == "error"} or {str(t["id"]) for t in texts})
    return ",".join(ids) or "invalid"


def apply_invalid(flow: Flow, exc: FlowInvalid) -> None:
    """Show a rejected submission: fresh messages, kept values, secrets never echoed."""
    flow.ui.messages = list(exc.messages)
    nodes.clear_messages(flow.ui.nodes)
    for name, texts in exc.node_messages.items():
        for text in texts:
            if not nodes.add_message(flow.ui.nodes, name, text):
                flow.ui.messages.append(text)
    for name, value in exc.values.items():
        nodes.set_value(flow.ui.nodes, name, value)


class FlowLifecycle:
    def __init__(
        self,
        kind: FlowKind,
        config: Config,
        flow_config: FlowConfig,
        store: FlowStore,
        web_hooks: WebHookServices | None = None,
    ) -> None:
        self.kind = kind
        self.web_hooks = FlowWebHooks(
            config,
            flow_config,
            web_hooks.runner if web_hooks else None,
            web_hooks.dispatcher if web_hooks else None,
        )
        self.config = config
        self.flow_config = flow_config
        self.store = store
        self.base_url = config.public_base_url

    @property
    def ui_url(self) -> str:
        return self.flow_config.ui_url or self.base_url + _UI_PATHS[self.kind]

    def ui_redirect(self, flow: Flow) -> str:
        sep = "&" if "?" in self.ui_url else "?"
        return f"{self.ui_url}{sep}flow={flow.id}"

    def init_url(self, flow_type: FlowType) -> str:
        return f"{self.base_url}/self-service/{self.kind}/{flow_type}"

    def check_return_to(self, raw: str | None) -> str | None:
        ss = self.config.selfservice
        return resolve_return_to(
            raw,
            allowed=ss.allowed_return_urls,
            public_base_url=self.base_url,
            default_url=ss.default_browser_return_url,
        )

    def new_flow(
        self,
        flow_type: FlowType,
        *,
        request_url: str,
        return_to: str | None,
        csrf_token: str | None,
        now: datetime | None = None,
    ) -> Flow:
        issued = now or utcnow()
        flow_id = uuid.uuid4()
        return Flow(
            kind=self.kind,
            type=flow_type,
            id=flow_id,
            issued_at=issued,
            expires_at=issued + self.flow_config.lifespan,
            request_url=request_url,
            return_to=return_to,
            csrf_token=csrf_token if flow_type == "browser" else None,
            ui=Ui(action=f"{self.base_url}/self-service/{self.kind}?flow={flow_id}"),
        )

    async def load(self, flow_id: uuid.UUID | None, *, not_found_reason: str | None = None) -> Flow:
        """The stored flow, or Kratos' 404 for a row that does not exist (``sqlcon.ErrNoRows``:
        "Unable to locate the resource", no reason unless the caller names one)."""
        flow = await self.store.get(self.kind, flow_id) if flow_id else None
        if flow is None:
            raise errors.NotFound("Unable to locate the resource", reason=not_found_reason)
        return flow

    @staticmethod
    def check_browser_binding(flow: Flow, cookie_token: str | None) -> None:
        """A browser flow belongs to the browser holding its CSRF cookie (403 otherwise)."""
        if flow.type == "browser" and not csrf.same_token(flow.csrf_token, cookie_token):
            raise errors.CSRFViolation(details={"reject_reason": "The CSRF cookie does not match the flow."})

    async def fetch(self, flow_id: uuid.UUID | None, cookie_token: str | None) -> Flow:
        return self.check_fetch(await self.load(flow_id), cookie_token)

    def check_fetch(self, flow: Flow, cookie_token: str | None) -> Flow:
        """A loaded flow as the get-flow endpoints hand it out: bound to its browser, not expired."""
        self.check_browser_binding(flow, cookie_token)
        if flow.is_expired():
            raise errors.FlowExpired(
                f"The {self.kind} flow has expired. Initialize a new one.",
                details={"redirect_to": self.init_url(flow.type), "return_to": flow.return_to or ""},
            )
        return flow

    async def load_submitted(self, flow_id: uuid.UUID | None, client: Client) -> Flow:
        """The flow a submission names, once the submission may act on it."""
        flow = await self.load(flow_id)
        self.check_submission(flow, client)
        return flow

    def check_submission(self, flow: Flow, client: Client) -> None:
        """An API flow takes no browser markers; a browser flow needs its CSRF cookie and token."""
        if flow.type == "api":
            if client.browser_markers:
                raise errors.BadRequest(
                    "The flow was initiated as an API request but the submission carries browser cookies "
                    "or an Origin header. Use a browser flow for browsers.",
                    reason="API flows must not be submitted with cookies or an Origin header.",
                )
            return
        self.check_browser_binding(flow, client.csrf_token)
        if not csrf.verify(client.csrf_token, client.csrf_submitted):
            raise errors.CSRFViolation(
                details={"reject_reason": "The anti-CSRF token is missing or invalid."}
            )

    async def show_invalid(self, flow: Flow, exc: FlowInvalid) -> ShowFlow:
        """The flow again, with the submission's problems on it."""
        apply_invalid(flow, exc)
        await self.store.save(flow)
        return ShowFlow(flow, exc.status, exc.headers)

    async def show_new(self, flow: Flow, client: Client) -> ShowFlow:
        """A new flow: the ``before`` web hooks (which may refuse it) ran, saved, to be shown."""
        await self.web_hooks.before(flow, client)
        await self.store.save(flow)
        return ShowFlow(flow)

    async def replace(self, expired: Flow, fresh: Flow, message: Text | None = None) -> FlowReplaced:
        """``fresh`` in place of ``expired``, saved, with Kratos' "the flow expired" (40x0001, or
        ``message``) on it."""
        fresh.ui.messages.append(message or messages.flow_expired(self.kind, expired.expires_at))
        await self.store.save(fresh)
        return FlowReplaced(fresh, expired)

    def after_url(self, flow: Flow, method: str) -> str:
        return flow.return_to or self.flow_config.after.return_url_for(method) or self.after_url_default()

    def after_url_default(self) -> str:
        return self.config.selfservice.default_browser_return_url or self.base_url + "/ui/welcome"

    def hooks(self, method: str) -> list[str]:
        return [h.hook for h in self.flow_config.after.for_method(method)]

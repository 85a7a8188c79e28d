"""The registration flow: init, fetch, submit, expiry and after hooks (kratos-api.md §1.2, §6).

Only the ``session`` after hook signs the new identity in (Kratos: without it, registration
returns no session). Other hook names are accepted and, for now, do nothing.

Registration is all or nothing: when anything after the identity is written fails (a hook, the
courier refusing an address, a store), the identity and any session issued for it are removed
again before the error is answered, so a failed registration never leaves an account behind.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sidecar import errors
from sidecar.audit import AuditLog
from sidecar.config.model import Config
from sidecar.flows import messages, nodes, via
from sidecar.flows.form import decode_submission
from sidecar.flows.lifecycle import FlowLifecycle, check_submitted
from sidecar.flows.model import Flow, FlowType
from sidecar.flows.outcome import (
    AlreadySignedIn,
    Client,
    Completed,
    FlowInvalid,
    Outcome,
    ShowFlow,
)
from sidecar.flows.store import FlowStore
from sidecar.flows.strategy import NotResponsible, RegistrationStrategy
from sidecar.flows.web_hooks import UpdateIdentity, WebHookServices
from sidecar.identity.model import Identity
from sidecar.schema.model import IdentitySchema
from sidecar.schema.registry import SchemaRegistry
from sidecar.session.manager import SessionManager

AfterRegistration = Callable[[Identity, Flow], Awaitable[list[dict[str, Any]]]]
DiscardIdentity = Callable[[uuid.UUID], Awaitable[None]]

log = logging.getLogger("sidecar.flows")


class RegistrationFlows:
    def __init__(
        self,
        config: Config,
        store: FlowStore,
        strategies: Sequence[RegistrationStrategy],
        sessions: SessionManager,
        schemas: SchemaRegistry,
        *,
        after_registration: AfterRegistration | None = None,
        discard: DiscardIdentity | None = None,
        audit: AuditLog | None = None,
        web_hooks: WebHookServices | None = None,
        update: UpdateIdentity | None = None,
    ) -> None:
        """``after_registration``: the verification hook (mails, ``show_verification_ui`` items)."""
        self._flow_config = config.selfservice.flows.registration
        self.life = FlowLifecycle("registration", config, self._flow_config, store, web_hooks)
        self._strategies = tuple(strategies)
        self._sessions = sessions
        self._schemas = schemas
        self._after_registration = after_registration
        self._discard = discard
        self._update = update
        self._audit = audit or AuditLog.off()
        """Deletes an identity whose registration did not complete (``IdentityManager.delete``)."""

    def schema(self, flow: Flow) -> IdentitySchema:
        return self._schemas.get_or_default(flow.identity_schema)

    def _ensure_enabled(self) -> None:
        if not self._flow_config.enabled:
            # registration/error.go ErrRegistrationDisabled
            raise errors.FlowDisabled(
                "registration flow disabled", reason="Registration is not allowed because it was disabled."
            )

    def _build(
        self, flow_type: FlowType, *, request_url: str, return_to: str | None, csrf_token: str | None
    ) -> Flow:
        flow = self.life.new_flow(
            flow_type, request_url=request_url, return_to=return_to, csrf_token=csrf_token
        )
        if flow_type == "browser":
            flow.ui.nodes.append(nodes.csrf_node())
        for strategy in self._strategies:
            if self._flow_config.two_step:
                flow.ui.nodes.extend(strategy.profile_nodes(flow))
            else:
                flow.ui.nodes.extend(strategy.registration_nodes(flow))
        return flow

    async def _move(self, flow: Flow, body: Mapping[str, Any]) -> ShowFlow | None:
        """Two-step registration: a move between the profile and credential-selection screens
        (Kratos ``profile/registration.go``), answered like Kratos: the flow with 400 for JSON
        clients, a 303 to the UI for browsers. None when the submission registers instead."""
        if not self._flow_config.two_step:
            return None
        for strategy in self._strategies:
            step = await strategy.profile_step(flow, body)
            if isinstance(step, NotResponsible):
                continue
            flow.ui.nodes = [n for n in flow.ui.nodes if n["attributes"].get("name") == "csrf_token"]
            flow.state = "choose_method"
            flow.active = None
            for each in self._strategies:
                if step.back:
                    flow.ui.nodes.extend(each.profile_nodes(flow, step.traits))
                else:
                    flow.ui.nodes.extend(each.registration_credential_nodes(flow, step.traits))
            shown = [] if step.back else [messages.choose_credentials()]
            return await self.life.show_invalid(flow, FlowInvalid(shown))
        return None

    async def init(
        self, flow_type: FlowType, client: Client, *, request_url: str, return_to: str | None = None
    ) -> ShowFlow | AlreadySignedIn:
        self._ensure_enabled()
        checked = self.life.check_return_to(return_to)
        if client.session is not None:
            return AlreadySignedIn(checked or self.life.after_url_default())
        flow = self._build(
            flow_type, request_url=request_url, return_to=checked, csrf_token=client.csrf_token
        )
        return await self.life.show_new(flow, client)

    async def fetch(self, flow_id: uuid.UUID | None, client: Client) -> Flow:
        return await self.life.fetch(flow_id, client.csrf_token)

    async def submit(self, flow_id: uuid.UUID | None, body: Mapping[str, Any], client: Client) -> Outcome:
        self._ensure_enabled()
        flow = await self.life.load_submitted(flow_id, client)
        if flow.is_expired():
            fresh = self._build(
                flow.type, request_url=flow.request_url, return_to=flow.return_to, csrf_token=flow.csrf_token
            )
            return await self.life.replace(flow, fresh)
        if client.session is not None:
            return AlreadySignedIn(flow.return_to or self.life.after_url_default())
        body = decode_submission(self.schema(flow), body)
        method = body.get("method")
        flow.active = (
            method if isinstance(method, str) and method in {s.id for s in self._strategies} else None
        )
        try:
            check_submitted(flow, body)
            moved = await self._move(flow, body)
            if moved is not None:
                return moved
            identity = await self._register(flow, body, client)
        except FlowInvalid as exc:
            return await self.life.show_invalid(flow, exc)
        state = flow.state
        try:
            done = await self._complete(flow, identity, client, flow.active or "password")
        except Exception as exc:
            await self._undo(identity)
            if not isinstance(exc, FlowInvalid):
                raise
            flow.state = state
            return await self.life.show_invalid(flow, exc)
        method = flow.active or "password"
        await self.life.web_hooks.after(
            flow, method, client, identity=done.identity, session=done.session, interrupting=False
        )
        self._audit.emit(
            "registration.succeeded",
            client,
            identity_id=identity.id,
            method=flow.active or "password",
            session_id=done.session.id if done.session is not None else None,
            flow_id=flow.id,
            flow_type=flow.type,
        )
        return done

    async def _undo(self, identity: Identity) -> None:
        """Remove what a failed registration wrote: the identity's sessions, then the identity."""
        try:
            await self._sessions.delete_for_identity(identity.id)
            if self._discard is not None:
                await self._discard(identity.id)
        except Exception:
            # The original error is what the client gets; this one is for the operator.
            log.exception("could not remove identity %s after its registration failed", identity.id)

    async def _register(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity:
        via.take(flow)  # a record an earlier, failed attempt left is not this one's
        for strategy in self._strategies:
            result = await strategy.register(flow, body, client)
            if not isinstance(result, NotResponsible):
                return result
        raise FlowInvalid([messages.no_strategy("registration")])

    async def _complete(self, flow: Flow, identity: Identity, client: Client, method: str) -> Completed:
        # Kratos' pre-persist web hooks (parse / can_interrupt): they may change the identity or
        # refuse it; a refusal undoes the registration (submit's except), nothing is left behind.
        patch = await self.life.web_hooks.after(flow, method, client, identity=identity, interrupting=True)
        if patch and self._update is not None:
            identity = await self._update(identity, patch)
        session, token = None, None
        if "session" in self.life.hooks(method):
            issued = await self._sessions.issue(
                identity.id, method, device=client.device(), via=via.take(flow)
            )
            session, token = issued.session, issued.token
        flow.state = "passed_challenge"
        flow.ui.messages = []
        await self.life.store.save(flow)
        redirect_to = self.life.after_url(flow, method)
        hook = self._after_registration
        continue_with = await hook(identity, flow) if hook is not None else []
        if "show_verification_ui" in self.life.hooks(method):
            redirect_to = next((c["flow"]["url"] for c in continue_with if c["flow"].get("url")), redirect_to)
        return Completed(flow, identity, redirect_to, session, token, tuple(continue_with))

"""The settings flow: init, fetch, submit, expiry (kratos-api.md §1.3, §6).

Every step needs a session whose identity owns the flow (403 ``security_identity_mismatch``
otherwise) and which satisfies ``selfservice.flows.settings.required_aal`` (403
``session_aal2_required``). Strategies decide which changes are privileged; a session older than
``privileged_session_max_age`` then gets 403 ``session_refresh_required`` pointing at a
``refresh=true`` login that returns to this flow. State goes ``show_form`` → ``success`` and the
flow stays usable; after each change every strategy redraws its nodes from the new identity.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sidecar import errors
from sidecar.audit import AuditLog
from sidecar.config.model import Config
from sidecar.flows import messages, nodes
from sidecar.flows.form import decode_submission
from sidecar.flows.lifecycle import FlowLifecycle, refuse_nul
from sidecar.flows.model import Flow, FlowType
from sidecar.flows.outcome import Client, Completed, FlowInvalid, Outcome, ShowFlow
from sidecar.flows.store import FlowStore
from sidecar.flows.strategy import (
    BeforeSave,
    NotResponsible,
    SettingsContext,
    SettingsStrategy,
    SettingsUpdate,
)
from sidecar.flows.web_hooks import UpdateIdentity, WebHookServices, apply_patch
from sidecar.identity.model import Credential, Identity, utcnow
from sidecar.schema.registry import SchemaRegistry
from sidecar.session.aal import Assurance, aal2_required, refresh_url
from sidecar.session.manager import SessionManager
from sidecar.session.model import Session

GetIdentity = Callable[[uuid.UUID], Awaitable[Identity]]
CONTINUITY = "continuity"
"""``flow.internal`` key: a browser's settings change paused for a refresh login. It may hold a new
password until the flow is resumed or expires, as Kratos' continuity container does."""

SECOND_FACTOR_CREDENTIALS = ("totp", "lookup_secret", "webauthn")


def _factor_count(credential: Credential | None) -> int:
    if credential is None:
        return 0
    keys = credential.config.get("credentials")
    return len(keys) if isinstance(keys, list) else 1


def credential_changes(before: Identity, after: Identity) -> list[tuple[str, str | None]]:
    """The audit events a settings change makes: ``(event, method)`` pairs, read from the
    credentials before and after, whichever strategy made the change."""
    changes: list[tuple[str, str | None]] = []
    old_pw, new_pw = before.credentials.get("password"), after.credentials.get("password")
    if new_pw is not None and new_pw.config.get("hashed_password") != (
        old_pw.config.get("hashed_password") if old_pw is not None else None
    ):
        changes.append(("password.changed", None))
    for kind in SECOND_FACTOR_CREDENTIALS:
        old, new = before.credentials.get(kind), after.credentials.get(kind)
        had, has = _factor_count(old), _factor_count(new)
        # New backup codes confirmed in place of old ones are a new enrolment too.
        renewed = old is not None and new is not None and old.config != new.config and kind == "lookup_secret"
        if has > had or renewed:
            changes.append(("mfa.enrolled", kind))
        elif has < had:
            changes.append(("mfa.removed", kind))
    return changes


class SettingsFlows:
    def __init__(
        self,
        config: Config,
        store: FlowStore,
        strategies: Sequence[SettingsStrategy],
        sessions: SessionManager,
        assurance: Assurance,
        get_identity: GetIdentity,
        schemas: SchemaRegistry,
        *,
        audit: AuditLog | None = None,
        web_hooks: WebHookServices | None = None,
        update: UpdateIdentity | None = None,
    ) -> None:
        self._flow_config = config.selfservice.flows.settings
        self.life = FlowLifecycle("settings", config, self._flow_config, store, web_hooks)
        self._strategies = tuple(strategies)
        self._sessions = sessions
        self._assurance = assurance
        self._get_identity = get_identity
        self._audit = audit or AuditLog.off()
        self._schemas = schemas
        self._update_identity = update

    # --- who may use the flow -----------------------------------------------------------------

    async def _require(self, client: Client) -> tuple[Session, Identity]:
        session = client.session
        if session is None:
            raise errors.SessionInactive()
        try:
            identity = await self._get_identity(session.identity_id)
        except errors.NotFound:
            raise errors.SessionInactive() from None
        if identity.state != "active":
            raise errors.SessionInactive()
        return session, identity

    def _check_aal(self, session: Session, identity: Identity, return_to: str) -> None:
        if not self._assurance.satisfies(session, identity, self._flow_config.required_aal):
            raise aal2_required(self.life.base_url, return_to)

    def is_privileged(self, session: Session) -> bool:
        return utcnow() - session.authenticated_at < self._flow_config.privileged_session_max_age

    def refresh_required(self, flow: Flow) -> errors.RefreshRequired:
        """Kratos (settings/error.go ``reauthenticate``): the refresh login returns to this flow's
        submit URL, where a browser's paused change is resumed (``_resume``)."""
        resume = f"{self.life.base_url}/self-service/settings?flow={flow.id}"
        return errors.RefreshRequired(extra={"redirect_browser_to": refresh_url(self.life.base_url, resume)})

    @staticmethod
    def _resume(flow: Flow, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The change a browser submitted before its refresh login (Kratos' continuity container,
        ``settings.PrepareUpdate`` → ``ErrContinuePreviousAction``), taken once, when the browser
        lands on the submit URL with nothing submitted."""
        if (
            flow.type != "browser"
            or body.get("method")
            or not isinstance(flow.internal.get(CONTINUITY), dict)
        ):
            return None
        paused: dict[str, Any] = flow.internal.pop(CONTINUITY)
        return paused

    # --- nodes ----------------------------------------------------------------------------------

    def _populate(self, flow: Flow, identity: Identity) -> None:
        flow.ui.nodes = [nodes.csrf_node()] if flow.type == "browser" else []
        for strategy in self._strategies:
            flow.ui.nodes.extend(strategy.settings_nodes(flow, identity))

    def _new(
        self,
        flow_type: FlowType,
        identity: Identity,
        *,
        request_url: str,
        return_to: str | None,
        csrf_token: str | None,
    ) -> Flow:
        flow = self.life.new_flow(
            flow_type, request_url=request_url, return_to=return_to, csrf_token=csrf_token
        )
        flow.state = "show_form"
        flow.identity_id = identity.id
        self._populate(flow, identity)
        return flow

    # --- steps ----------------------------------------------------------------------------------

    async def init(
        self, flow_type: FlowType, client: Client, *, request_url: str, return_to: str | None = None
    ) -> ShowFlow:
        session, identity = await self._require(client)
        self._check_aal(session, identity, request_url)
        checked = self.life.check_return_to(return_to)
        flow = self._new(
            flow_type, identity, request_url=request_url, return_to=checked, csrf_token=client.csrf_token
        )
        return await self.life.show_new(flow, client)

    async def fetch(self, flow_id: uuid.UUID | None, client: Client) -> tuple[Flow, Identity]:
        # Kratos' getSettingsFlow (settings/handler.go) loads the flow before the session: an
        # unknown id is a 404 even without one.
        flow = await self.life.load(flow_id)
        session, identity = await self._require(client)
        self.life.check_fetch(flow, client.csrf_token)
        if flow.identity_id != identity.id:
            raise errors.IdentityMismatch()
        self._check_aal(session, identity, self.life.ui_redirect(flow))
        return flow, identity

    async def submit(self, flow_id: uuid.UUID | None, body: Mapping[str, Any], client: Client) -> Outcome:
        flow = await self.life.load(flow_id)
        resumed = self._resume(flow, body)
        if resumed is not None:
            # The browser is back from the refresh login (a GET carrying no token): the flow is
            # bound to this browser's CSRF cookie, and the change was submitted with a token.
            self.life.check_browser_binding(flow, client.csrf_token)
            body = resumed
        else:
            self.life.check_submission(flow, client)
        session, identity = await self._require(client)
        if flow.identity_id != identity.id:
            raise errors.IdentityMismatch()
        if flow.is_expired():
            fresh = self._new(
                flow.type,
                identity,
                request_url=flow.request_url,
                return_to=flow.return_to,
                csrf_token=flow.csrf_token,
            )
            return await self.life.replace(flow, fresh, messages.settings_flow_expired(flow.expires_at))
        self._check_aal(session, identity, self.life.ui_redirect(flow))
        body = decode_submission(self._schemas.get(identity.schema_id), body)
        method = body.get("method")
        known = {s.id for s in self._strategies}
        flow.active = method if isinstance(method, str) and method in known else flow.active
        ctx = SettingsContext(
            identity,
            session,
            client,
            privileged=self.is_privileged(session),
            before_save=self._pre_persist(flow, method if isinstance(method, str) else "", client),
        )
        try:
            refuse_nul(body)
            update, used = await self._update(flow, body, ctx)
        except FlowInvalid as exc:
            return await self.life.show_invalid(flow, exc)
        except errors.RefreshRequired:
            if flow.type == "browser":
                flow.internal[CONTINUITY] = {k: v for k, v in body.items() if k != "csrf_token"}
                await self.life.store.save(flow)
            raise self.refresh_required(flow) from None
        for event, kind in credential_changes(identity, update.identity):
            if event == "password.changed":
                self._audit.emit(event, client, identity_id=identity.id, flow_id=flow.id)
            else:
                self._audit.emit(event, client, identity_id=identity.id, method=kind, flow_id=flow.id)
        outcome = await self._finish(flow, update, used, session)
        if isinstance(outcome, Completed):
            await self.life.web_hooks.after(
                flow, used, client, identity=update.identity, session=session, interrupting=False
            )
        return outcome

    def _pre_persist(self, flow: Flow, method: str, client: Client) -> BeforeSave:
        """Kratos' ``PostSettingsPrePersistHooks``: the ``web_hook`` after hooks with
        ``response.parse`` or ``can_interrupt`` see the identity about to be saved (a refusal
        raises ``FlowInvalid`` with the hook's messages on the fields, nothing saved); their
        changes to traits and metadata are kept."""

        async def before_save(proposed: Identity, keeps_traits: bool) -> Identity:
            # ``method`` of the submission; the settings hooks of Kratos are per method.
            patch = await self.life.web_hooks.after(
                flow, method or flow.active or "profile", client, identity=proposed, interrupting=True
            )
            if not patch:
                return proposed
            if keeps_traits or self._update_identity is None:
                return apply_patch(proposed, patch)
            try:
                return await self._update_identity(proposed, patch)
            except (errors.Conflict, errors.ValidationError) as exc:
                raise FlowInvalid([messages.generic(exc.reason or exc.message)]) from None

        return before_save

    async def _update(
        self, flow: Flow, body: Mapping[str, Any], ctx: SettingsContext
    ) -> tuple[SettingsUpdate, str]:
        for strategy in self._strategies:
            result = await strategy.update_settings(flow, body, ctx)
            if not isinstance(result, NotResponsible):
                return result, strategy.id
        raise FlowInvalid([messages.settings_no_strategy()])

    async def _finish(self, flow: Flow, update: SettingsUpdate, method: str, session: Session) -> Outcome:
        flow.active = method
        identity = update.identity
        if update.second_factor:
            await self._sessions.add_authentication_method(session, update.second_factor, "aal2")
        self._populate(flow, identity)
        flow.ui.messages = list(update.messages)
        if not update.done:
            await self.life.store.save(flow)
            return ShowFlow(flow)
        if "revoke_active_sessions" in self.life.hooks(method):
            await self._sessions.revoke_others(identity.id, except_id=session.id)
        flow.state = "success"
        flow.ui.messages.append(messages.settings_saved())
        await self.life.store.save(flow)
        redirect = (
            flow.return_to or self._flow_config.after.return_url_for(method) or self.life.ui_redirect(flow)
        )
        return Completed(flow, identity, redirect)

"""The recovery flow (kratos-api.md §1.4, §6): prove control of a recovery address, get a
privileged session and a settings flow to set a new password.

Recovery only starts without a session. Success issues a fresh ``aal1`` session (method
``code_recovery`` / ``link_recovery``): recovery never lowers MFA requirements, so an identity with
a second factor still meets the usual aal2 checks afterwards. The browser goes on to the settings
UI; an SPA gets 422 ``browser_location_change_required`` unless the feature flag
``use_continue_with_transitions`` is on. ``settings`` creates the settings flow; without one the
browser is sent to ``/self-service/settings/browser``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sidecar import errors
from sidecar.flows import messages, nodes
from sidecar.flows.challenge_flow import ChallengeFlows
from sidecar.flows.lifecycle import FlowLifecycle
from sidecar.flows.messages import Text
from sidecar.flows.model import Flow, FlowType
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import AlreadySignedIn, Client, Completed, Outcome, ShowFlow
from sidecar.flows.strategy import ChallengePassed, ChallengeResult, NotResponsible, RecoveryStrategy
from sidecar.identity.model import Identity
from sidecar.security.onetime import Grant
from sidecar.session.manager import SessionManager
from sidecar.session.model import Session


class SettingsStarter(Protocol):
    """Creates the settings flow a recovered user lands on (``sidecar.flows.settings``)."""

    async def start_after_recovery(
        self,
        flow_type: FlowType,
        identity: Identity,
        session: Session,
        *,
        request_url: str,
        return_to: str | None,
        csrf_token: str | None,
        message: Text,
    ) -> tuple[uuid.UUID | None, str]:
        """The new settings flow's id and its UI URL (``?flow=<id>``); no id when the identity must
        first complete a second factor (the URL is then the aal2 login)."""
        ...


class SettingsInit(Protocol):
    """The part of ``sidecar.flows.settings.SettingsFlows`` recovery uses."""

    @property
    def life(self) -> FlowLifecycle: ...

    async def init(
        self, flow_type: FlowType, client: Client, *, request_url: str, return_to: str | None = None
    ) -> ShowFlow: ...


class SettingsAfterRecovery:
    """A ``SettingsStarter`` over the settings flow's ordinary init, so its checks all apply.

    The recovery session is aal1: for an identity whose settings need aal2 the init refuses, and
    the recovered user is sent to the second-factor login first (recovery does not lower MFA).
    """

    def __init__(self, settings: SettingsInit) -> None:
        self._settings = settings

    async def start_after_recovery(
        self,
        flow_type: FlowType,
        identity: Identity,
        session: Session,
        *,
        request_url: str,
        return_to: str | None,
        csrf_token: str | None,
        message: Text,
    ) -> tuple[uuid.UUID | None, str]:
        client = Client(session=session, csrf_token=csrf_token)
        try:
            shown = await self._settings.init(flow_type, client, request_url=request_url, return_to=return_to)
        except errors.AAL2Required as exc:
            target = exc.extra.get("redirect_browser_to")
            return None, str(
                target
            ) if target else f"{self._settings.life.base_url}/self-service/login/browser?aal=aal2"
        shown.flow.ui.messages.append(message)
        await self._settings.life.store.save(shown.flow)
        return shown.flow.id, self._settings.life.ui_redirect(shown.flow)


@dataclass(frozen=True, slots=True)
class AdminRecovery:
    flow: Flow
    secret: str
    expires_at: datetime


class RecoveryFlows(ChallengeFlows[RecoveryStrategy]):
    kind = "recovery"

    def __init__(
        self,
        *args: Any,
        sessions: SessionManager,
        settings: SettingsStarter | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.sessions = sessions
        self.settings = settings

    def _strategy_nodes(self, strategy: RecoveryStrategy, flow: Flow) -> list[Node]:
        return list(strategy.recovery_nodes(flow))

    async def _run(
        self, strategy: RecoveryStrategy, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> ChallengeResult | NotResponsible:
        return await strategy.recover(flow, body, client)

    async def init(
        self, flow_type: FlowType, client: Client, *, request_url: str, return_to: str | None = None
    ) -> ShowFlow | AlreadySignedIn:
        self.ensure_enabled()
        checked = self.life.check_return_to(return_to)
        if client.session is not None:
            return AlreadySignedIn(checked or self.life.after_url_default())
        flow = self.build(flow_type, request_url=request_url, return_to=checked, csrf_token=client.csrf_token)
        return await self.life.show_new(flow, client)

    async def _passed(self, flow: Flow, passed: ChallengePassed, client: Client) -> Outcome:
        identity = passed.identity
        method = f"{flow.active or self.flow_config.use}_recovery"
        issued = await self.sessions.issue(identity.id, method, device=client.device())
        if "revoke_active_sessions" in self.life.hooks(method):
            # Kratos' selfservice/hook/session_destroyer.go: whoever had the account loses it here.
            await self.sessions.revoke_others(identity.id, except_id=issued.session.id)
        max_age = self.config.selfservice.flows.settings.privileged_session_max_age
        success = messages.recovery_successful(issued.session.authenticated_at + max_age)
        flow.state = "passed_challenge"
        flow.ui.messages = [success]
        continue_with: list[dict[str, Any]] = []
        if flow.type == "api":
            continue_with.append({"action": "set_ory_session_token", "ory_session_token": issued.token})
        base = self.config.public_base_url
        redirect_to = f"{base}/self-service/settings/browser"
        if self.settings is not None:
            settings_id, settings_url = await self.settings.start_after_recovery(
                flow.type,
                identity,
                issued.session,
                request_url=f"{base}/self-service/settings/{flow.type}",
                return_to=flow.return_to,
                csrf_token=client.csrf_token or flow.csrf_token,
                message=success,
            )
            if settings_id is not None:
                item: dict[str, Any] = {"id": str(settings_id)}
                if flow.type == "browser":
                    item["url"] = settings_url
                continue_with.append({"action": "show_settings_ui", "flow": item})
            else:
                continue_with.append({"action": "redirect_browser_to", "redirect_browser_to": settings_url})
            redirect_to = settings_url
        await self.life.store.save(flow)
        self.audit.emit(
            "recovery.completed",
            client,
            identity_id=identity.id,
            method=flow.active or self.flow_config.use,
            session_id=issued.session.id,
            flow_id=flow.id,
            flow_type=flow.type,
        )
        await self.life.web_hooks.after(flow, method, client, identity=identity, session=issued.session)
        return Completed(flow, identity, redirect_to, issued.session, issued.token, tuple(continue_with))

    async def create_for_admin(
        self, identity: Identity, *, kind: str, flow_type: FlowType, expires_in: timedelta | None
    ) -> AdminRecovery:
        """Kratos' ``POST /admin/recovery/{code,link}``: a flow in ``sent_email`` and its secret.

        Nothing is mailed; the admin hands the link (and code) to the user. A browser flow belongs
        to no browser until the first one opens its link (``ChallengeFlows.submit``).
        """
        strategy = next((s for s in self._all_strategies if s.id == kind), None)
        if strategy is None or not self.flow_config.enabled:
            raise errors.BadRequest(
                f"The recovery method {kind!r} is not enabled.",
                reason="Recovery or this recovery method is disabled.",
            )
        lifespan = expires_in or strategy.lifespan
        now = self.clock()
        flow = self.life.new_flow(
            flow_type,
            request_url=f"{self.config.public_base_url}/self-service/recovery/{flow_type}",
            return_to=None,
            csrf_token=None,
            now=now,
        )
        flow.expires_at = max(flow.expires_at, now + lifespan)
        if flow_type == "browser":
            flow.ui.nodes.append(nodes.csrf_node())
        address = identity.recovery_addresses[0] if identity.recovery_addresses else None
        grant = Grant(
            flow.id,
            identity.id,
            address.value if address else "",
            address.via if address else "email",
            now + lifespan,
            address.id if address else None,
        )
        secret = await strategy.issue_for_admin(flow, grant, now)
        flow.state = "sent_email"
        flow.active = kind
        await self.life.store.save(flow)
        return AdminRecovery(flow, secret, grant.expires_at)

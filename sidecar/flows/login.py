"""The login flow: init (browser | api), fetch, submit, expiry (kratos-api.md §1.1, §6).

Pure domain code: it takes plain values (``Client``, the submitted body) and returns an outcome;
``sidecar.api.public.login`` turns outcomes into HTTP. Strategies come in as an ordered list.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sidecar import errors
from sidecar.audit import AuditLog
from sidecar.config.model import Config
from sidecar.flows import identifier_first, messages, nodes, via
from sidecar.flows.identifier_first import IdentifierFirst
from sidecar.flows.lifecycle import FlowLifecycle, check_submitted, failure_reason
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
from sidecar.flows.strategy import LoginStrategy, NotResponsible, SsoRouter
from sidecar.flows.web_hooks import WebHookServices
from sidecar.identity.model import Identity
from sidecar.session.aal import Assurance, step_up_url
from sidecar.session.manager import SessionManager

SendVerification = Callable[[Identity, Flow], Awaitable[list[dict[str, Any]]]]
"""Mails each unverified address of the identity; the ``show_verification_ui`` items."""

AAL_LEVELS = ("aal1", "aal2")
# Submissions that carry a typed identifier, and so are routed by its email domain first.
ROUTED_METHODS = (None, "", "password", "identifier_first", "code")
SECOND_FACTOR_METHODS = "aal2_methods"
"""``flow.internal`` key: the second factors the identity had set up when an aal2 flow began."""


class LoginFlows:
    def __init__(
        self,
        config: Config,
        store: FlowStore,
        strategies: Sequence[LoginStrategy],
        sessions: SessionManager,
        assurance: Assurance,
        get_identity: Callable[[uuid.UUID], Awaitable[Identity]] | None = None,
        *,
        audit: AuditLog | None = None,
        identifier_first: IdentifierFirst | None = None,
        web_hooks: WebHookServices | None = None,
        verify: SendVerification | None = None,
        sso: SsoRouter | None = None,
    ) -> None:
        """``identifier_first``: given when ``login.style`` is ``identifier_first``; ``sso``: login
        routing by email domain (without it every identifier signs in here)."""
        self._verify = verify
        self._identifier_first = identifier_first
        self._sso = sso
        self.life = FlowLifecycle("login", config, config.selfservice.flows.login, store, web_hooks)
        self._strategies = tuple(strategies)
        self._second_factors = frozenset(s.id for s in self._strategies if s.second_factor)
        self._sessions = sessions
        self._assurance = assurance
        self._get_identity = get_identity
        self._required_aal = config.session.whoami.required_aal
        self._audit = audit or AuditLog.off()

    def _strategies_for(self, flow: Flow) -> list[LoginStrategy]:
        """An aal2 flow offers only the second factors the identity has; aal1 only first factors."""
        if flow.requested_aal == "aal2":
            allowed = flow.internal.get(SECOND_FACTOR_METHODS)
            counted = self._assurance.methods
            return [
                s
                for s in self._strategies
                if s.second_factor
                # Methods that count toward AAL only once set up; others (code) always.
                and (s.id not in counted or not isinstance(allowed, list) or s.id in allowed)
            ]
        if flow.organization_id is not None:
            # Kratos: a flow for an organization offers only its single sign-on.
            return [s for s in self._strategies if s.first_factor and s.organizations]
        # A second-factor method may also sign in on its own (passwordless WebAuthn).
        return [s for s in self._strategies if s.first_factor]

    def _two_screens(self, flow: Flow) -> IdentifierFirst | None:
        """Identifier first applies to a first sign-in only: Kratos' refresh and aal2 flows keep
        their one screen (login/handler.go, the populate switch)."""
        if flow.requested_aal == "aal1" and not flow.refresh:
            return self._identifier_first
        return None

    def _build(
        self,
        flow_type: FlowType,
        *,
        request_url: str,
        return_to: str | None,
        csrf_token: str | None,
        refresh: bool,
        aal: str,
        second_factors: list[str] | None = None,
        organization_id: uuid.UUID | None = None,
    ) -> Flow:
        flow = self.life.new_flow(
            flow_type, request_url=request_url, return_to=return_to, csrf_token=csrf_token
        )
        flow.organization_id = organization_id if aal == "aal1" else None
        flow.refresh = refresh
        flow.requested_aal = aal
        if second_factors is not None:
            flow.internal[SECOND_FACTOR_METHODS] = second_factors
        if flow_type == "browser":
            flow.ui.nodes.append(nodes.csrf_node())
        two_screens = self._two_screens(flow)
        if two_screens is not None:
            flow.ui.nodes.extend(two_screens.first_screen(flow, self._strategies_for(flow)))
        else:
            for strategy in self._strategies_for(flow):
                flow.ui.nodes.extend(strategy.login_nodes(flow))
        if refresh:
            flow.ui.messages.append(messages.login_reauth())
        elif aal != "aal1":
            flow.ui.messages.append(messages.login_mfa())
        return flow

    async def init(
        self,
        flow_type: FlowType,
        client: Client,
        *,
        request_url: str,
        return_to: str | None = None,
        refresh: bool = False,
        aal: str | None = None,
        organization: str | None = None,
    ) -> ShowFlow | AlreadySignedIn:
        checked = self.life.check_return_to(return_to)
        organization_id = None
        if organization:
            try:
                organization_id = uuid.UUID(organization)
            except ValueError:
                raise errors.BadRequest("organization must be a UUID") from None
        requested = aal or "aal1"
        if requested not in AAL_LEVELS:
            raise errors.BadRequest(f"Unknown authenticator assurance level {requested!r}.")
        session = client.session
        if requested != "aal1" and session is None:
            raise errors.SessionAAL1Required()
        if session is not None and not refresh and requested <= session.aal:
            return AlreadySignedIn(checked or self.life.after_url_default())
        second_factors = None
        identity = None
        if requested == "aal2" and session is not None and self._get_identity is not None:
            identity = await self._get_identity(session.identity_id)
            second_factors = self._assurance.second_factors(identity)
        flow = self._build(
            flow_type,
            request_url=request_url,
            return_to=checked,
            csrf_token=client.csrf_token,
            refresh=refresh and session is not None,
            aal=requested,
            second_factors=second_factors,
            organization_id=organization_id,
        )
        if identity is not None:
            for strategy in self._strategies_for(flow):
                # Second factors whose nodes depend on the identity (WebAuthn's allowed keys).
                await strategy.prepare_login(flow, identity)
        return await self.life.show_new(flow, client)

    async def fetch(self, flow_id: uuid.UUID | None, client: Client) -> Flow:
        return await self.life.fetch(flow_id, client.csrf_token)

    async def submit(self, flow_id: uuid.UUID | None, body: Mapping[str, Any], client: Client) -> Outcome:
        flow = await self.life.load_submitted(flow_id, client)
        if flow.is_expired():
            fresh = self._build(
                flow.type,
                request_url=flow.request_url,
                return_to=flow.return_to,
                csrf_token=flow.csrf_token,
                refresh=flow.refresh,
                aal=flow.requested_aal,
                second_factors=flow.internal.get(SECOND_FACTOR_METHODS),
                organization_id=flow.organization_id,
            )
            return await self.life.replace(flow, fresh)
        session = client.session
        if session is not None and not flow.refresh and flow.requested_aal <= session.aal:
            return AlreadySignedIn(flow.return_to or self.life.after_url_default())
        method = body.get("method")
        offered = self._strategies_for(flow)
        flow.active = method if isinstance(method, str) and method in {s.id for s in offered} else None
        try:
            check_submitted(flow, body)
            await self._route(flow, body)
            two_screens = self._two_screens(flow)
            if method == identifier_first.METHOD and two_screens is not None:
                await two_screens.second_screen(flow, body, offered)
            identity = await self._authenticate(flow, body, client)
        except FlowInvalid as exc:
            if exc.status >= 400 and exc.status != 429:  # 429: the throttle's own event
                self._audit.emit(
                    "login.failed",
                    client,
                    identity_id=session.identity_id if session is not None else None,
                    method=flow.active or (method if isinstance(method, str) else None),
                    reason=failure_reason(exc),
                    flow_id=flow.id,
                    flow_type=flow.type,
                )
            return await self.life.show_invalid(flow, exc)
        try:
            # Kratos runs login post hooks before the session is kept: one that may interrupt
            # (response.parse / can_interrupt) can refuse the sign-in with its messages.
            await self.life.web_hooks.after(
                flow, flow.active or "password", client, identity=identity, interrupting=True
            )
        except FlowInvalid as exc:
            return await self.life.show_invalid(flow, exc)
        done = await self._complete(flow, identity, client, flow.active or "password")
        await self.life.web_hooks.after(
            flow,
            flow.active or "password",
            client,
            identity=identity,
            session=done.session,
            interrupting=False,
        )
        self._audit.emit(
            "login.succeeded",
            client,
            identity_id=identity.id,
            method=flow.active or "password",
            aal=done.session.aal if done.session is not None else None,
            session_id=done.session.id if done.session is not None else None,
            flow_id=flow.id,
            flow_type=flow.type,
        )
        return done

    async def _route(self, flow: Flow, body: Mapping[str, Any]) -> None:
        """Single sign-on by email domain first, before any password is looked at or any account
        is looked up (so the answer reveals nothing)."""
        identifier = body.get("identifier")
        method = body.get("method")
        if not isinstance(identifier, str) or not identifier or method not in ROUTED_METHODS:
            return
        if self._sso is not None and flow.requested_aal == "aal1" and not flow.refresh:
            await self._sso.route(flow, identifier)
        if method == identifier_first.METHOD and self._two_screens(flow) is None:
            # The unified form: Kratos' identifier-first step shows the flow again, filled in.
            raise FlowInvalid(values={"identifier": identifier})

    async def _authenticate(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity:
        via.take(flow)  # a record an earlier, failed attempt left is not this one's
        for strategy in self._strategies_for(flow):
            result = await strategy.login(flow, body, client)
            if not isinstance(result, NotResponsible):
                for step in self._strategies:
                    await step.after_login(flow, result, strategy.id)
                return result
        raise FlowInvalid([messages.no_strategy("login")])

    async def _complete(self, flow: Flow, identity: Identity, client: Client, method: str) -> Completed:
        current = client.session
        signed_in_via = via.take(flow)
        if flow.requested_aal == "aal2" and method in self._second_factors:
            # A second factor upgrades the session it was asked for: same id, same token.
            if current is None:
                raise errors.SessionAAL1Required()
            if current.identity_id != identity.id:
                raise errors.IdentityMismatch()
            session = await self._sessions.reauthenticate(current, method, aal="aal2")
            token = client.session_token
        elif flow.refresh and current is not None:
            if current.identity_id != identity.id:
                raise errors.IdentityMismatch()
            session = await self._sessions.reauthenticate(current, method, via=signed_in_via)
            token = client.session_token
        else:
            if "require_verified_address" in self.life.hooks(method) and not any(
                a.verified for a in identity.verifiable_addresses
            ):
                raise errors.VerifiedAddressRequired()
            issued = await self._sessions.issue(
                identity.id, method, device=client.device(), via=signed_in_via
            )
            session, token = issued.session, issued.token
            if "revoke_active_sessions" in self.life.hooks(method):
                await self._sessions.revoke_others(identity.id, except_id=session.id)
        flow.state = "passed_challenge"
        flow.ui.messages = []
        await self.life.store.save(flow)
        redirect = self.life.after_url(flow, method)
        continue_with: list[dict[str, Any]] = []
        hooks = self.life.hooks(method)
        if "verification" in hooks and flow.requested_aal == "aal1" and self._verify is not None:
            # Kratos selfservice/hook/verification.go ExecuteLoginPostHook: unverified addresses
            # get a verification message and flow on an aal1 sign-in.
            continue_with = await self._verify(identity, flow)
        if not self._assurance.satisfies(session, identity, self._required_aal):
            # The identity has a second factor: a first factor alone does not finish the sign-in.
            redirect = step_up_url(self.life.base_url, flow.return_to)
        elif "show_verification_ui" in hooks:
            # Kratos show_verification_ui.go: the browser goes to the verification flow.
            redirect = next((c["flow"]["url"] for c in continue_with if c["flow"].get("url")), redirect)
        return Completed(flow, identity, redirect, session, token, tuple(continue_with))

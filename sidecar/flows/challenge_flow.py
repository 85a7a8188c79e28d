"""What the recovery and verification flows share (kratos-api.md §1.4, §6): a flow of the
``selfservice.flows.<kind>.use`` strategy, ``choose_method`` → ``sent_email`` → ``passed_challenge``.

Links and codes from a mail land as a GET on the submit URL carrying ``token`` or ``code``: the
secret itself is the proof there, so such a landing skips the CSRF check (a GET cannot carry the
token, and the mail may be opened in another browser). Every other submission is checked as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

from sidecar import errors
from sidecar.audit import AuditLog
from sidecar.config.model import Config
from sidecar.flows import messages, nodes
from sidecar.flows.lifecycle import FlowLifecycle, apply_invalid, check_submitted
from sidecar.flows.model import Flow, FlowType
from sidecar.flows.outcome import Client, FlowInvalid, FlowReplaced, Outcome, ShowFlow
from sidecar.flows.store import FlowStore
from sidecar.flows.strategy import (
    ChallengePassed,
    ChallengeResult,
    ChallengeSent,
    NotResponsible,
    RecoveryStrategy,
    SecretExpired,
    VerificationStrategy,
)
from sidecar.flows.web_hooks import WebHookServices
from sidecar.identity.model import utcnow
from sidecar.kv.store import KeyValueStore

Kind = Literal["recovery", "verification"]
LOCK_TTL = timedelta(seconds=15)
LOCK_POLL = 0.02
LOCK_WAIT_STEPS = 500  # 10 s

S = TypeVar("S", RecoveryStrategy, VerificationStrategy)


class ChallengeFlows(Generic[S]):
    """Base of ``RecoveryFlows`` and ``VerificationFlows``, over their strategy protocol ``S``."""

    kind: Kind

    def __init__(
        self,
        config: Config,
        store: FlowStore,
        strategies: Sequence[S],
        *,
        kv: KeyValueStore,
        clock: Callable[[], datetime] = utcnow,
        audit: AuditLog | None = None,
        web_hooks: WebHookServices | None = None,
    ) -> None:
        flow_config = getattr(config.selfservice.flows, self.kind)
        self.config = config
        self.flow_config = flow_config
        self.life = FlowLifecycle(self.kind, config, flow_config, store, web_hooks)
        # Kratos shows and accepts only the strategy named by ``selfservice.flows.<kind>.use``.
        self._strategies: tuple[S, ...] = tuple(s for s in strategies if s.id == flow_config.use)
        self._all_strategies: tuple[S, ...] = tuple(strategies)
        self.clock = clock
        self._kv = kv
        self.audit = audit or AuditLog.off()

    @property
    def enabled(self) -> bool:
        return bool(self.flow_config.enabled) and bool(self._strategies)

    def _ensure_flow_enabled(self) -> None:
        if not self.flow_config.enabled:
            raise errors.BadRequest(
                reason=f"{self.kind.capitalize()} is not allowed because it was disabled."
            )

    def ensure_enabled(self) -> None:
        """Kratos' answers, word for word (Ory's UIs print the reason): recovery/handler.go and
        verification/handler.go for a disabled flow, driver/registry_default_recovery.go and
        registry_default_verification.go for a ``use`` whose method is off."""
        self._ensure_flow_enabled()
        if not self._strategies:
            use = self.flow_config.use
            raise errors.BadRequest(
                reason=(
                    f"You attempted recovery using {use}, which is not enabled or does not exist. "
                    "An administrator needs to enable this recovery method."
                )
                if self.kind == "recovery"
                else (
                    f"The active verification strategy {use} is not enabled. "
                    "Please enable it in the configuration."
                )
            )

    @property
    def strategy(self) -> S:
        self.ensure_enabled()
        return self._strategies[0]

    def _strategy_nodes(self, strategy: S, flow: Flow) -> list[nodes.Node]:
        raise NotImplementedError

    async def _run(
        self, strategy: S, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> ChallengeResult | NotResponsible:
        raise NotImplementedError

    async def _passed(self, flow: Flow, passed: ChallengePassed, client: Client) -> Outcome:
        raise NotImplementedError

    def build(
        self,
        flow_type: FlowType,
        *,
        request_url: str,
        return_to: str | None,
        csrf_token: str | None,
        now: datetime | None = None,
    ) -> Flow:
        flow = self.life.new_flow(
            flow_type,
            request_url=request_url,
            return_to=return_to,
            csrf_token=csrf_token,
            now=now or self.clock(),
        )
        if flow_type == "browser":
            flow.ui.nodes.append(nodes.csrf_node())
        for strategy in self._strategies:
            flow.ui.nodes.extend(self._strategy_nodes(strategy, flow))
        return flow

    async def fetch(self, flow_id: uuid.UUID | None, client: Client) -> Flow:
        self._ensure_flow_enabled()  # Kratos' get{Recovery,Verification}Flow check this first
        return await self.life.fetch(flow_id, client.csrf_token)

    async def _replace(self, flow: Flow, expired_at: datetime) -> FlowReplaced:
        fresh = self.build(
            flow.type, request_url=flow.request_url, return_to=flow.return_to, csrf_token=flow.csrf_token
        )
        return await self.life.replace(flow, fresh, messages.challenge_flow_expired(self.kind, expired_at))

    @contextlib.asynccontextmanager
    async def _locked(self, flow_id: uuid.UUID | None) -> AsyncIterator[None]:
        """One submission of a flow at a time: a losing racer must not overwrite the winner's
        ``passed_challenge`` with its own (older) copy of the flow."""
        if flow_id is None:
            yield
            return
        key = f"flow-lock:{self.kind}:{flow_id}"
        for _ in range(LOCK_WAIT_STEPS):
            if await self._kv.add(key, b"1", LOCK_TTL):
                break
            await asyncio.sleep(LOCK_POLL)
        else:
            raise errors.ServiceUnavailable("The flow is busy, please try again.")
        try:
            yield
        finally:
            await self._kv.delete(key)

    async def submit(
        self, flow_id: uuid.UUID | None, body: Mapping[str, Any], client: Client, *, landing: bool = False
    ) -> Outcome:
        """``landing``: a GET on the submit URL (a link from a mail, or the admin recovery link)."""
        self.ensure_enabled()
        async with self._locked(flow_id):
            return await self._submit(flow_id, body, client, landing=landing)

    async def _submit(
        self, flow_id: uuid.UUID | None, body: Mapping[str, Any], client: Client, *, landing: bool
    ) -> Outcome:
        flow = await self.life.load(
            flow_id, not_found_reason=f"The {self.kind} request could not be found. Please restart the flow."
        )
        carries_secret = any(isinstance(body.get(k), str) and body.get(k) for k in ("token", "code"))
        if landing and flow.type == "browser" and flow.csrf_token is None and client.csrf_token:
            # A flow made by the admin API belongs to no browser yet: the first one to open it.
            flow.csrf_token = client.csrf_token
            await self.life.store.save(flow)
        if landing and not carries_secret:
            if flow.type == "browser":
                self.life.check_browser_binding(flow, client.csrf_token)
                return ShowFlow(flow)
            raise errors.BadRequest("Nothing was submitted: send the form with POST.")
        if not (landing and carries_secret):
            self.life.check_submission(flow, client)
        if flow.is_expired(self.clock()):
            return await self._replace(flow, flow.expires_at)
        method = body.get("method")
        if isinstance(method, str) and method in {s.id for s in self._strategies}:
            flow.active = method
        try:
            check_submitted(flow, body)
            result = await self._dispatch(flow, body, client)
        except FlowInvalid as exc:
            apply_invalid(flow, exc)
            return ShowFlow(await self._save_unless_passed(flow), exc.status, exc.headers)
        except SecretExpired as exc:
            return await self._replace(flow, exc.expired_at)
        if isinstance(result, ChallengeSent):
            # For an unknown address nothing was sent, and the event says no more than the answer.
            self.audit.emit(
                f"{self.kind}.started", client, method=flow.active, flow_id=flow.id, flow_type=flow.type
            )
            return ShowFlow(await self._save_unless_passed(flow))
        if landing and flow.type == "browser" and client.csrf_token:
            # The mail may be opened in another browser: the finished flow follows the secret.
            flow.csrf_token = client.csrf_token
        return await self._passed(flow, result, client)

    async def _save_unless_passed(self, flow: Flow) -> Flow:
        """A losing concurrent submission must not turn a passed flow back into ``sent_email``."""
        stored = await self.life.store.get(self.kind, flow.id)
        if stored is not None and stored.state == "passed_challenge":
            stored.ui.messages = [messages.retry_success(self.kind)]
            return stored
        await self.life.store.save(flow)
        return flow

    async def _dispatch(self, flow: Flow, body: Mapping[str, Any], client: Client) -> ChallengeResult:
        # An admin-made flow uses the method it was made for, whatever ``use`` says.
        chosen = [s for s in self._all_strategies if s.id == flow.active]
        for strategy in chosen or self._strategies:
            result = await self._run(strategy, flow, body, client)
            if not isinstance(result, NotResponsible):
                return result
        raise FlowInvalid([messages.challenge_no_strategy(self.kind)])

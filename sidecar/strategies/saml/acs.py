"""The ways back from a SAML identity provider: the assertion consumer service (ACS), its single
logout service (SLO), and our metadata.

ACS: the ``RelayState`` is taken (single use) and must name this connection; its flow must
belong to this browser (the CSRF cookie), and the response must answer the request that flow
sent. With no RelayState of ours the response is unsolicited (identity-provider-initiated): it
is refused unless the connection has ``allow_idp_initiated``, and then it starts a new login
flow. A checked assertion's ID is accepted once. The sign-in then continues as every federated
one does (``federation.continuation``).

SLO: a LogoutRequest signed by the identity provider revokes the sessions its NameID and
SessionIndex values name (every session of the identity when it has no SessionIndex), and is
answered with a LogoutResponse. Our own LogoutRequest goes to the connection that signed the
session in, for the NameID and SessionIndex of that sign-in (recorded with the session).

Both count each request per client IP first (``rate_limit``: the kv store's fixed windows, shared
by every replica), and report each message's fate to the gate metrics (``GateObserver``): ``ok``
or the bucket of its refusal (``protocol.REFUSALS``), ``busy`` or ``rate_limited``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Protocol, TypeVar

from sidecar import errors
from sidecar.admission import Admission
from sidecar.flows.model import Flow, FlowKind
from sidecar.flows.outcome import AlreadySignedIn, Client, Outcome
from sidecar.identity.model import Identity
from sidecar.security import csrf
from sidecar.security.ratelimit import RateLimiter
from sidecar.security.throttle import ip_bucket
from sidecar.session.model import ProviderSignIn, Session
from sidecar.strategies.federation.accounts import Verified
from sidecar.strategies.federation.continuation import SignInContinuation
from sidecar.strategies.saml.binding import MAX_MESSAGE
from sidecar.strategies.saml.connections import SamlConnection, SamlConnections
from sidecar.strategies.saml.protocol import (
    Assertion,
    LogoutOrder,
    SamlRefused,
    logout_request,
    parse_logout_request,
    parse_response,
    precheck_response,
    sp_metadata,
)
from sidecar.strategies.saml.strategy import SamlStrategy, claims_of

MIN_REPLAY_TTL = timedelta(minutes=10)
T = TypeVar("T")


RESPONSE = "response"
LOGOUT_REQUEST = "logout_request"


class RevokesSessions(Protocol):
    async def revoke_provider_sessions(
        self,
        identity_id: uuid.UUID,
        method: str,
        provider: str,
        subject: str,
        session_indexes: tuple[str, ...],
    ) -> int: ...


class GateObserver(Protocol):
    """Where the gate's events go (``sidecar.metrics.Metrics``)."""

    def saml_message(self, message: str, outcome: str) -> None:
        """One ``response`` or ``logout_request``: ``ok``, a refusal bucket, ``busy``, ``rate_limited``."""
        ...

    def observe_saml_check(self, seconds: float) -> None:
        """The time one signature check took (in its thread, the wait for a slot not included)."""
        ...


class _NoObserver:
    def saml_message(self, message: str, outcome: str) -> None:
        return None

    def observe_saml_check(self, seconds: float) -> None:
        return None


def refused(exc: SamlRefused | str) -> errors.BadRequest:
    text = "The identity provider's answer was refused. Please start again."
    return errors.BadRequest(text, reason=text, details={"hint": str(exc)[:300]})


class SamlEndpoints:
    def __init__(
        self,
        strategy: SamlStrategy,
        continuation: SignInContinuation,
        sessions: RevokesSessions,
        identities: Callable[[uuid.UUID], Awaitable[Identity]],
        *,
        clock_skew: timedelta,
        gate: Admission,
        limiter: RateLimiter,
        observer: GateObserver | None = None,
    ) -> None:
        self._strategy = strategy
        self._connections = strategy.connections
        self._states = strategy.states
        self._continuation = continuation
        self._sessions = sessions
        self._identities = identities
        self._skew = clock_skew
        self._gate = gate
        self._limiter = limiter
        self._observer = observer or _NoObserver()

    @property
    def connections(self) -> SamlConnections:
        return self._connections

    def _connection(self, connection_id: str) -> SamlConnection:
        found = self._connections.find(connection_id)
        if found is None:
            raise errors.NotFound("No such SAML connection.")
        return found

    async def metadata(self, connection_id: str) -> str:
        config = await self._connections.sp_config(self._connection(connection_id))
        return await asyncio.to_thread(sp_metadata, config)

    async def post_form(self, connection_id: str, relay_state: str | None) -> tuple[str, dict[str, str]]:
        """The HTTP-POST AuthnRequest waiting under ``relay_state`` (once)."""
        self._connection(connection_id)
        found = await self._states.take_form(relay_state)
        if found is None:
            raise errors.BadRequest("The sign-in request is invalid or was already used. Please start again.")
        return found

    async def admit(self, message: str, ip: str | None) -> None:
        """Count one ACS or SLO request from ``ip`` (IPv6: its /64) before anything of it is read;
        429 with ``Retry-After`` past ``rate_limit.per_ip`` in the window."""
        verdict = await self._limiter.hit("saml", identifier=None, ip=ip_bucket(ip) if ip else "unknown")
        if not verdict.allowed:
            self._observer.saml_message(message, "rate_limited")
            raise errors.TooManyRequests(
                "Too many single sign-on requests from your network, "
                f"please retry in {verdict.retry_after} seconds",
                headers={"Retry-After": str(verdict.retry_after)},
            )

    def refused_early(self, message: str, reason: str) -> None:
        """A message the HTTP layer refused before handing it here (a body over the size bound)."""
        self._observer.saml_message(message, reason)

    async def precheck(self, connection_id: str, saml_response: str | None) -> None:
        """The cheap checks of a posted response, before it is parked: an oversized, malformed,
        unsigned or misaddressed one is refused without spending a signature check
        (``precheck_response``)."""
        connection = self._connection(connection_id)
        if not saml_response:
            self._observer.saml_message(RESPONSE, "malformed")
            raise refused("no SAMLResponse")
        if len(saml_response) > MAX_MESSAGE:
            self._observer.saml_message(RESPONSE, "too_large")
            raise errors.PayloadTooLarge(f"the SAMLResponse exceeds {MAX_MESSAGE} bytes")
        try:
            await asyncio.to_thread(precheck_response, connection.settings, saml_response)
        except SamlRefused as exc:
            self._observer.saml_message(RESPONSE, exc.reason)
            raise refused(exc) from None

    @asynccontextmanager
    async def _slot(self, message: str) -> AsyncIterator[None]:
        """One slot of the verification gate; its 503 (nothing taken yet) is counted ``busy``."""
        admitted = False
        try:
            async with self._gate.admitted():
                admitted = True
                yield
        except errors.ServiceUnavailable:
            if not admitted:
                self._observer.saml_message(message, "busy")
            raise

    def verifying(self) -> AbstractAsyncContextManager[None]:
        """One slot of the verification gate for the block; 503 before anything is taken when full."""
        return self._slot(RESPONSE)

    async def park(self, fields: dict[str, str]) -> str:
        return await self._states.park(fields)

    async def unpark(self, handle: str | None) -> dict[str, str]:
        found = await self._states.unpark(handle)
        if found is None:
            self._observer.saml_message(RESPONSE, "replay")
            raise refused("the posted response is unknown, expired or was already used")
        return found

    async def _checked(self, check: Callable[[], T]) -> T:
        """A signature check in a thread, timed for ``observe_saml_check``."""
        started = time.perf_counter()
        try:
            return await asyncio.to_thread(check)
        finally:
            self._observer.observe_saml_check(time.perf_counter() - started)

    async def _flow(
        self, connection: SamlConnection, relay_state: str | None, client: Client
    ) -> tuple[Flow | AlreadySignedIn, str | None]:
        record = await self._states.take(relay_state)
        if record is None:
            if not connection.provider.allow_idp_initiated:
                raise SamlRefused(
                    "unsolicited response (identity-provider-initiated login is off)", "inresponseto"
                )
            started = await self._continuation.fresh_login(client)
            return started, None
        if record.provider != connection.id:
            raise SamlRefused("the RelayState belongs to another connection", "inresponseto")
        flow = await self._continuation.returning_to(record.flow_kind, record.flow_uuid, client)
        return flow, record.request_id

    async def consume(
        self, connection_id: str, saml_response: str | None, relay_state: str | None, client: Client
    ) -> tuple[FlowKind, Outcome]:
        connection = self._connection(connection_id)
        try:
            checked = await self._verify(connection, saml_response, relay_state, client)
        except SamlRefused as exc:
            self._observer.saml_message(RESPONSE, exc.reason)
            raise refused(exc) from None
        except errors.SidecarError:
            self._observer.saml_message(RESPONSE, "other")
            raise
        if isinstance(checked, AlreadySignedIn):
            return "login", checked  # an unsolicited answer to a signed-in browser: nothing checked
        flow, assertion = checked
        self._observer.saml_message(RESPONSE, "ok")
        claims = claims_of(
            assertion.issuer,
            assertion.name_id,
            assertion.name_id_format,
            assertion.attributes,
            assertion.session_index,
        )
        verified = Verified(connection.id, assertion.name_id, claims)
        # The RelayState proved this navigation continues the browser's own flow: it stands in for
        # the CSRF token a form would have sent.
        trusted = replace(client, csrf_submitted=csrf.mask(flow.csrf_token) if flow.csrf_token else None)
        return await self._continuation.proceed(
            flow, verified, trusted, self._strategy.accounts, self._strategy.map_claims, connection.label
        )

    async def _verify(
        self, connection: SamlConnection, saml_response: str | None, relay_state: str | None, client: Client
    ) -> AlreadySignedIn | tuple[Flow, Assertion]:
        """The flow the response continues and the assertion it proved; SamlRefused with its bucket."""
        if not saml_response:
            raise SamlRefused("no SAMLResponse", "malformed")
        config = await self._connections.sp_config(connection)
        flow, request_id = await self._flow(connection, relay_state, client)
        if isinstance(flow, AlreadySignedIn):
            return flow
        assertion = await self._checked(
            lambda: parse_response(connection.settings, config, saml_response, request_id)
        )
        if not assertion.name_id:
            raise SamlRefused("the assertion names no subject", "malformed")
        # Kept while the assertion could be accepted, and ten minutes at least (one without an
        # expiry is refused by pysaml2, but the cache does not rely on that).
        left = max(timedelta(seconds=assertion.not_on_or_after - time.time()) + self._skew, MIN_REPLAY_TTL)
        if not await self._states.first_use(assertion.issuer, assertion.assertion_id, left):
            raise SamlRefused("this assertion was already used", "replay")
        return flow, assertion

    # --- single logout --------------------------------------------------------------------------------

    async def logout_from_idp(self, connection_id: str, message: str, binding: str, query: str | None) -> str:
        """An identity provider's LogoutRequest: end the sessions it names (SAML core §3.7.3.2: those
        of its SessionIndex values, every session of the subject when it has none); the answer."""
        connection = self._connection(connection_id)
        config = await self._connections.sp_config(connection)
        try:
            async with self._slot(LOGOUT_REQUEST):
                order: LogoutOrder = await self._checked(
                    lambda: parse_logout_request(config, message, binding, query)
                )
        except SamlRefused as exc:
            self._observer.saml_message(LOGOUT_REQUEST, exc.reason)
            raise refused(exc) from None
        self._observer.saml_message(LOGOUT_REQUEST, "ok")
        identity = await self._strategy.accounts.find_identity(Verified(connection.id, order.name_id, {}))
        if identity is not None:
            await self._sessions.revoke_provider_sessions(
                identity.id, "saml", connection.id, order.name_id, order.session_indexes
            )
        return order.answer.url

    async def logout_url(self, session: Session, target: str) -> str | None:
        """SP-initiated single logout, after the local one, for a session signed in with SAML: a
        LogoutRequest to the connection of its latest SAML sign-in, naming that sign-in's NameID
        and SessionIndex, when the identity provider has a single logout endpoint. Its answer
        comes back to ``slo/<id>`` and goes on to ``target``."""
        signed_in = next((m for m in reversed(session.authentication_methods) if m.method == "saml"), None)
        if signed_in is None:
            return None
        via: ProviderSignIn | None
        if signed_in.provider is not None and signed_in.subject:
            via = ProviderSignIn(
                signed_in.provider, signed_in.subject, signed_in.subject_format, signed_in.session_index
            )
        else:
            via = await self._only_connection(session)
        connection = self._connections.find(via.provider) if via is not None else None
        if via is None or via.subject is None or connection is None:
            return None
        config = await self._connections.sp_config(connection)
        relay = await self._states.park_target(target)
        try:
            out = await asyncio.to_thread(
                logout_request, config, via.subject, via.subject_format, relay, via.session_index
            )
        except SamlRefused:
            return None  # this identity provider has no single logout
        return out.url

    async def _only_connection(self, session: Session) -> ProviderSignIn | None:
        """A session from before sessions recorded their connection: the identity's SAML
        connection if it has exactly one (with several, which one signed it in is unknown)."""
        try:
            identity = await self._identities(session.identity_id)
        except errors.NotFound:
            return None
        credential = identity.credentials.get("saml")
        linked = [i.partition(":") for i in (credential.identifiers if credential else ())]
        if len(linked) != 1 or not linked[0][2]:
            return None
        return ProviderSignIn(linked[0][0], linked[0][2])

    async def logged_out(self, relay_state: str | None) -> str | None:
        """Where the identity provider's LogoutResponse sends the browser: the logout's target."""
        return await self._states.take_target(relay_state)

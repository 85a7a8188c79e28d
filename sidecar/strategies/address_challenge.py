"""What the ``code`` and ``link`` strategies share for recovery and verification: reading the
address, mail-bombing limits, finding the address, sending the message, checking a secret.

Account enumeration: the flow answers "sent" for known and unknown addresses alike (Kratos does
this whatever ``security.account_enumeration.mitigate`` says). An unknown address gets the
``*_invalid`` template only with ``notify_unknown_recipients``. With ``mitigate`` on, the unknown
path also does the same store work as the known one (a decoy secret, a rendered message) so the
answer takes as long.

An address must be a valid address in sidecar's sense (``sidecar.security.emails``): CR, LF, any
other control or invisible character is refused before it gets near a lookup or an SMTP header.
Mail about an account goes to the address *as stored* on it, never to the string typed into the
form: a look-alike that normalises to a stored address (``carol@example.te\u017ft``, with a long
s) finds the account, and the code must still reach only the stored mailbox.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from sidecar.config.model import Config
from sidecar.courier.model import TemplateType
from sidecar.flows import messages
from sidecar.flows.messages import Text
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client, FlowInvalid
from sidecar.flows.strategy import (
    ChallengePassed,
    ChallengeResult,
    NotResponsible,
    RecoveryStrategy,
    SecretExpired,
    VerificationStrategy,
)
from sidecar.identity.model import Identity, utcnow
from sidecar.kv.store import KeyValueStore
from sidecar.security.emails import InvalidEmail, canonical_email
from sidecar.security.identifiers import normalize_identifier
from sidecar.security.onetime import Grant, OneTimeSecrets, SecretKind
from sidecar.security.ratelimit import RateLimiter

Purpose = Literal["recovery", "verification"]
MAX_ADDRESS_LENGTH = 320


class AddressDirectory(Protocol):
    """The part of ``IdentityStore`` recovery and verification use."""

    async def get(self, identity_id: uuid.UUID) -> Identity | None: ...

    async def find_verifiable_address(self, via: str, value: str) -> tuple[Identity, uuid.UUID] | None: ...

    async def find_recovery_address(self, via: str, value: str) -> tuple[Identity, uuid.UUID] | None: ...

    async def mark_address_verified(self, address_id: uuid.UUID) -> None: ...


class Mailer(Protocol):
    """``sidecar.courier.service.Courier``: render and enqueue; the worker delivers."""

    async def send(
        self, template_type: TemplateType, recipient: str, data: Mapping[str, Any], *, via: str = "email"
    ) -> uuid.UUID: ...


@dataclass(frozen=True, slots=True)
class ChallengeDeps:
    addresses: AddressDirectory
    courier: Mailer
    kv: KeyValueStore
    send_limiter: RateLimiter
    clock: Callable[[], datetime] = field(default=utcnow)


def clean_address(value: Any) -> str:
    """The submitted email, or FlowInvalid (missing, too long, not a valid address)."""
    if not isinstance(value, str) or not value.strip():
        raise FlowInvalid(node_messages={"email": [messages.required("email")]})
    if len(value) > MAX_ADDRESS_LENGTH:
        raise FlowInvalid(node_messages={"email": [messages.invalid_email()]})
    try:
        canonical_email(value)
    except InvalidEmail:
        raise FlowInvalid(node_messages={"email": [messages.invalid_email()]}) from None
    return value.strip()


def stored_address(identity: Identity, address_id: uuid.UUID, fallback: str) -> str:
    """The value of the identity's address ``address_id`` as stored (``fallback`` if it is gone)."""
    for recovery in identity.recovery_addresses:
        if recovery.id == address_id:
            return recovery.value
    for verifiable in identity.verifiable_addresses:
        if verifiable.id == address_id:
            return verifiable.value
    return fallback


def _rate_limited(retry_after: int, email: str) -> FlowInvalid:
    return FlowInvalid(
        [messages.rate_limited(retry_after)],
        values={"email": email},
        status=429,
        headers={"Retry-After": str(retry_after)},
    )


class AddressChallenge(RecoveryStrategy, VerificationStrategy):
    """Base of ``CodeStrategy`` and ``LinkStrategy``: one secret kind, both purposes."""

    kind: SecretKind

    def __init__(self, config: Config, deps: ChallengeDeps) -> None:
        self._config = config
        self._deps = deps
        self._secrets: dict[Purpose, OneTimeSecrets] = {
            "recovery": OneTimeSecrets(deps.kv, "recovery"),
            "verification": OneTimeSecrets(deps.kv, "verification"),
        }

    # --- to be provided by the concrete strategy ------------------------------------------------
    @property
    def lifespan(self) -> timedelta:
        raise NotImplementedError

    def new_secret(self) -> str:
        raise NotImplementedError

    def template(self, purpose: Purpose, known: bool) -> TemplateType:
        raise NotImplementedError

    def template_data(self, purpose: Purpose, flow: Flow, secret: str) -> dict[str, Any]:
        raise NotImplementedError

    def email_nodes(self) -> list[Node]:
        """The first step's nodes: the address field and its submit button."""
        raise NotImplementedError

    def show_sent(self, flow: Flow, purpose: Purpose, email: str | None) -> None:
        """Turn ``flow`` into its "sent" step for ``email``."""
        raise NotImplementedError

    def admin_nodes(self) -> list[Node]:
        """The nodes an admin-made recovery flow adds in its "sent" step (a link needs none)."""
        return []

    async def _handle(
        self, purpose: Purpose, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> ChallengeResult | NotResponsible:
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------------
    def recovery_nodes(self, flow: Flow) -> list[Node]:
        return self.email_nodes()

    def verification_nodes(self, flow: Flow) -> list[Node]:
        return self.email_nodes()

    async def recover(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> ChallengeResult | NotResponsible:
        return await self._handle("recovery", flow, body, client)

    async def verify(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> ChallengeResult | NotResponsible:
        result = await self._handle("verification", flow, body, client)
        if isinstance(result, ChallengePassed):
            await self.mark_verified(result.address_id)
        return result

    async def send_verification(
        self, flow: Flow, identity: Identity, address: str, via: str, address_id: uuid.UUID
    ) -> None:
        await self.issue("verification", flow, identity, address, via, address_id)
        # The form's resend takes an email address (Kratos' ``email`` field); a text message's
        # flow has only the code input.
        self.show_sent(flow, "verification", address if via == "email" else None)

    async def issue_for_admin(self, flow: Flow, grant: Grant, now: datetime) -> str:
        secret = self.new_secret()
        await self.secrets("recovery").store(self.kind, secret, grant, now)
        flow.ui.nodes.extend(self.admin_nodes())
        return secret

    def secrets(self, purpose: Purpose) -> OneTimeSecrets:
        return self._secrets[purpose]

    def now(self) -> datetime:
        return self._deps.clock()

    async def _lookup(self, purpose: Purpose, email: str) -> tuple[Identity, uuid.UUID] | None:
        value = normalize_identifier(email, "code", via="email")
        addresses = self._deps.addresses
        if purpose == "recovery":
            found = await addresses.find_recovery_address("email", value)
            # A disabled identity cannot be recovered; it is answered like an unknown address.
            return found if found is not None and found[0].state == "active" else None
        return await addresses.find_verifiable_address("email", value)

    async def send(self, purpose: Purpose, flow: Flow, email: str, client: Client) -> None:
        """Rate-limit, look up, and send the valid (or, if configured, the invalid) template."""
        verdict = await self._deps.send_limiter.hit(f"{purpose}_send", identifier=email, ip=client.ip)
        if not verdict.allowed:
            raise _rate_limited(verdict.retry_after, email)
        found = await self._lookup(purpose, email)
        if found is not None:
            identity, address_id = found
            stored = stored_address(identity, address_id, normalize_identifier(email, "code", via="email"))
            await self.issue(purpose, flow, identity, stored, "email", address_id)
            return
        flows = self._config.selfservice.flows
        notify = (flows.recovery if purpose == "recovery" else flows.verification).notify_unknown_recipients
        if self._config.security.account_enumeration.mitigate:
            # Same store work as a known address, for a secret nobody will ever see.
            decoy = Grant(flow.id, uuid.UUID(int=0), email, "email", self.now() + self.lifespan)
            await self.secrets(purpose).store(self.kind, self.new_secret(), decoy, self.now())
        if notify:
            # No account, so no stored address: the typed one in its canonical form (checked).
            await self._mail(self.template(purpose, known=False), canonical_email(email), {})

    async def issue(
        self,
        purpose: Purpose,
        flow: Flow,
        identity: Identity,
        address: str,
        via: str,
        address_id: uuid.UUID | None,
        *,
        lifespan: timedelta | None = None,
    ) -> str:
        """Store a fresh secret for ``flow`` (replacing the flow's earlier one) and mail it."""
        secret = self.new_secret()
        now = self.now()
        grant = Grant(flow.id, identity.id, address, via, now + (lifespan or self.lifespan), address_id)
        await self.secrets(purpose).store(self.kind, secret, grant, now)
        data = {"identity": _template_identity(identity), **self.template_data(purpose, flow, secret)}
        await self._mail(self.template(purpose, known=True), address, data, via=via)
        return secret

    async def _mail(
        self, template: TemplateType, to: str, data: dict[str, Any], *, via: str = "email"
    ) -> None:
        try:
            await self._deps.courier.send(template, to, data, via=via)
        except ValueError:
            # The courier refuses recipients that are not a single safe address.
            raise FlowInvalid(node_messages={"email": [messages.invalid_email()]}) from None

    async def check(
        self, purpose: Purpose, flow: Flow, secret: str, invalid: Text, *, status: int = 200
    ) -> ChallengePassed:
        grant = await self.secrets(purpose).take(self.kind, flow.id, secret)
        if grant is None or grant.identity_id == uuid.UUID(int=0):
            raise FlowInvalid([invalid], status=status)
        if grant.is_expired(self.now()):
            raise SecretExpired(grant.expires_at)
        identity = await self._deps.addresses.get(grant.identity_id)
        if identity is None:
            raise FlowInvalid([invalid], status=status)
        return ChallengePassed(identity, grant.address, grant.via, grant.address_id)

    async def mark_verified(self, address_id: uuid.UUID | None) -> None:
        if address_id is not None:
            await self._deps.addresses.mark_address_verified(address_id)


def _template_identity(identity: Identity) -> dict[str, Any]:
    """What templates may show of the identity (Kratos passes it; we leave credentials out)."""
    return {
        "id": str(identity.id),
        "traits": identity.traits,
        "schema_id": identity.schema_id,
        # Public by definition; the courier may read the recipient's language from it.
        "metadata_public": identity.metadata_public,
    }

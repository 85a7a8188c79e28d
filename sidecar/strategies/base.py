"""What a flow asks of a strategy (Kratos ``selfservice/flow/login/strategy.go`` and friends).

A strategy adds its UI nodes to a new flow and handles a submission whose ``method`` names it;
for any other submission it returns ``NOT_RESPONSIBLE`` so the flow asks the next one. A rejected
submission raises ``sidecar.flows.outcome.FlowInvalid``. Flows only know these protocols.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

from sidecar.flows.messages import Text
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client
from sidecar.identity.model import Identity
from sidecar.session.model import Session


class NotResponsible:
    """Sentinel: "this submission is not mine"."""

    _instance: NotResponsible | None = None

    def __new__(cls) -> NotResponsible:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_RESPONSIBLE"


NOT_RESPONSIBLE: Final = NotResponsible()


class Strategy(Protocol):
    @property
    def id(self) -> str:
        """The ``method`` value this strategy answers to (``password``, ``profile``, ...)."""
        ...


class LoginStrategy(Strategy, Protocol):
    def login_nodes(self, flow: Flow) -> list[Node]: ...

    async def login(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity | NotResponsible:
        """The authenticated identity, or NOT_RESPONSIBLE; raises FlowInvalid when rejected."""
        ...


class RegistrationStrategy(Strategy, Protocol):
    def registration_nodes(self, flow: Flow) -> list[Node]: ...

    async def register(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> Identity | NotResponsible:
        """The created (persisted) identity, or NOT_RESPONSIBLE; raises FlowInvalid when rejected."""
        ...


# --- recovery and verification (Kratos selfservice/flow/{recovery,verification}/strategy.go) ----


@dataclass(frozen=True, slots=True)
class ChallengeSent:
    """A code or link went out (or, for an unknown address, nothing did; the answer is the same)."""


@dataclass(frozen=True, slots=True)
class ChallengePassed:
    """The submitted code or link proved control of ``address`` of ``identity``."""

    identity: Identity
    address: str
    via: str
    address_id: uuid.UUID | None = None


class SecretExpired(Exception):
    """The code or link was right but too old: the flow is replaced (Kratos 4060005 / 4070005)."""

    def __init__(self, expired_at: datetime) -> None:
        super().__init__("the one-time secret has expired")
        self.expired_at = expired_at


ChallengeResult = ChallengeSent | ChallengePassed


class RecoveryStrategy(Strategy, Protocol):
    def recovery_nodes(self, flow: Flow) -> list[Node]: ...

    async def recover(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> ChallengeResult | NotResponsible:
        """Send (state ``sent_email``) or check a secret; raises FlowInvalid or SecretExpired."""
        ...


class VerificationStrategy(Strategy, Protocol):
    def verification_nodes(self, flow: Flow) -> list[Node]: ...

    async def verify(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> ChallengeResult | NotResponsible:
        """Send (state ``sent_email``) or check a secret; raises FlowInvalid or SecretExpired."""
        ...

    async def send_verification(
        self, flow: Flow, identity: Identity, address: str, via: str, address_id: uuid.UUID
    ) -> None:
        """Send a secret for ``address`` on ``flow`` (after registration, no form involved)."""
        ...


@dataclass(frozen=True, slots=True)
class SettingsContext:
    """Who is changing their settings, and whether the session is privileged (recent enough)."""

    identity: Identity
    session: Session
    client: Client
    privileged: bool


@dataclass(frozen=True, slots=True)
class SettingsUpdate:
    """What a settings strategy did. ``done=False`` shows the flow again without success (e.g. new
    backup codes waiting to be confirmed); ``second_factor`` names a second factor just proven
    (enrolment counts as authenticating with it, as in Kratos)."""

    identity: Identity
    done: bool = True
    second_factor: str | None = None
    messages: list[Text] = field(default_factory=list)


class SettingsStrategy(Strategy, Protocol):
    def settings_nodes(self, flow: Flow, identity: Identity) -> list[Node]:
        """The method's nodes for ``identity``; may keep server-side state in ``flow.internal``."""
        ...

    async def update_settings(
        self, flow: Flow, body: Mapping[str, Any], ctx: SettingsContext
    ) -> SettingsUpdate | NotResponsible:
        """Apply the change; raises FlowInvalid when rejected, ``errors.RefreshRequired`` when the
        change is privileged (kratos-api.md §6) and ``ctx.privileged`` is false."""
        ...

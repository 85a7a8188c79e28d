"""What a flow asks of a strategy (Kratos ``selfservice/flow/login/strategy.go`` and friends).

The flows own these contracts; strategies implement them (``class TotpStrategy(LoginStrategy,
SettingsStrategy)``), so the import arrow points from ``sidecar.strategies`` to here, never back.
A strategy adds its UI nodes to a new flow and handles a submission whose ``method`` names it;
for any other submission it returns ``NOT_RESPONSIBLE`` so the flow asks the next one. A rejected
submission raises ``sidecar.flows.outcome.FlowInvalid``.

Optional abilities are declared members with a default here (a strategy that subclasses the
protocol inherits it and overrides what applies): ``first_factor`` / ``second_factor``,
``prepare_login``, ``after_login`` and ``counts_toward_aal``. Flows read them; nothing probes a
strategy with ``getattr`` or ``hasattr``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final, Protocol

from sidecar.flows.messages import Text
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client
from sidecar.identity.model import Identity
from sidecar.security.onetime import Grant
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
    id: ClassVar[str]
    """The ``method`` value this strategy answers to (``password``, ``profile``, ...), also its key
    under ``selfservice.methods``."""

    counts_toward_aal: ClassVar[bool] = False
    """Whether a credential of this method, once set up, lifts the level an identity can reach to
    aal2 (Kratos' ``ActiveCredentialsCounter``); then ``second_factor_ready`` says if it is."""

    @staticmethod
    def second_factor_ready(identity: Identity) -> bool:
        """Whether ``identity`` has this method set up as a usable second factor. Asked of every
        method, enabled or not, as Kratos counts every strategy (``sidecar.session.aal``)."""
        return False


class LoginStrategy(Strategy, Protocol):
    first_factor: bool = True
    """Signs in on its own: offered by aal1 flows."""

    organizations: bool = False
    """Signs in members of an organization (single sign-on): the only methods a flow started for
    one (``?organization=<id>``) offers."""

    second_factor: bool = False
    """Completes an ``aal=aal2`` flow and lifts the session to aal2. A method that also
    ``counts_toward_aal`` is offered only to identities that have it set up."""

    def login_nodes(self, flow: Flow) -> list[Node]: ...

    async def prepare_login(self, flow: Flow, identity: Identity) -> None:
        """An aal2 flow for ``identity`` was built: add nodes that depend on it (WebAuthn's allowed
        keys, the code addresses). Most methods need nothing."""
        return None

    async def login(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity | NotResponsible:
        """The authenticated identity, or NOT_RESPONSIBLE; raises FlowInvalid when rejected."""
        ...

    async def after_login(self, flow: Flow, identity: Identity, method: str) -> None:
        """Runs after any method (``method``) accepted the credentials of ``identity`` in ``flow``,
        before the session is issued; may raise FlowInvalid (social sign-in links the provider
        account that found an existing one here). Most methods need nothing."""
        return None

    def identification_nodes(self, flow: Flow) -> list[Node]:
        """``login.style: identifier_first``, first screen: this method's nodes beside the
        identifier (Kratos' ``PopulateLoginMethodIdentifierFirstIdentification``): social sign-in
        buttons, the passkey button. Most methods show nothing there."""
        return []

    def login_credential_nodes(self, flow: Flow, identity: Identity | None) -> list[Node] | None:
        """``identifier_first``, second screen (``PopulateLoginMethodIdentifierFirstCredentials``):
        this method's nodes for ``identity``, or, when ``identity`` is None (an unknown identifier,
        or account enumeration mitigated), the nodes any account would get. None: ``identity``
        cannot sign in with this method. The default: not offered on that screen."""
        return None


class SsoRouter(Protocol):
    """Login routing by email domain (docs/SSO.md): an identifier whose domain belongs to an
    organization with single sign-on leaves for that organization's identity provider.

    The decision rests on the domain alone, never on whether an account exists, so the answer is
    the same for every address of the domain and reveals nothing.
    """

    async def route(self, flow: Flow, identifier: str) -> None:
        """Return when the identifier stays here; raise ``BrowserLocationChangeRequired`` (with
        ``redirect_browser_to``) when it goes to single sign-on."""
        ...


class RegistrationStrategy(Strategy, Protocol):
    def registration_nodes(self, flow: Flow) -> list[Node]: ...

    async def register(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> Identity | NotResponsible:
        """The created (persisted) identity, or NOT_RESPONSIBLE; raises FlowInvalid when rejected."""
        ...

    def profile_nodes(self, flow: Flow, traits: Mapping[str, Any] | None = None) -> list[Node]:
        """Two-step registration (``registration.style: profile_first``), profile screen: Kratos'
        ``PopulateRegistrationMethodProfile``. Only the traits (filled from ``traits`` when going
        back) and social sign-up live there."""
        return []

    def registration_credential_nodes(self, flow: Flow, traits: Mapping[str, Any]) -> list[Node]:
        """Two-step registration, credential-selection screen for the accepted ``traits``
        (``PopulateRegistrationMethodCredentials``): by default this method's one-step nodes."""
        return self.registration_nodes(flow)

    async def profile_step(self, flow: Flow, body: Mapping[str, Any]) -> ProfileStep | NotResponsible:
        """Two-step registration: a submission that moves between the screens (``method=profile``,
        ``screen=credential-selection|previous``) instead of registering. Only ``profile`` answers."""
        return NOT_RESPONSIBLE


@dataclass(frozen=True, slots=True)
class ProfileStep:
    """A move between the two registration screens, with the traits to carry along."""

    traits: Mapping[str, Any]
    back: bool = False
    """True: back to the profile screen (``screen=previous``); else on to credential selection."""


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
    @property
    def lifespan(self) -> timedelta:
        """How long a secret it sends stays good (``selfservice.methods.<id>.config.lifespan``)."""
        ...

    def recovery_nodes(self, flow: Flow) -> list[Node]: ...

    async def recover(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> ChallengeResult | NotResponsible:
        """Send (state ``sent_email``) or check a secret; raises FlowInvalid or SecretExpired."""
        ...

    async def issue_for_admin(self, flow: Flow, grant: Grant, now: datetime) -> str:
        """A secret for ``grant`` that nobody is mailed (Kratos' admin recovery): stored like a sent
        one, ``flow`` turned into its "sent" step; returns the secret for the admin to hand over."""
        ...


class VerificationStrategy(Strategy, Protocol):
    channels: ClassVar[frozenset[str]] = frozenset({"email"})
    """The ``via`` values of the addresses it can send to (Kratos: links by email only, codes by
    email and SMS)."""

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
    before_save: BeforeSave | None = None
    """Kratos' settings pre-persist hooks (``web_hook`` with ``response.parse`` / ``can_interrupt``,
    ``selfservice/flow/settings/hook.go`` ``PostSettingsHook``): a strategy calls ``save_hooks``
    with the identity it is about to write, before writing anything."""

    async def save_hooks(self, proposed: Identity, *, keeps_traits: bool = False) -> Identity:
        """Run the pre-persist hooks on ``proposed``: they may refuse it (``FlowInvalid`` with
        messages on its fields) or change its traits and metadata. ``keeps_traits``: the caller
        writes the returned identity's traits and metadata itself (profile); otherwise the hooks'
        changes are saved here, before the caller writes its credential."""
        if self.before_save is None:
            return proposed
        return await self.before_save(proposed, keeps_traits)


BeforeSave = Callable[[Identity, bool], Awaitable[Identity]]


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

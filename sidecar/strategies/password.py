"""The ``password`` strategy: identifier + password login, traits + password registration.

Brute force (``sidecar.security.throttle``): an attempt is admitted before any password is hashed
or checked, so a delayed attempt answers the same (429) for right and wrong passwords; a wrong
password counts as a failure, a right one clears the identifier's failures. Wrong credentials
give one message (4000006) whether or not the identifier exists; ``authenticate_password``
equalises the time. Registration counts only refusals (a taken identifier, invalid traits) as
failures, so an end-to-end suite signing up many users is never slowed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from sidecar import errors
from sidecar.config.model import Config
from sidecar.flows import messages, nodes
from sidecar.flows.messages import Text
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client, FlowInvalid
from sidecar.flows.strategy import (
    NOT_RESPONSIBLE,
    LoginStrategy,
    NotResponsible,
    RegistrationStrategy,
    SettingsContext,
    SettingsStrategy,
    SettingsUpdate,
)
from sidecar.identity.manager import IdentitySpec
from sidecar.identity.model import Credential, Identity
from sidecar.schema.registry import SchemaRegistry
from sidecar.security.breaches import BreachCheck
from sidecar.security.passwords import check_password
from sidecar.security.throttle import Throttle
from sidecar.strategies.deps import Roles, StrategyDeps
from sidecar.strategies.settings_rules import rate_limited, require_privileged
from sidecar.strategies.traits import flatten, traits_refused, validation_messages


class PasswordIdentities(Protocol):
    """The part of ``IdentityManager`` this strategy uses."""

    async def create(self, spec: IdentitySpec) -> Identity: ...

    async def authenticate_password(self, identifier: str, password: str) -> Identity | None: ...

    async def get(self, identity_id: uuid.UUID) -> Identity: ...

    async def update(self, identity_id: uuid.UUID, spec: IdentitySpec) -> Identity: ...

    async def set_password(self, identity_id: uuid.UUID, password: str) -> Identity: ...

    async def save_credential(self, identity_id: uuid.UUID, credential: Credential) -> Identity: ...

    async def remove_credential(self, identity_id: uuid.UUID, credential_type: str) -> Identity: ...


class PasswordStrategy(LoginStrategy, RegistrationStrategy, SettingsStrategy):
    id = "password"

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None:
        if not deps.config.selfservice.methods.password.enabled:
            return None
        strategy = cls(deps.config, deps.identities, deps.schemas, deps.throttle, breaches=deps.breaches)
        return Roles(login=strategy, registration=strategy, settings=strategy)

    def __init__(
        self,
        config: Config,
        identities: PasswordIdentities,
        schemas: SchemaRegistry,
        throttle: Throttle,
        *,
        breaches: BreachCheck | None = None,
    ) -> None:
        self._policy = config.selfservice.methods.password.config
        self._breaches = breaches
        self._identities = identities
        self._schemas = schemas
        self._throttle = throttle

    # --- login ----------------------------------------------------------------------------------

    def _identifier_label(self, flow: Flow) -> Text:
        """The identifier trait's schema title when there is exactly one (as Kratos), else "ID"."""
        schema = self._schemas.get_or_default(flow.identity_schema)
        titles = {f.title for f in schema.trait_fields() if "password" in f.identifier_for}
        title = titles.pop() if len(titles) == 1 else None
        return messages.label_trait(title) if title else messages.label_identifier()

    def login_nodes(self, flow: Flow) -> list[Node]:
        return [
            nodes.input_node(
                "identifier", "default", "text", required=True, label=self._identifier_label(flow)
            ),
            nodes.input_node(
                "password",
                "password",
                "password",
                required=True,
                autocomplete="current-password",
                label=messages.label_password(),
            ),
            nodes.submit_node("password", "password", messages.login_with_password()),
        ]

    def login_credential_nodes(self, flow: Flow, identity: Identity | None) -> list[Node] | None:
        # Kratos password/login.go: offered when the identity has a password (or for any account).
        if identity is not None:
            credential = identity.credentials.get(self.id)
            if credential is None or not credential.config.get("hashed_password"):
                return None
        return self.login_nodes(flow)[1:]

    async def login(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity | NotResponsible:
        if body.get("method") != self.id:
            return NOT_RESPONSIBLE
        identifier = body.get("identifier") or body.get("password_identifier")
        password = body.get("password")
        missing: dict[str, list[Text]] = {}
        if not isinstance(identifier, str) or not identifier.strip():
            missing["identifier"] = [messages.required("identifier")]
        if not isinstance(password, str) or not password:
            missing["password"] = [messages.required("password")]
        kept = {"identifier": identifier if isinstance(identifier, str) else None}
        if missing or not isinstance(identifier, str) or not isinstance(password, str):
            raise FlowInvalid(node_messages=missing, values=kept)
        verdict = await self._throttle.admit("login", identifier=identifier, ip=client.ip)
        if not verdict.allowed:
            raise rate_limited(verdict.retry_after)
        identity = None
        if len(password) <= self._policy.max_password_length:
            try:
                identity = await self._identities.authenticate_password(identifier, password)
            except errors.ServiceUnavailable:
                await self._throttle.abandoned("login", identifier=identifier, ip=client.ip)
                raise
        if identity is None:
            await self._throttle.failed("login", identifier=identifier, ip=client.ip)
            raise FlowInvalid([messages.invalid_credentials()], values=kept)
        await self._throttle.succeeded("login", identifier=identifier, ip=client.ip)
        if identity.state != "active":
            raise FlowInvalid([messages.account_disabled()], values=kept)
        return identity

    # --- registration ---------------------------------------------------------------------------

    def registration_nodes(self, flow: Flow) -> list[Node]:
        return _new_password_nodes(messages.sign_up())

    async def register(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> Identity | NotResponsible:
        if body.get("method") != self.id:
            return NOT_RESPONSIBLE
        traits = body.get("traits")
        password = body.get("password")
        schema = self._schemas.get_or_default(flow.identity_schema)
        kept = flatten(traits)
        problems = validation_messages(schema, traits)
        identifiers: list[str] = []
        if not problems and isinstance(traits, Mapping):
            identifiers = schema.identifiers(traits, "password")
        identifier = identifiers[0] if identifiers else None
        verdict = await self._throttle.admit("registration", identifier=identifier, ip=client.ip)
        if not verdict.allowed:
            raise rate_limited(verdict.retry_after)
        if not isinstance(password, str) or not password:
            problems.setdefault("password", []).append(messages.required("password"))
        else:
            for text in await self._policy_violations(password, identifiers):
                problems.setdefault("password", []).append(text)
        if problems or not isinstance(traits, Mapping) or not isinstance(password, str):
            await self._throttle.failed("registration", identifier=identifier, ip=client.ip)
            raise FlowInvalid(
                node_messages=problems or {"traits": [messages.required("traits")]}, values=kept
            )
        spec = IdentitySpec(traits=dict(traits), schema_id=schema.id, password_plain=password)
        try:
            identity = await self._identities.create(spec)
        except (errors.Conflict, errors.ValidationError) as exc:
            # A taken identifier is what an enumeration run probes for: it counts.
            await self._throttle.failed("registration", identifier=identifier, ip=client.ip)
            raise traits_refused(exc, kept) from None
        await self._throttle.succeeded("registration", identifier=identifier, ip=client.ip)
        return identity

    async def _policy_violations(self, password: str, identifiers: list[str]) -> list[Text]:
        found = check_password(password, identifiers, self._policy)
        if not found and self._breaches is not None:
            # Kratos asks the range API only once the offline rules pass (validator.go).
            breached = await self._breaches.violation(password)
            found = [breached] if breached is not None else []
        return [messages.text(v.id, v.text, "error", **v.context) for v in found]

    # --- settings -------------------------------------------------------------------------------

    def settings_nodes(self, flow: Flow, identity: Identity) -> list[Node]:
        return _new_password_nodes(messages.label_save())

    async def update_settings(
        self, flow: Flow, body: Mapping[str, Any], ctx: SettingsContext
    ) -> SettingsUpdate | NotResponsible:
        if body.get("method") != self.id:
            return NOT_RESPONSIBLE
        password = body.get("password")
        if not isinstance(password, str) or not password:
            raise FlowInvalid(node_messages={"password": [messages.required("password")]})
        require_privileged(ctx)
        identity = ctx.identity
        schema = self._schemas.get(identity.schema_id)
        identifiers = schema.identifiers(identity.traits, "password")
        problems = await self._policy_violations(password, identifiers)
        if problems:
            raise FlowInvalid(node_messages={"password": problems})
        await ctx.save_hooks(identity)
        try:
            updated = await self._identities.set_password(identity.id, password)
        except errors.ValidationError as exc:
            raise FlowInvalid(
                node_messages={"password": [messages.generic(exc.reason or exc.message)]}
            ) from None
        return SettingsUpdate(updated)


def _new_password_nodes(submit: Text) -> list[Node]:
    return [
        nodes.input_node(
            "password",
            "password",
            "password",
            required=True,
            autocomplete="new-password",
            label=messages.label_password(),
        ),
        nodes.submit_node("password", "password", submit),
    ]

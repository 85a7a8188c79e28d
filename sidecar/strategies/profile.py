"""The ``profile`` strategy: the traits part of registration.

In the one-step ("unified" with ``enable_legacy_one_step``) layout, Kratos puts the traits nodes in
the ``password`` group and submits them with ``method=password``; otherwise they sit in ``default``.
Two-step registration (``style: profile_first``, Kratos ``selfservice/strategy/profile/
registration.go``): the profile screen has the traits and a ``method=profile`` "Sign up" button;
that submission validates the traits and moves to credential selection, where the traits are
hidden inputs and ``screen=previous`` goes back. This strategy never creates the identity: the
credential method (password, code, passkey, social sign-in) does, with the carried traits.

In the settings flow it updates the traits (``method=profile``, ``traits`` only: any other field
such as ``metadata_admin`` or ``verifiable_addresses`` is ignored). A change to a protected trait
(a credential identifier or a verification/recovery address) needs a privileged session, and a
changed address is a new, unverified address (Kratos).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from sidecar import errors
from sidecar.config.model import Config
from sidecar.flows import messages, nodes
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client, FlowInvalid
from sidecar.flows.strategy import (
    NOT_RESPONSIBLE,
    NotResponsible,
    ProfileStep,
    RegistrationStrategy,
    SettingsContext,
    SettingsStrategy,
    SettingsUpdate,
)
from sidecar.identity.manager import IdentitySpec
from sidecar.identity.model import Identity
from sidecar.schema.extension import values_at
from sidecar.schema.model import IdentitySchema
from sidecar.schema.registry import SchemaRegistry
from sidecar.strategies.deps import Roles, StrategyDeps
from sidecar.strategies.settings_rules import require_privileged
from sidecar.strategies.traits import flatten, trait_nodes, traits_refused, validation_messages


class ProfileIdentities(Protocol):
    async def update(self, identity_id: uuid.UUID, spec: IdentitySpec) -> Identity: ...


def protected_changed(schema: IdentitySchema, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Did a trait used as a credential identifier or as an address change?"""
    for f in schema.trait_fields():
        protected = f.identifier_for or f.extension.get("verification") or f.extension.get("recovery")
        if protected and values_at(old, f) != values_at(new, f):
            return True
    return False


class ProfileStrategy(RegistrationStrategy, SettingsStrategy):
    id = "profile"

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None:
        if not deps.config.selfservice.methods.profile.enabled:
            return None
        strategy = cls(deps.config, deps.schemas, deps.identities)
        return Roles(registration=strategy, settings=strategy)

    def __init__(
        self, config: Config, schemas: SchemaRegistry, identities: ProfileIdentities | None = None
    ) -> None:
        self._flow_config = config.selfservice.flows.registration
        self._password_enabled = config.selfservice.methods.password.enabled
        self._schemas = schemas
        self._identities = identities

    def registration_nodes(self, flow: Flow) -> list[Node]:
        schema = self._schemas.get_or_default(flow.identity_schema)
        one_step = (
            self._flow_config.style == "unified" and self._flow_config.enable_legacy_one_step is not False
        )
        return trait_nodes(schema, "password" if one_step and self._password_enabled else "default")

    async def register(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> Identity | NotResponsible:
        return NOT_RESPONSIBLE

    # --- two-step registration ------------------------------------------------------------------

    def _schema(self, flow: Flow) -> IdentitySchema:
        return self._schemas.get_or_default(flow.identity_schema)

    def profile_nodes(self, flow: Flow, traits: Mapping[str, Any] | None = None) -> list[Node]:
        out = trait_nodes(self._schema(flow), "default")
        for name, value in flatten(traits or {}).items():
            nodes.set_value(out, name, value)
        return [*out, nodes.submit_node("profile", "profile", messages.sign_up())]

    def registration_credential_nodes(self, flow: Flow, traits: Mapping[str, Any]) -> list[Node]:
        out = trait_nodes(self._schema(flow), "default")
        for node in out:
            node["attributes"]["type"] = "hidden"  # Kratos keeps them, hidden, for the credential submit
        for name, value in flatten(traits).items():
            nodes.set_value(out, name, value)
        back = nodes.input_node(
            "screen", "profile", "submit", value="previous", label=messages.registration_back()
        )
        return [*out, back]

    async def profile_step(self, flow: Flow, body: Mapping[str, Any]) -> ProfileStep | NotResponsible:
        if not self._flow_config.two_step:
            return NOT_RESPONSIBLE
        method, screen = body.get("method"), body.get("screen")
        if method not in ("profile", "profile:back") and not screen:
            return NOT_RESPONSIBLE
        if screen not in (None, "", "credential-selection", "previous"):
            # The strategy's body schema (profile/.schema/registration.schema.json) enumerates these.
            raise FlowInvalid(
                node_messages={"screen": [messages.generic("must be credential-selection or previous")]}
            )
        raw = body.get("traits")
        traits: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        if screen == "previous" or method == "profile:back":
            return ProfileStep(dict(traits), back=True)
        problems = validation_messages(self._schema(flow), traits)
        if problems:
            raise FlowInvalid(node_messages=problems, values=flatten(traits))
        return ProfileStep(dict(traits))

    # --- settings -------------------------------------------------------------------------------

    def settings_nodes(self, flow: Flow, identity: Identity) -> list[Node]:
        out = trait_nodes(self._schemas.get(identity.schema_id), "profile")
        for name, value in flatten(identity.traits).items():
            nodes.set_value(out, name, value)
        return [*out, nodes.submit_node("profile", "profile", messages.label_save())]

    async def update_settings(
        self, flow: Flow, body: Mapping[str, Any], ctx: SettingsContext
    ) -> SettingsUpdate | NotResponsible:
        if body.get("method") != self.id or self._identities is None:
            return NOT_RESPONSIBLE
        identity = ctx.identity
        schema = self._schemas.get(identity.schema_id)
        traits = body.get("traits")
        kept = flatten(traits)
        problems = validation_messages(schema, traits)
        if problems or not isinstance(traits, Mapping):
            raise FlowInvalid(
                node_messages=problems or {"traits": [messages.required("traits")]}, values=kept
            )
        if protected_changed(schema, identity.traits, traits):
            require_privileged(ctx)
        try:
            proposed = await ctx.save_hooks(replace(identity, traits=dict(traits)), keeps_traits=True)
        except FlowInvalid as exc:
            # Kratos' HandleHookError draws the refused traits back into the form.
            exc.values = {**kept, **exc.values}
            raise
        spec = IdentitySpec(
            traits=dict(proposed.traits),
            schema_id=identity.schema_id,
            state=identity.state,
            metadata_public=proposed.metadata_public,
            metadata_admin=proposed.metadata_admin,
            external_id=identity.external_id,
            organization_id=identity.organization_id,
        )
        try:
            updated = await self._identities.update(identity.id, spec)
        except (errors.Conflict, errors.ValidationError) as exc:
            raise traits_refused(exc, kept) from None
        return SettingsUpdate(updated)

"""Accounts from a federated sign-in (``oidc``, ``saml``): find the linked identity, create one
just in time, and link a provider account to an existing one, with the same account takeover
rules for every protocol.

The rules (Kratos ``strategy/oidc``): a ``provider:subject`` identifier signs in the identity that
holds it. An unknown one creates an identity, unless one of its traits' identifiers or addresses
already belongs to an account: then the provider account is linked only after the user signs in
to that account (``remember_link`` + ``after_login``); an email address alone never signs anyone
in.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sidecar import errors
from sidecar.flows import messages, nodes
from sidecar.flows.model import Flow
from sidecar.flows.outcome import FlowInvalid
from sidecar.identity.manager import IdentitySpec
from sidecar.identity.model import Identity
from sidecar.schema.model import IdentitySchema
from sidecar.schema.registry import SchemaRegistry
from sidecar.strategies.federation import accounts
from sidecar.strategies.federation.accounts import FederatedIdentities, Verified
from sidecar.strategies.traits import flatten, trait_nodes, validation_messages

LINK = "federated_link"
"""``flow.internal``: a provider account to link once the user signs in to the existing account
(with ``method``: the strategy that links it)."""


@dataclass(frozen=True, slots=True)
class Connection:
    """What the account rules need to know of one provider or SAML connection."""

    id: str
    label: str
    organization_id: str | None = None
    """Accounts it creates belong to this organization (just-in-time membership)."""
    trust_email_verified: bool = False


def merge_traits(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Traits typed by the user override the mapper's; empty form fields do not."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_traits(out[key], value)
        elif value not in ("", None):
            out[key] = value
    return out


def linking(flow: Flow) -> bool:
    """Whether ``flow`` is a login that links a provider account to the account signing in."""
    return LINK in flow.internal


class FederatedAccounts:
    """The account rules of one federated strategy, whose credential type is ``kind``."""

    def __init__(
        self,
        kind: str,
        identities: FederatedIdentities,
        schemas: SchemaRegistry,
        connection: Callable[[str], Connection | None],
    ) -> None:
        self.kind = kind
        self._identities = identities
        self._schemas = schemas
        self._connection = connection
        self.pending_key = f"{kind}_pending"
        """``flow.internal``: a verified sign-up waiting for the user to complete missing traits."""

    def _schema(self, flow: Flow) -> IdentitySchema:
        return self._schemas.get_or_default(flow.identity_schema)

    def _label(self, provider: str) -> str:
        found = self._connection(provider)
        return found.label if found is not None else "provider"

    async def find_identity(self, verified: Verified) -> Identity | None:
        return await self._identities.find_by_credential(self.kind, verified.identifier)

    async def find_duplicate(self, flow: Flow, verified: Verified) -> tuple[Identity, str] | None:
        mapped = verified.require_mapped()
        traits = merge_traits(mapped.traits, verified.form_traits)
        return await accounts.find_existing_owner(self._identities, self._schema(flow), traits)

    def remember_link(self, flow: Flow, owner: Identity, verified: Verified) -> None:
        flow.internal[LINK] = {"identity_id": str(owner.id), "method": self.kind, **verified.to_record()}

    async def signed_in(self, verified: Verified) -> Identity:
        """The identity ``verified`` signs in; FlowInvalid when none is linked or it is disabled."""
        identity = await self.find_identity(verified)
        if identity is None:
            label = self._label(verified.provider)
            raise FlowInvalid([messages.generic(f"No account is linked to this {label} account.")])
        return active(identity)

    async def link_pending(self, flow: Flow, identity: Identity) -> None:
        """After signing in to the existing account, link the provider account that found it."""
        pending = flow.internal.get(LINK)
        if not isinstance(pending, Mapping) or pending.get("method", "oidc") != self.kind:
            return
        if pending.get("identity_id") != str(identity.id):
            raise FlowInvalid([messages.oidc_link_mismatch()])
        verified = Verified.from_record(pending)
        try:
            await self._identities.save_credential(
                identity.id, accounts.credential_with(identity, verified, self.kind)
            )
        except errors.Conflict:
            raise FlowInvalid([messages.oidc_linked_elsewhere(self._label(verified.provider))]) from None
        flow.internal.pop(LINK, None)

    async def link_to(self, identity: Identity, verified: Verified) -> Identity:
        """Settings: link ``verified`` to the signed-in ``identity`` (privilege checked by the caller)."""
        owner = await self.find_identity(verified)
        label = self._label(verified.provider)
        if owner is not None and owner.id != identity.id:
            raise FlowInvalid([messages.oidc_linked_elsewhere(label)])
        try:
            return await self._identities.save_credential(
                identity.id, accounts.credential_with(identity, verified, self.kind)
            )
        except errors.Conflict:
            raise FlowInvalid([messages.oidc_linked_elsewhere(label)]) from None

    def pending(self, flow: Flow, provider: str) -> Verified | None:
        record = flow.internal.get(self.pending_key)
        if isinstance(record, Mapping) and record.get("provider") == provider:
            return Verified.from_record(record)
        return None

    async def create(self, flow: Flow, verified: Verified, form_traits: Mapping[str, Any]) -> Identity:
        """Just in time: the identity for a first sign-in, traits from the mapper (and the form)."""
        mapped = verified.require_mapped()
        connection = self._connection(verified.provider)
        if connection is None:
            raise errors.BadRequest("The sign-in provider of this request is no longer configured.")
        schema = self._schema(flow)
        traits = merge_traits(merge_traits(mapped.traits, verified.form_traits), form_traits)
        problems = validation_messages(schema, traits)
        if problems:
            # Kratos: the registration form comes back, pre-filled, for the user to complete.
            flow.internal[self.pending_key] = verified.to_record()
            flow.ui.nodes = [nodes.csrf_node()] if flow.type == "browser" else []
            flow.ui.nodes += trait_nodes(schema, self.kind)
            flow.ui.nodes.append(
                nodes.input_node(
                    "provider",
                    self.kind,
                    "submit",
                    value=connection.id,
                    label=messages.oidc_sign_up_with(connection.label, connection.id),
                )
            )
            raise FlowInvalid(node_messages=problems, values=flatten(traits))
        if await accounts.find_existing_owner(self._identities, schema, traits) is not None:
            raise FlowInvalid([messages.oidc_duplicate_sign_in_to_link()], values=flatten(traits))
        organization = connection.organization_id
        spec = IdentitySpec(
            traits=traits,
            schema_id=schema.id,
            # Just-in-time: an account made by an organization's sign-on belongs to it.
            organization_id=uuid.UUID(organization) if organization else None,
            metadata_public=mapped.metadata_public,
            metadata_admin=mapped.metadata_admin,
            credentials={
                self.kind: {
                    "config": {"providers": [{"provider": connection.id, "subject": verified.subject}]}
                }
            },
            verifiable_addresses=accounts.verified_addresses(
                schema, traits, verified, trust_email_verified=connection.trust_email_verified
            ),
        )
        try:
            identity = await self._identities.create(spec)
        except errors.Conflict:
            raise FlowInvalid([messages.oidc_duplicate_sign_in_to_link()], values=flatten(traits)) from None
        except errors.ValidationError as exc:
            raise FlowInvalid([messages.generic(exc.reason or exc.message)], values=flatten(traits)) from None
        flow.internal.pop(self.pending_key, None)
        if verified.tokens:
            try:
                identity = await self._identities.save_credential(
                    identity.id, accounts.credential_with(identity, verified, self.kind)
                )
            except Exception:
                await self._identities.delete(identity.id)  # all or nothing (flows/registration.py)
                raise
        return identity


def active(identity: Identity) -> Identity:
    if identity.state != "active":
        raise FlowInvalid([messages.generic("Your account is disabled.")])
    return identity

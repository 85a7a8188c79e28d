"""The ``saml`` strategy: enterprise single sign-on with SAML 2.0 for login and registration
(Ory's ``saml`` method: node group ``saml``, submit ``provider``).

A browser submission with ``provider`` leaves for the identity provider: 303 (or 422
``browser_location_change_required`` for SPAs) to its single sign-on endpoint (HTTP-Redirect) or
to our page that posts the request there (HTTP-POST). The response comes back to the ACS
(``acs.py``), which hands a ``Verified`` to the flow under ``CALLBACK``. The credential
identifier is ``<connection id>:<NameID>``; accounts are created and linked by the rules every
federated method shares (``federation.jit``). SAML is a browser protocol: an API flow is sent to
a browser login.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, NoReturn

from sidecar import errors
from sidecar.config.model import Config
from sidecar.flows import messages, via
from sidecar.flows.model import Flow
from sidecar.flows.outcome import Client, FlowInvalid
from sidecar.flows.strategy import NOT_RESPONSIBLE, NotResponsible
from sidecar.identity.model import Identity, utcnow
from sidecar.kv.store import KeyValueStore
from sidecar.schema.registry import SchemaRegistry
from sidecar.security.jsonnet import JsonnetSandbox
from sidecar.session.model import ProviderSignIn
from sidecar.strategies.deps import Roles, StrategyDeps
from sidecar.strategies.federation.accounts import CALLBACK, FederatedIdentities, Verified
from sidecar.strategies.federation.jit import FederatedAccounts, active
from sidecar.strategies.federation.mapper import MapperError, run_mapper
from sidecar.strategies.federation.strategy import FederatedStrategy, form_traits
from sidecar.strategies.saml.binding import PATH
from sidecar.strategies.saml.connections import SamlConnection, SamlConnections
from sidecar.strategies.saml.protocol import SamlRefused, authn_request
from sidecar.strategies.saml.state import RelayRecord, SamlStateStore


class SamlStrategy(FederatedStrategy):
    id = "saml"

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None:
        if not deps.config.selfservice.methods.saml.enabled:
            return None
        strategy = cls(deps.config, deps.identities, deps.schemas, deps.kv, deps.jsonnet)
        return Roles(login=strategy, registration=strategy)

    def __init__(
        self,
        config: Config,
        identities: FederatedIdentities,
        schemas: SchemaRegistry,
        kv: KeyValueStore,
        jsonnet: JsonnetSandbox,
        connections: SamlConnections | None = None,
    ) -> None:
        self._jsonnet = jsonnet
        self.connections = connections or SamlConnections(config)
        self.states = SamlStateStore(kv)
        self.facts = {c.id: c.facts() for c in self.connections.by_id.values()}
        self.accounts = FederatedAccounts("saml", identities, schemas, self.facts.get)
        self._base = config.public_base_url.rstrip("/")

    async def map_claims(self, verified: Verified) -> Verified:
        """Run the connection's Jsonnet mapper once over the assertion's claims."""
        if verified.mapped is not None:
            return verified
        connection = self.connections.find(verified.provider)
        if connection is None:
            raise errors.BadRequest("The sign-in provider of this request is no longer configured.")
        try:
            mapped = await run_mapper(
                self._jsonnet, connection.mapper, verified.claims, timeout=self.connections.mapper_timeout
            )
        except MapperError as exc:
            text = "The identity provider's attributes could not be mapped to an account."
            raise errors.BadRequest(text, reason=text, details={"hint": str(exc)[:500]}) from None
        return Verified(
            verified.provider, verified.subject, verified.claims, {}, verified.form_traits, mapped
        )

    # --- leaving for the identity provider --------------------------------------------------------

    async def start(self, flow: Flow, connection: SamlConnection) -> NoReturn:
        """Send an AuthnRequest; the flow remembers nothing, the RelayState record does."""
        if flow.type != "browser":
            org = connection.provider.organization_id
            url = f"{self._base}/self-service/{flow.kind}/browser" + (f"?organization={org}" if org else "")
            raise errors.BrowserLocationChangeRequired(extra={"redirect_browser_to": url})
        config = await self.connections.sp_config(connection)
        relay = self.states.new_value()
        try:
            outbound = await asyncio.to_thread(authn_request, config, connection.provider.binding, relay)
        except SamlRefused as exc:
            raise FlowInvalid([messages.generic(f"{connection.label}: {exc}")]) from None
        ttl = max(flow.expires_at - utcnow(), timedelta(minutes=1))
        await self.states.put(
            relay, RelayRecord(flow.kind, str(flow.id), connection.id, outbound.request_id), ttl
        )
        url = outbound.url
        if outbound.form is not None:
            await self.states.put_form(relay, outbound.url, outbound.form, ttl)
            url = f"{self._base}{PATH}/auth/{connection.id}?RelayState={relay}"
        raise errors.BrowserLocationChangeRequired(extra={"redirect_browser_to": url})

    # --- login ------------------------------------------------------------------------------------

    async def login(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity | NotResponsible:
        if not self.responsible(body, "provider"):
            return NOT_RESPONSIBLE
        connection = self.connections.get(body.get("provider"))
        flow.active = self.id
        verified = body.get(CALLBACK)
        if not isinstance(verified, Verified):
            await self.start(flow, connection)
        identity = await self.accounts.find_identity(verified)
        via.remember(flow, signed_in_via(verified))
        return await self.accounts.signed_in(verified) if identity is None else active(identity)

    # --- registration -----------------------------------------------------------------------------

    async def register(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> Identity | NotResponsible:
        if not self.responsible(body, "provider"):
            return NOT_RESPONSIBLE
        connection = self.connections.get(body.get("provider"))
        flow.active = self.id
        verified = body.get(CALLBACK)
        if not isinstance(verified, Verified):
            pending = self.accounts.pending(flow, connection.id)
            if pending is None:
                await self.start(flow, connection)
            verified = pending
        via.remember(flow, signed_in_via(verified))
        return await self.accounts.create(flow, await self.map_claims(verified), form_traits(body))

    def sso_starts(self) -> dict[str, Callable[[Flow, str], Awaitable[None]]]:
        """Per organization id, the sign-in with its (first) SAML connection."""
        starts: dict[str, Callable[[Flow, str], Awaitable[None]]] = {}
        for connection in self.connections.by_id.values():
            org = (connection.provider.organization_id or "").lower()
            if org and org not in starts:
                starts[org] = self._starter(connection)
        return starts

    def _starter(self, connection: SamlConnection) -> Callable[[Flow, str], Awaitable[None]]:
        async def start(flow: Flow, identifier: str) -> None:
            await self.start(flow, connection)

        return start


def claims_of(
    issuer: str,
    name_id: str,
    name_id_format: str | None,
    attributes: Mapping[str, list[str]],
    session_index: str | None = None,
) -> dict[str, Any]:
    """What a mapper sees as ``std.extVar('claims')``."""
    return {
        "sub": name_id,
        "name_id_format": name_id_format,
        "issuer": issuer,
        "attributes": dict(attributes),
        "session_index": session_index,
    }


def signed_in_via(verified: Verified) -> ProviderSignIn:
    """The connection, NameID (and its format) and SessionIndex the session will keep, so its
    single logout names the right connection and identity provider session."""
    fmt, index = verified.claims.get("name_id_format"), verified.claims.get("session_index")
    return ProviderSignIn(
        provider=verified.provider,
        subject=verified.subject,
        subject_format=fmt if isinstance(fmt, str) else None,
        session_index=index if isinstance(index, str) else None,
    )

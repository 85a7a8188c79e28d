"""Login routing by email domain to an organization's single sign-on (docs/SSO.md), whatever
protocol it speaks: an OpenID Connect provider or a SAML connection with ``organization_id``.

When a login names an identifier in one of the organization's domains, the browser leaves for the
identity provider at once, before any password is looked at; an API flow gets 422
``browser_location_change_required`` pointing at a browser login for the organization. Only the
domain decides, so every address of the domain gets the same answer whether or not it has an
account.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from sidecar import errors
from sidecar.flows.model import Flow
from sidecar.organization.model import Organization
from sidecar.strategies.federation.jit import linking

StartSso = Callable[[Flow, str], Awaitable[None]]
"""Sends ``flow``'s browser to the identity provider (raises BrowserLocationChangeRequired); the
second argument is the identifier typed (a login hint)."""


class OrganizationsByDomain(Protocol):
    async def for_identifier(self, identifier: str) -> Organization | None: ...


class OrganizationRouter:
    def __init__(
        self, organizations: OrganizationsByDomain, base_url: str, starts: Mapping[str, StartSso]
    ) -> None:
        """``starts``: per organization id (lower case), how to start its single sign-on."""
        self._organizations = organizations
        self._base = base_url.rstrip("/")
        self._starts = dict(starts)

    async def route(self, flow: Flow, identifier: str) -> None:
        if not self._starts or linking(flow):
            # Linking a provider account to an existing one: the user proves that account here.
            return
        organization = await self._organizations.for_identifier(identifier)
        if organization is None:
            return
        start = self._starts.get(str(organization.id))
        if start is None:
            return  # an organization without single sign-on signs in as everyone else does
        flow.organization_id = organization.id
        if flow.type == "api":
            url = f"{self._base}/self-service/login/browser?organization={organization.id}"
            raise errors.BrowserLocationChangeRequired(extra={"redirect_browser_to": url})
        await start(flow, identifier)

"""Login routing by email domain to an organization's OpenID Connect provider (docs/SSO.md).

A provider with ``organization_id`` is that organization's single sign-on. When a login names an
identifier in one of the organization's domains, the browser leaves for the provider at once
(with ``login_hint``), before any password is looked at; an API flow gets 422
``browser_location_change_required`` pointing at a browser login for the organization. Only the
domain decides, so every address of the domain gets the same answer whether or not it has an
account.
"""

from __future__ import annotations

from typing import Protocol

from sidecar import errors
from sidecar.flows.model import Flow
from sidecar.organization.model import Organization
from sidecar.strategies.federation.jit import linking
from sidecar.strategies.oidc.signin import ProviderSignIn


class OrganizationsByDomain(Protocol):
    async def for_identifier(self, identifier: str) -> Organization | None: ...


class OidcOrganizationRouter:
    def __init__(self, signin: ProviderSignIn, organizations: OrganizationsByDomain, base_url: str) -> None:
        self._signin = signin
        self._organizations = organizations
        self._base = base_url.rstrip("/")
        self._by_org: dict[str, list[str]] = {}
        for provider in signin.providers.values():
            if provider.config.organization_id:
                self._by_org.setdefault(provider.config.organization_id.lower(), []).append(provider.id)

    async def route(self, flow: Flow, identifier: str) -> None:
        if not self._by_org or linking(flow):
            # Linking a provider account to an existing one: the user proves that account here.
            return
        organization = await self._organizations.for_identifier(identifier)
        if organization is None:
            return
        providers = self._by_org.get(str(organization.id))
        if not providers:
            return  # an organization without single sign-on signs in as everyone else does
        flow.organization_id = organization.id
        if flow.type == "api":
            url = f"{self._base}/self-service/login/browser?organization={organization.id}"
            raise errors.BrowserLocationChangeRequired(extra={"redirect_browser_to": url})
        provider = self._signin.providers[providers[0]]
        await self._signin.start(flow, provider, {"upstream_parameters": {"login_hint": identifier}})

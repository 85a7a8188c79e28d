"""``/admin/organizations/{id}/scim/token``: issue (or rotate) and withdraw an organization's
SCIM bearer token. The token is shown once, in the 201 answer; only its SHA-256 digest is kept."""

from __future__ import annotations

import secrets
import uuid

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.pagination import parse_uuid
from sidecar.api.respond import json_response
from sidecar.organization.manager import OrganizationManager
from sidecar.organization.model import Organization
from sidecar.organization.provisioning import ScimStore
from sidecar.security.tokens import digest

TOKEN_PREFIX = "scim_"


async def issue_token(store: ScimStore, organization_id: uuid.UUID) -> str:
    """A new SCIM bearer token for the organization (replacing its old one); only its digest is kept."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await store.set_token(organization_id, digest(token))
    return token


def scim_base_url(public_base_url: str, organization: Organization) -> str:
    return f"{public_base_url.rstrip('/')}/scim/v2/{organization.slug}"


class ScimTokenHandlers:
    def __init__(self, organizations: OrganizationManager, store: ScimStore, public_base_url: str) -> None:
        self._organizations = organizations
        self._store = store
        self._base = public_base_url.rstrip("/")

    async def issue(self, request: Request) -> Response:
        organization = await self._organizations.get(parse_uuid(request.path_params["id"]))
        token = await issue_token(self._store, organization.id)
        body = {"token": token, "base_url": scim_base_url(self._base, organization)}
        return json_response(body, 201, headers={"Cache-Control": "no-store"})

    async def withdraw(self, request: Request) -> Response:
        organization = await self._organizations.get(parse_uuid(request.path_params["id"]))
        if not await self._store.delete_token(organization.id):
            raise errors.NotFound("the organization has no SCIM token")
        return Response(status_code=204)


def scim_token_routes(handlers: ScimTokenHandlers) -> list[Route]:
    return [
        Route("/organizations/{id}/scim/token", handlers.issue, methods=["POST"]),
        Route("/organizations/{id}/scim/token", handlers.withdraw, methods=["DELETE"]),
    ]

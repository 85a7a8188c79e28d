"""Admin organization API: /admin/organizations (Ory Network's shape: ``id``, ``label``,
``domains``; plus ``slug``). Keyset pages with Kratos' ``Link`` header, like identities."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar.api.body import read_json
from sidecar.api.pagination import PageTokens, link_header, parse_page_size, parse_uuid
from sidecar.api.respond import json_response
from sidecar.organization.manager import OrganizationManager
from sidecar.organization.organization_json import organization_to_json

MAX_PAGE = 500


class OrganizationHandlers:
    def __init__(self, manager: OrganizationManager, tokens: PageTokens, max_body: int) -> None:
        self.manager = manager
        self.tokens = tokens
        self.max_body = max_body

    @staticmethod
    def _id(request: Request) -> uuid.UUID:
        return parse_uuid(request.path_params["id"])

    async def list(self, request: Request) -> Response:
        q = request.query_params
        page_size = parse_page_size(q.get("page_size"), default=250, maximum=MAX_PAGE)
        token = q.get("page_token")
        after = self.tokens.open(token) if token else None
        domain = q.get("domain") or None
        rows = await self.manager.list(page_size=page_size + 1, after=after, domain=domain)
        page, more = rows[:page_size], len(rows) > page_size
        next_token = self.tokens.seal(page[-1].id) if more and page else None
        params = {"domain": domain} if domain else {}
        headers = {"Link": link_header(request.url.path, params, page_size, next_token)}
        if next_token:
            headers["X-Next-Page-Token"] = next_token
        return json_response([organization_to_json(o) for o in page], headers=headers)

    async def create(self, request: Request) -> Response:
        organization = await self.manager.create(await read_json(request, self.max_body))
        location = f"{request.url.path.rstrip('/')}/{organization.id}"
        return json_response(organization_to_json(organization), 201, headers={"Location": location})

    async def get(self, request: Request) -> Response:
        return json_response(organization_to_json(await self.manager.get(self._id(request))))

    async def update(self, request: Request) -> Response:
        organization_id = self._id(request)
        body = await read_json(request, self.max_body)
        partial = request.method == "PATCH"
        updated = await self.manager.update(organization_id, body, partial=partial)
        return json_response(organization_to_json(updated))

    async def delete(self, request: Request) -> Response:
        await self.manager.delete(self._id(request))
        return Response(status_code=204)

    async def add_domain(self, request: Request) -> Response:
        organization_id = self._id(request)
        body = await read_json(request, self.max_body)
        domain = body.get("domain") if isinstance(body, dict) else None
        updated = await self.manager.add_domain(organization_id, domain)
        return json_response(organization_to_json(updated), 201)

    async def remove_domain(self, request: Request) -> Response:
        await self.manager.remove_domain(self._id(request), request.path_params["domain"])
        return Response(status_code=204)


def organization_routes(handlers: OrganizationHandlers) -> list[Route]:
    h = handlers
    return [
        Route("/organizations", h.list, methods=["GET"]),
        Route("/organizations", h.create, methods=["POST"]),
        Route("/organizations/{id}", h.get, methods=["GET"]),
        Route("/organizations/{id}", h.update, methods=["PUT", "PATCH"]),
        Route("/organizations/{id}", h.delete, methods=["DELETE"]),
        Route("/organizations/{id}/domains", h.add_domain, methods=["POST"]),
        Route("/organizations/{id}/domains/{domain}", h.remove_domain, methods=["DELETE"]),
    ]

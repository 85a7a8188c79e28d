"""Every route of the public Starlette app (mounted under ``serve.public.prefix``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from sidecar.api.public.schemas import schema_routes
from sidecar.schema.registry import SchemaRegistry


def public_routes(
    *,
    health: list[Route],
    schemas: SchemaRegistry,
    selfservice: list[Route],
    admin_base_url: str,
    prefix: str,
    redirect_admin_paths: bool = False,
) -> list[BaseRoute]:
    async def to_admin(request: Request) -> Response:
        # Kratos answers admin paths on the public port with a 307 to the admin listener.
        path = request.url.path
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(admin_base_url + path + query, status_code=307)

    routes: list[BaseRoute] = []
    routes += health
    routes += schema_routes(schemas)
    routes += selfservice
    if redirect_admin_paths:
        # Off by default: the Location would tell anyone on the internet where the admin API is.
        routes += [
            Route("/admin/{rest:path}", to_admin, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/identities", to_admin, methods=["GET", "POST", "PATCH"]),
            Route("/identities/{rest:path}", to_admin, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]
    return routes

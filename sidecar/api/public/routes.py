"""Every route of the public Starlette app (mounted under ``serve.public.prefix``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from sidecar.api.health import health_routes
from sidecar.api.public.schemas import schema_routes
from sidecar.api.public.selfservice import selfservice_routes

if TYPE_CHECKING:
    from sidecar.app import Services


def public_routes(services: Services) -> list[BaseRoute]:
    admin_base = services.config.admin_base_url

    async def to_admin(request: Request) -> Response:
        # Kratos answers admin paths on the public port with a 307 to the admin listener.
        path = request.url.path
        prefix = services.config.serve.public.prefix
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(admin_base + path + query, status_code=307)

    routes: list[BaseRoute] = []
    routes += health_routes(services.readiness_checks(), ready=services.is_ready)
    routes += schema_routes(services.schemas)
    routes += selfservice_routes(services)
    if services.config.serve.public.redirect_admin_paths:
        # Off by default: the Location would tell anyone on the internet where the admin API is.
        routes += [
            Route("/admin/{rest:path}", to_admin, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/identities", to_admin, methods=["GET", "POST", "PATCH"]),
            Route("/identities/{rest:path}", to_admin, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]
    return routes

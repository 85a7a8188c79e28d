"""Every admin route, on ``/admin/...`` and (as Kratos' admin port allows) without the prefix."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Route

from sidecar.api.admin.identities import IdentityHandlers, identity_routes
from sidecar.api.health import health_routes
from sidecar.api.pagination import PageTokens

if TYPE_CHECKING:
    from sidecar.app import Services


def admin_routes(services: Services) -> list[Route]:
    config = services.config
    handlers = IdentityHandlers(
        services.identities,
        services.schemas,
        PageTokens.from_config(config, "identities"),
        config.serve.admin.max_body_size,
    )
    routes = identity_routes(handlers, "")
    routes += health_routes(services.readiness_checks(), ready=services.is_ready)
    return routes + [Route("/admin" + r.path, r.endpoint, methods=list(r.methods or ())) for r in routes]

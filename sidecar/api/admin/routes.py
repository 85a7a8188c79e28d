"""Every admin route, on ``/admin/...`` and (as Kratos' admin port allows) without the prefix."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar.api.admin.courier import courier_routes
from sidecar.api.admin.identities import IdentityHandlers, identity_routes
from sidecar.api.admin.recovery import admin_recovery_routes
from sidecar.api.admin.rules import rules_coverage_routes
from sidecar.api.admin.sessions import admin_session_routes
from sidecar.api.health import health_routes
from sidecar.api.pagination import PageTokens, pagination_secret

if TYPE_CHECKING:
    from sidecar.app import Services


def admin_routes(services: Services) -> list[Route]:
    config = services.config

    async def identity_changed(identity_id: uuid.UUID) -> None:
        # A deleted identity's sessions go with it; a disabled one's stop at the next look-up.
        if await services.identity_store.get(identity_id) is None:
            await services.session_store.delete_by_identity(identity_id)
        await services.invalidation.publish(identity_id=identity_id)

    handlers = IdentityHandlers(
        services.identities,
        services.identity_store,
        services.schemas,
        PageTokens.from_config(config, "identities"),
        config.serve.admin.max_body_size,
        on_change=identity_changed,
    )
    routes = identity_routes(handlers, "")
    routes += health_routes(services.readiness_checks(), ready=services.is_ready)
    routes += admin_session_routes(services)
    routes += admin_recovery_routes(services)

    async def metrics(request: Request) -> Response:
        body, content_type = await services.metrics.render()
        return Response(body, headers={"Content-Type": content_type})

    routes += [Route("/admin" + r.path, r.endpoint, methods=list(r.methods or ())) for r in routes]
    # courier_routes already answers on both /admin/courier/... and /courier/...
    routes += courier_routes(services.database.courier, pagination_secret(config))
    routes += rules_coverage_routes(services.rules, services.metrics)
    return [*routes, Route("/metrics", metrics, methods=["GET"])]

"""Every admin route, on ``/admin/...`` and (as Kratos' admin port allows) without the prefix."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar.api.admin.courier import courier_routes
from sidecar.api.admin.identities import IdentityHandlers, identity_routes
from sidecar.api.admin.recovery import AdminRecoveryFlows, admin_recovery_routes
from sidecar.api.admin.sessions import FindIdentity, IdentityJson, admin_session_routes
from sidecar.api.pagination import PageTokens
from sidecar.courier.store import CourierStore
from sidecar.session.manager import SessionManager

RenderMetrics = Callable[[], Awaitable[tuple[bytes, str]]]


def admin_routes(
    *,
    identities: IdentityHandlers,
    sessions: SessionManager,
    find_identity: FindIdentity,
    identity_json: IdentityJson,
    session_tokens: PageTokens,
    recovery: AdminRecoveryFlows | None,
    courier_store: CourierStore,
    courier_secret: str,
    render_metrics: RenderMetrics,
    health: list[Route],
    admin_base_url: str,
    public_base_url: str,
    max_body: int,
) -> list[Route]:
    routes = identity_routes(identities, "")
    routes += health
    routes += admin_session_routes(sessions, find_identity, identity_json, session_tokens, admin_base_url)
    routes += admin_recovery_routes(recovery, find_identity, public_base_url, max_body)

    async def metrics(request: Request) -> Response:
        body, content_type = await render_metrics()
        return Response(body, headers={"Content-Type": content_type})

    routes += [Route("/admin" + r.path, r.endpoint, methods=list(r.methods or ())) for r in routes]
    # courier_routes already answers on both /admin/courier/... and /courier/...
    routes += courier_routes(courier_store, courier_secret)
    return [*routes, Route("/metrics", metrics, methods=["GET"])]

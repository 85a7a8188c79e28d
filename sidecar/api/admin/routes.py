"""Every admin route, on ``/admin/...`` and (as Kratos' admin port allows) without the prefix."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar.api.admin.courier import courier_routes
from sidecar.api.admin.identities import IdentityHandlers, identity_routes
from sidecar.api.admin.organizations import OrganizationHandlers, organization_routes
from sidecar.api.admin.recovery import AdminRecoveryFlows, admin_recovery_routes
from sidecar.api.admin.rules import rules_coverage_routes
from sidecar.api.admin.saml import saml_connection_routes
from sidecar.api.admin.scim_tokens import ScimTokenHandlers, scim_token_routes
from sidecar.api.admin.sessions import FindIdentity, IdentityJson, admin_session_routes
from sidecar.api.admin.webhooks import webhook_routes
from sidecar.api.origin import RequestAudit
from sidecar.api.pagination import PageTokens
from sidecar.courier.store import CourierStore
from sidecar.metrics import Metrics
from sidecar.rules.holder import RulesHolder
from sidecar.session.manager import SessionManager
from sidecar.webhooks.outbox import OutboxStore

if TYPE_CHECKING:
    from sidecar.strategies.saml.connections import SamlConnections


def admin_routes(
    *,
    identities: IdentityHandlers,
    organizations: OrganizationHandlers,
    scim_tokens: ScimTokenHandlers,
    sessions: SessionManager,
    find_identity: FindIdentity,
    identity_json: IdentityJson,
    session_tokens: PageTokens,
    recovery: AdminRecoveryFlows | None,
    courier_store: CourierStore,
    courier_secret: str,
    metrics: Metrics,
    rules: RulesHolder,
    health: list[Route],
    admin_base_url: str,
    public_base_url: str,
    max_body: int,
    audit: RequestAudit,
    outbox: OutboxStore,
    faster_session_extend: bool = False,
    saml_connections: SamlConnections | None = None,
) -> list[Route]:
    routes = identity_routes(identities, "")
    routes += organization_routes(organizations)
    routes += scim_token_routes(scim_tokens)
    routes += health
    routes += admin_session_routes(
        sessions, find_identity, identity_json, session_tokens, admin_base_url, audit, faster_session_extend
    )
    routes += admin_recovery_routes(recovery, find_identity, public_base_url, max_body)

    async def scrape(request: Request) -> Response:
        body, content_type = await metrics.render()
        return Response(body, headers={"Content-Type": content_type})

    routes += [Route("/admin" + r.path, r.endpoint, methods=list(r.methods or ())) for r in routes]
    # courier_routes already answers on both /admin/courier/... and /courier/...
    routes += courier_routes(courier_store, courier_secret)
    routes += rules_coverage_routes(rules, metrics)
    routes += webhook_routes(outbox)
    routes += saml_connection_routes(saml_connections)
    return [*routes, Route("/metrics", scrape, methods=["GET"])]

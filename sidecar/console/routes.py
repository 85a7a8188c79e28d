"""The console's routes, all under ``/console`` on the admin listener.

GET pages read; every POST is an action (session, same-origin and CSRF checked by ``Pages.action``)
that answers with a redirect (post/redirect/get) or, for refused input, the page with the problem.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from sidecar.console.courier import CourierPages
from sidecar.console.identities import IdentityPages
from sidecar.console.organizations import OrganizationPages
from sidecar.console.overview import Overview
from sidecar.console.pages import PREFIX, Pages
from sidecar.console.recovery import RecoverySection
from sidecar.console.rules import RulesPages
from sidecar.console.sessions import SessionSection
from sidecar.console.signin import SignIn
from sidecar.console.webhooks import WebhookPages


def console_routes(
    pages: Pages,
    *,
    signin: SignIn,
    overview: Overview,
    identities: IdentityPages,
    sessions: SessionSection,
    recovery: RecoverySection | None,
    courier: CourierPages,
    webhooks: WebhookPages,
    rules: RulesPages,
    organizations: OrganizationPages,
) -> list[BaseRoute]:
    p, i, o = pages, identities, organizations
    one = f"{PREFIX}/identities/{{id}}"
    org = f"{PREFIX}/organizations/{{id}}"
    routes: list[BaseRoute] = [
        Route(PREFIX, p.page(overview.show), methods=["GET"]),
        Route(f"{PREFIX}/static/{{name}}", p.static, methods=["GET"]),
        Route(f"{PREFIX}/login", signin.show, methods=["GET"]),
        Route(f"{PREFIX}/login", signin.submit, methods=["POST"]),
        Route(f"{PREFIX}/logout", p.action(signin.sign_out), methods=["POST"]),
        Route(f"{PREFIX}/identities", p.page(i.search), methods=["GET"]),
        Route(f"{PREFIX}/identities/new", p.page(i.new), methods=["GET"]),
        Route(f"{PREFIX}/identities/new", p.action(i.create), methods=["POST"]),
        Route(one, p.page(i.detail), methods=["GET"]),
        Route(f"{one}/traits", p.action(i.update_traits), methods=["POST"]),
        Route(f"{one}/state", p.action(i.update_state), methods=["POST"]),
        Route(f"{one}/metadata", p.action(i.update_metadata), methods=["POST"]),
        Route(f"{one}/credentials/{{type}}/delete", p.action(i.delete_credential), methods=["POST"]),
        Route(f"{one}/delete", p.page(i.confirm_delete), methods=["GET"]),
        Route(f"{one}/delete", p.action(i.delete), methods=["POST"]),
        Route(f"{one}/sessions/revoke-all", p.action(sessions.revoke_all), methods=["POST"]),
        Route(f"{one}/sessions/{{session_id}}/revoke", p.action(sessions.revoke), methods=["POST"]),
        Route(f"{PREFIX}/courier", p.page(courier.queue), methods=["GET"]),
        Route(f"{PREFIX}/courier/{{id}}/retry", p.action(courier.retry), methods=["POST"]),
        Route(f"{PREFIX}/courier/{{id}}/abandon", p.action(courier.abandon), methods=["POST"]),
        Route(f"{PREFIX}/webhooks", p.page(webhooks.queue), methods=["GET"]),
        Route(f"{PREFIX}/webhooks/{{id}}/retry", p.action(webhooks.retry), methods=["POST"]),
        Route(f"{PREFIX}/rules", p.page(rules.show), methods=["GET"]),
        Route(f"{PREFIX}/organizations", p.page(o.list), methods=["GET"]),
        Route(f"{PREFIX}/organizations/new", p.action(o.create), methods=["POST"]),
        Route(org, p.page(o.detail), methods=["GET"]),
        Route(org, p.action(o.update), methods=["POST"]),
        Route(f"{org}/members", p.page(o.members), methods=["GET"]),
        Route(f"{org}/scim-token", p.action(o.issue_scim_token), methods=["POST"]),
        Route(f"{org}/scim-token/revoke", p.action(o.revoke_scim_token), methods=["POST"]),
        Route(f"{org}/delete", p.page(o.confirm_delete), methods=["GET"]),
        Route(f"{org}/delete", p.action(o.delete), methods=["POST"]),
    ]
    if recovery is not None:
        routes.append(Route(f"{one}/recovery", p.action(recovery.create), methods=["POST"]))
    return routes

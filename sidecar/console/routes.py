"""The console's routes, all under ``/console`` on the admin listener."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from sidecar.console.identities import IdentityPages
from sidecar.console.overview import Overview
from sidecar.console.pages import PREFIX, Pages
from sidecar.console.signin import SignIn


def console_routes(
    pages: Pages, signin: SignIn, identities: IdentityPages, overview: Overview
) -> list[BaseRoute]:
    p, i = pages, identities
    one = f"{PREFIX}/identities/{{id}}"
    return [
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
    ]

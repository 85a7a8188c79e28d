"""``/console``: the first page after sign-in, with the counts an operator looks at first."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from sidecar.console.auth import ConsoleSession
from sidecar.console.pages import Pages
from sidecar.identity.store import IdentityStore


class Overview:
    def __init__(self, pages: Pages, identities: IdentityStore) -> None:
        self.pages = pages
        self.identities = identities

    async def show(self, request: Request, signed_in: ConsoleSession) -> Response:
        context = {"title": "Overview", "identity_count": await self.identities.count()}
        return self.pages.render("overview.html", context, signed_in=signed_in, section="overview")

"""``/scim/v2/<organization>/...`` on the public listener; the SCIM endpoint behind them is built
on the first SCIM request of the worker.

scim2-models and scim2-server cost ~0.5 s of CPU to import (``python -X importtime -c "import
sidecar.api.scim.endpoint"``: scim2_models 0.34 s, mostly pydantic reading attribute docstrings;
scim2_server 0.2 s). Every ``sidecar serve`` and every command that builds the apps paid it, though
few deployments provision by SCIM and the test suite starts the server hundreds of times. So this
module names neither library: ``_build`` imports ``sidecar.api.scim.endpoint`` when it is needed.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar.api.scim.attributes import AttributeMapping
from sidecar.config.model import ScimConfig
from sidecar.identity.manager import IdentityManager
from sidecar.organization.model import Organization
from sidecar.organization.provisioning import ScimStore
from sidecar.session.manager import SessionManager

if TYPE_CHECKING:
    from sidecar.api.scim.endpoint import ScimEndpoint


@dataclass(frozen=True, slots=True)
class ScimServices:
    """What the SCIM endpoint is built from."""

    find_organization: Callable[[str], Awaitable[Organization | None]]
    """An organization by id or slug (the ``<organization>`` of the URL)."""
    organization: Callable[[uuid.UUID], Awaitable[Organization]]
    store: ScimStore
    identities: IdentityManager
    sessions: SessionManager
    config: ScimConfig
    username_trait: Callable[[], bool]
    """Whether the default identity schema has a ``username`` trait (schemas load at start)."""
    public_base_url: str
    secret: str
    """Signs the list pages' cursors."""
    max_body: int


class LazyScimEndpoint:
    """Builds the ``ScimEndpoint`` on the first request, then hands every request to it."""

    def __init__(self, services: ScimServices) -> None:
        self._services = services
        self._endpoint: ScimEndpoint | None = None

    async def handle(self, request: Request) -> Response:
        if self._endpoint is None:
            self._endpoint = self._build()  # no await in between: one build per worker
        return await self._endpoint.handle(request)

    def _build(self) -> ScimEndpoint:
        # The import that loads scim2-models and scim2-server (see the module docstring).
        from sidecar.api.scim.endpoint import ScimEndpoint
        from sidecar.api.scim.provisioning import Provisioning

        s = self._services
        return ScimEndpoint(
            s.find_organization,
            s.store,
            Provisioning(
                s.identities,
                s.sessions,
                s.store,
                s.config.roles_field,
                username_trait=s.username_trait,
                attributes=AttributeMapping(s.config),
                organization=s.organization,
            ),
            public_base_url=s.public_base_url,
            secret=s.secret,
            max_body=s.max_body,
        )


def scim_routes(endpoint: LazyScimEndpoint) -> list[Route]:
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return [
        Route("/scim/v2/{org}", endpoint.handle, methods=methods),
        Route("/scim/v2/{org}/{rest:path}", endpoint.handle, methods=methods),
    ]

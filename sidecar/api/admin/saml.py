"""``GET /admin/saml/connections`` and ``GET /admin/saml/connections/{id}``: the configured SAML
connections, read-only. Sidecar-specific: Kratos has no admin API for them (Ory Network keeps them
in the project configuration, as sidecar keeps them in ``selfservice.methods.saml``).

For setting up or checking an identity provider: our entity id and the ACS, SLO and metadata URLs
to give it, and what its metadata said when it was last loaded (entity id, endpoints, when its
signing certificates expire). Nothing is fetched here: metadata behind ``idp_metadata_url`` shows
``loaded: false`` until a sign-in first needed it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.respond import error_response, json_response
from sidecar.strategies.saml.binding import PATH

if TYPE_CHECKING:  # pysaml2 (~0.5 s of imports) loads only with SAML on (strategies.saml.method)
    from sidecar.strategies.saml.connections import SamlConnection, SamlConnections


async def _connection_json(connections: SamlConnections, connection: SamlConnection) -> dict[str, Any]:
    p, settings = connection.provider, connection.settings
    facts = await asyncio.to_thread(connections.loaded_facts, connection)
    idp: dict[str, Any] = {
        "metadata_url": p.idp_metadata_url,  # null: inline or file metadata, read at start
        "loaded": facts is not None,
        "entity_id": None,
        "single_sign_on": {},
        "single_logout": {},
        "signing_certificates_expire": [],
    }
    if facts is not None:
        idp.update(
            entity_id=facts.entity_id,
            single_sign_on=facts.single_sign_on,
            single_logout=facts.single_logout,
            signing_certificates_expire=facts.signing_certificates_expire,
        )
    return {
        "id": connection.id,
        "label": connection.label,
        "provider": p.provider,
        "organization_id": p.organization_id,
        "binding": p.binding,
        "allow_idp_initiated": p.allow_idp_initiated,
        "service_provider": {
            "entity_id": settings.entity_id,
            "metadata_url": f"{connections.base}{PATH}/metadata/{connection.id}",
            "acs_url": settings.acs_url,
            "slo_url": settings.slo_url,
            "signs_requests": settings.key_file is not None,
        },
        "identity_provider": idp,
    }


def saml_connection_routes(connections: SamlConnections | None) -> list[Route]:
    """With SAML off (``connections`` None) the list is empty and every id is unknown."""

    async def list_all(request: Request) -> Response:
        if connections is None:
            return json_response([])
        return json_response([await _connection_json(connections, c) for c in connections.by_id.values()])

    async def get_one(request: Request) -> Response:
        connection = connections.find(request.path_params["id"]) if connections is not None else None
        if connections is None or connection is None:
            return error_response(errors.NotFound("No such SAML connection."), request)
        return json_response(await _connection_json(connections, connection))

    return [
        Route("/admin/saml/connections", list_all, methods=["GET"]),
        Route("/admin/saml/connections/{id}", get_one, methods=["GET"]),
    ]

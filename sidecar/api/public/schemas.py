"""GET /schemas and /schemas/{id}: the raw identity schema documents (kratos-api.md §1.7)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.respond import json_response
from sidecar.schema.registry import SchemaRegistry


def schema_routes(schemas: SchemaRegistry) -> list[Route]:
    async def list_schemas(request: Request) -> Response:
        return json_response([{"id": s.id, "schema": s.document} for s in schemas.all()])

    async def get_schema(request: Request) -> Response:
        schema_id = schemas.resolve_id(request.path_params["id"])
        if schema_id is None:
            raise errors.NotFound("The requested identity schema does not exist")
        return json_response(schemas.get(schema_id).document)

    return [
        Route("/schemas", list_schemas, methods=["GET"]),
        Route("/schemas/{id}", get_schema, methods=["GET"]),
    ]

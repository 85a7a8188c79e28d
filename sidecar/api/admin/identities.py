"""Kratos admin identity API: /admin/identities (kratos-api.md §2)."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.admin import bodies
from sidecar.api.body import read_json
from sidecar.api.origin import RequestAudit
from sidecar.api.pagination import PageTokens, link_header, parse_page_size, parse_uuid
from sidecar.api.respond import json_response
from sidecar.identity.identity_json import identity_to_json
from sidecar.identity.manager import IdentityManager, IdentitySpec
from sidecar.identity.model import CREDENTIAL_TYPES, Identity
from sidecar.identity.store import IdentityStore
from sidecar.schema.registry import SchemaRegistry

MAX_PAGE = 500
MAX_BATCH = 1000
MAX_BATCH_PLAINTEXT = 200
MAX_IDS = 500


class IdentityHandlers:
    def __init__(
        self,
        manager: IdentityManager,
        store: IdentityStore,
        schemas: SchemaRegistry,
        tokens: PageTokens,
        max_body: int,
        audit: RequestAudit | None = None,
    ) -> None:
        self.manager = manager
        self.audit = audit or RequestAudit.off()
        self.store = store
        self.schemas = schemas
        self.tokens = tokens
        self.max_body = max_body

    def _json(self, identity: Identity, include: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        return identity_to_json(
            identity,
            schema_url=self.schemas.schema_url(identity.schema_id),
            admin=True,
            include_credentials=include,
        )

    @staticmethod
    def _include(request: Request) -> list[str]:
        include = request.query_params.getlist("include_credential")
        for kind in include:
            if kind not in CREDENTIAL_TYPES:
                raise errors.BadRequest(f"include_credential: unknown credential type {kind[:32]!r}")
        return include

    async def list(self, request: Request) -> Response:
        q = request.query_params
        include = self._include(request)
        raw_ids = q.getlist("ids")
        identifier = q.get("credentials_identifier") or q.get("preview_credentials_identifier_similar")
        if raw_ids and identifier:
            raise errors.BadRequest("the ids and credentials_identifier filters cannot be combined")
        if raw_ids:
            if len(raw_ids) > MAX_IDS:
                raise errors.BadRequest(f"at most {MAX_IDS} ids may be requested at once")
            ids = [parse_uuid(i, "ids") for i in raw_ids]
            found = await self.store.list(page_size=MAX_IDS, ids=ids)
            return json_response([self._json(i, include) for i in found])
        raw_org = q.get("organization_id")
        if raw_org and identifier:
            raise errors.BadRequest(
                "the organization_id and credentials_identifier filters cannot be combined"
            )
        organization_id = parse_uuid(raw_org, "organization_id") if raw_org else None
        page_size = parse_page_size(q.get("page_size") or q.get("per_page"), default=250, maximum=MAX_PAGE)
        token = q.get("page_token")
        after = self.tokens.open(token) if token else None
        # One extra row tells whether a next page exists without a COUNT.
        rows = await self.store.list(
            page_size=page_size + 1,
            after=after,
            credentials_identifier=identifier or None,
            organization_id=organization_id,
        )
        page, more = rows[:page_size], len(rows) > page_size
        next_token = self.tokens.seal(page[-1].id) if more and page else None
        params = {"credentials_identifier": identifier} if identifier else {}
        if organization_id is not None:
            params["organization_id"] = str(organization_id)
        headers = {"Link": link_header(request.url.path, params, page_size, next_token)}
        if next_token:
            headers["X-Next-Page-Token"] = next_token
        return json_response([self._json(i, include) for i in page], headers=headers)

    async def create(self, request: Request) -> Response:
        body = await read_json(request, self.max_body)
        spec = bodies.identity_spec(body)
        identity = await self.manager.create(spec)
        self.audit.emit("identity.created", request, identity_id=identity.id, actor="admin_api")
        location = f"{request.url.path.rstrip('/')}/{identity.id}"
        return json_response(self._json(identity), 201, headers={"Location": location})

    async def batch(self, request: Request) -> Response:
        body = await read_json(request, self.max_body * 8)
        if not isinstance(body, dict) or not isinstance(body.get("identities"), list):
            raise errors.BadRequest('the body must be {"identities": [...]}')
        items = body["identities"]
        if len(items) > MAX_BATCH:
            raise errors.BadRequest(f"at most {MAX_BATCH} identities per batch")
        results: list[dict[str, Any]] = []
        specs: list[tuple[int, Any]] = []
        for i, item in enumerate(items):
            # Kratos leaves patch_id out when none was given (never null); it is a UUID.
            given = item.get("patch_id") if isinstance(item, dict) else None
            echo = {"patch_id": given} if given is not None and _is_uuid(given) else {}
            try:
                if given is not None and not echo:
                    raise errors.BadRequest("patch_id must be a UUID")
                if not isinstance(item, dict) or "create" not in item:
                    raise errors.BadRequest("each item needs a create object")
                specs.append((i, bodies.identity_spec(item["create"])))
                results.append({"action": "create", **echo})
            except errors.SidecarError as exc:
                results.append({"action": "error", **echo, "error": exc.to_dict()["error"]})
        plaintext = sum(1 for _, spec in specs if _plain_password(spec))
        if plaintext > MAX_BATCH_PLAINTEXT:
            # Kratos' limit: each plaintext password costs a hash (~0.2 s of CPU with argon2id).
            reason = (
                "The maximum number of identities per request that can be created with a plaintext "
                f"password is {MAX_BATCH_PLAINTEXT}."
            )
            raise errors.BadRequest(reason, reason=reason)
        # One transaction for the batch; a bad item is reported alone, the others are stored.
        outcomes = await self.manager.create_many([spec for _, spec in specs])
        for (i, _), outcome in zip(specs, outcomes, strict=True):
            if isinstance(outcome, Identity):
                results[i]["identity"] = str(outcome.id)
                self.audit.emit("identity.created", request, identity_id=outcome.id, actor="admin_api")
            else:
                echo = {"patch_id": results[i]["patch_id"]} if "patch_id" in results[i] else {}
                results[i] = {"action": "error", **echo, "error": outcome.to_dict()["error"]}
        return json_response({"identities": results})

    async def _identity(self, request: Request) -> uuid.UUID:
        return parse_uuid(request.path_params["id"])

    async def get(self, request: Request) -> Response:
        identity = await self.manager.get(await self._identity(request))
        return json_response(self._json(identity, self._include(request)))

    async def get_by_external(self, request: Request) -> Response:
        identity = await self.store.get_by_external_id(request.path_params["external_id"])
        if identity is None:
            raise errors.NotFound("Unable to locate the resource")
        return json_response(self._json(identity, self._include(request)))

    async def update(self, request: Request) -> Response:
        identity_id = await self._identity(request)
        body = await read_json(request, self.max_body)
        current = await self.manager.get(identity_id)
        spec = bodies.identity_spec(body, require_state=True, default_schema_id=current.schema_id)
        identity = await self.manager.update(identity_id, spec)
        self.audit.emit(
            "identity.updated", request, identity_id=identity_id, actor="admin_api", operation="put"
        )
        return json_response(self._json(identity))

    async def patch(self, request: Request) -> Response:
        identity_id = await self._identity(request)
        ops = bodies.json_patch(await read_json(request, self.max_body))
        identity = await self.manager.patch(identity_id, ops)
        self.audit.emit(
            "identity.updated", request, identity_id=identity_id, actor="admin_api", operation="patch"
        )
        return json_response(self._json(identity))

    async def delete(self, request: Request) -> Response:
        identity_id = await self._identity(request)
        await self.manager.delete(identity_id)
        self.audit.emit("identity.deleted", request, identity_id=identity_id, actor="admin_api")
        return Response(status_code=204)

    async def delete_credential(self, request: Request) -> Response:
        identity_id = await self._identity(request)
        kind = request.path_params["type"]
        await self.manager.delete_credential(identity_id, kind)
        # The manager checked the type: an unknown one or one the identity lacks never gets here.
        self.audit.emit(
            "identity.updated",
            request,
            identity_id=identity_id,
            actor="admin_api",
            operation=f"delete_credential:{kind}",
        )
        return Response(status_code=204)


def identity_routes(handlers: IdentityHandlers, base: str) -> list[Route]:
    h = handlers
    return [
        Route(f"{base}/identities", h.list, methods=["GET"]),
        Route(f"{base}/identities", h.create, methods=["POST"]),
        Route(f"{base}/identities", h.batch, methods=["PATCH"]),
        Route(f"{base}/identities/by/external/{{external_id}}", h.get_by_external, methods=["GET"]),
        Route(f"{base}/identities/{{id}}", h.get, methods=["GET"]),
        Route(f"{base}/identities/{{id}}", h.update, methods=["PUT"]),
        Route(f"{base}/identities/{{id}}", h.patch, methods=["PATCH"]),
        Route(f"{base}/identities/{{id}}", h.delete, methods=["DELETE"]),
        Route(f"{base}/identities/{{id}}/credentials/{{type}}", h.delete_credential, methods=["DELETE"]),
    ]


def _plain_password(spec: IdentitySpec) -> bool:
    password = (spec.credentials or {}).get("password")
    config = password.get("config") if isinstance(password, dict) else None
    return spec.password_plain is not None or (isinstance(config, dict) and bool(config.get("password")))


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True

"""``/scim/v2/<organization>/...`` on the public listener: SCIM 2.0 (RFC 7644) for one
organization, named by id or slug, behind that organization's bearer token.

The token is compared by its SHA-256 digest (only the digest is stored). An unknown organization
and a wrong token get the same 401, so the endpoint tells an outsider nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable

from scim2_models import (
    AuthenticationScheme,
    EnterpriseUser,
    External,
    Group,
    InvalidValueException,
    Reference,
    ResourceType,
    ScimProvider,
    ServiceProviderConfig,
    UnauthorizedException,
    User,
)
from scim2_server.applications.asgi import ASGIApplication
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.service import ScimService
from starlette.requests import Request
from starlette.responses import Response

from sidecar.api.scim.provisioning import Provisioning
from sidecar.api.scim.storage import OrganizationScimStorage
from sidecar.organization.model import Organization
from sidecar.organization.provisioning import ScimStore
from sidecar.security.tokens import digest

MAX_RESULTS = 200
MAX_PATCH_OPERATIONS = 100
"""Operations in one PATCH: scim2-server applies and validates them one by one on the event loop
(5,000 took ~30 s, every other request of the worker waiting); identity providers send a few, a
group's members in one operation's ``value`` list."""


def _operation_count(body: bytes) -> int:
    try:
        parsed = json.loads(body)
    except ValueError:
        return 0  # scim2-server answers the malformed body itself
    operations = parsed.get("Operations") if isinstance(parsed, dict) else None
    return len(operations) if isinstance(operations, list) else 0


BEARER = AuthenticationScheme(
    type=AuthenticationScheme.Type.oauthbearertoken,
    name="OAuth Bearer Token",
    description="The organization's SCIM token (POST /admin/organizations/{id}/scim/token)",
    spec_uri=Reference[External]("https://www.rfc-editor.org/rfc/rfc6750"),
    primary=True,
)


def scim_provider() -> ScimProvider:
    config = ServiceProviderConfig.model_validate(
        {
            "patch": {"supported": True},
            "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": True, "maxResults": MAX_RESULTS},
            "changePassword": {"supported": True},
            "sort": {"supported": False},
            "etag": {"supported": True},
        }
    )
    config.authentication_schemes = [BEARER]
    return ScimProvider(
        models=[User, EnterpriseUser, Group],
        resource_types=[ResourceType.from_resource(User[EnterpriseUser]), ResourceType.from_resource(Group)],
        config=config,
    )


class _OrganizationApp(ASGIApplication):
    """scim2-server's application, bound to one organization and its token."""

    def __init__(
        self,
        organization_id: uuid.UUID | None,
        storage: OrganizationScimStorage,
        provider: ScimProvider,
        service: ScimService,
        token_owner: Callable[[str], Awaitable[uuid.UUID | None]],
    ) -> None:
        super().__init__(storage, provider, service)
        self._organization_id = organization_id
        self._token_owner = token_owner

    async def dispatch_request(self, request: ScimRequest) -> ScimResponse:
        if self.needs_auth(request):
            scheme, _, token = (request.header("Authorization") or "").partition(" ")
            token = token.strip()
            owner = await self._token_owner(digest(token)) if scheme.lower() == "bearer" and token else None
            if self._organization_id is None or owner != self._organization_id:
                raise UnauthorizedException(detail="a valid bearer token of this organization is required")
        if request.method.upper() == "PATCH" and _operation_count(request.body) > MAX_PATCH_OPERATIONS:
            raise InvalidValueException(detail=f"at most {MAX_PATCH_OPERATIONS} operations per PATCH")
        return await super().dispatch_request(request)


class ScimEndpoint:
    def __init__(
        self,
        find_organization: Callable[[str], Awaitable[Organization | None]],
        store: ScimStore,
        provisioning: Provisioning,
        *,
        public_base_url: str,
        secret: str,
        max_body: int,
    ) -> None:
        self._find = find_organization
        self._store = store
        self._provisioning = provisioning
        self._base = public_base_url.rstrip("/")
        self._provider = scim_provider()
        self._service = ScimService(self._provider, secret=secret)
        self._apps: dict[uuid.UUID | None, _OrganizationApp] = {}
        self._max_body = max_body

    def _app(self, organization: Organization | None) -> _OrganizationApp:
        key = organization.id if organization is not None else None
        app = self._apps.get(key)
        if app is None:
            # An unknown organization gets an app too (over the nil id), whose auth refuses all.
            storage = OrganizationScimStorage(
                key or uuid.UUID(int=0), self._store, self._provisioning, self._provider
            )
            app = _OrganizationApp(
                key, storage, self._provider, self._service, self._store.organization_of_token
            )
            if len(self._apps) > 1000:
                self._apps.clear()
            self._apps[key] = app
        return app

    async def handle(self, request: Request) -> Response:
        reference = request.path_params["org"]
        organization = await self._find(reference)
        app = self._app(organization)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > self._max_body:
                break  # scim2-server answers 413 to a body past its own limit
        scim_request = ScimRequest(
            method=request.method,
            base_url=f"{self._base}/scim/v2/{reference}",
            path=app.split_path("/" + request.path_params.get("rest", "")),
            query=dict(request.query_params),
            headers=list(request.headers.items()),
            body=body,
        )
        response = await app.serve(scim_request)
        payload = b"" if response.body is None else json.dumps(response.body).encode()
        return Response(payload, status_code=int(response.status), headers=response.headers)

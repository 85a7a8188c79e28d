"""Self-service errors for plain browsers (kratos-api.md §4): stored, then a 303 to the error UI,
which reads them back from ``GET /self-service/errors?id=``."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.public.flow_http import NO_STORE, see_other
from sidecar.api.respond import json_response, request_id
from sidecar.config.model import Config
from sidecar.identity.model import utcnow
from sidecar.kv.store import KeyValueStore

ERROR_TTL = timedelta(hours=1)
_STUBS: dict[str, errors.SidecarError] = {
    "stub:500": errors.InternalError(reason="This is a stub error."),
    "stub:404": errors.NotFound(reason="This is a stub error."),
    "stub:403": errors.Forbidden(reason="This is a stub error."),
    "stub:400": errors.BadRequest(reason="This is a stub error."),
}


class ErrorFlows:
    def __init__(self, config: Config, kv: KeyValueStore) -> None:
        self._kv = kv
        self._ui_url = config.selfservice.flows.error.ui_url or config.public_base_url + "/ui/error"

    async def redirect(self, exc: errors.SidecarError, request: Request) -> Response:
        error_id = uuid.uuid4()
        now = utcnow().isoformat().replace("+00:00", "Z")
        record = {
            "id": str(error_id),
            "error": exc.to_dict(request_id(request))["error"],
            "created_at": now,
            "updated_at": now,
        }
        await self._kv.set(f"selfservice_error:{error_id}", json.dumps(record).encode(), ERROR_TTL)
        sep = "&" if "?" in self._ui_url else "?"
        return see_other(f"{self._ui_url}{sep}id={error_id}")

    async def get(self, raw_id: str | None) -> dict[str, Any]:
        if raw_id in _STUBS:
            now = utcnow().isoformat().replace("+00:00", "Z")
            return {
                "id": raw_id,
                "error": _STUBS[raw_id].to_dict()["error"],
                "created_at": now,
                "updated_at": now,
            }
        try:
            error_id = uuid.UUID(raw_id or "")
        except ValueError:
            raise errors.NotFound("Unable to locate the resource") from None
        raw = await self._kv.get(f"selfservice_error:{error_id}")
        if raw is None:
            # Kratos' persister answers sqlcon.ErrNoRows (errorx/handler.go fetchError).
            raise errors.NotFound("Unable to locate the resource")
        record: dict[str, Any] = json.loads(raw)
        return record


def error_routes(flows: ErrorFlows) -> list[Route]:
    async def get_error(request: Request) -> Response:
        return json_response(await flows.get(request.query_params.get("id")), headers=NO_STORE)

    return [Route("/self-service/errors", get_error, methods=["GET"])]

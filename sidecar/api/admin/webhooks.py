"""``/admin/webhooks/deliveries``: the web hook outbox, its dead letters, and a retry (sidecar-only;
Kratos has no outbox)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.pagination import parse_page_size, parse_status, parse_uuid
from sidecar.api.respond import json_response
from sidecar.webhooks.outbox import STATUSES, Delivery, OutboxStore

# Headers a listing must not show: the receiver's credentials (api_key / basic_auth).
_SECRET_HEADERS = {"authorization", "cookie", "proxy-authorization"}


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def delivery_to_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": str(delivery.id),
        "hook_id": delivery.hook_id,
        "flow_id": delivery.flow_id,
        "method": delivery.method,
        "url": delivery.url,
        "headers": {k: ("<redacted>" if k.lower() in _SECRET_HEADERS else v) for k, v in delivery.headers},
        "body_base64": base64.b64encode(delivery.body).decode() if delivery.body is not None else None,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_error": delivery.last_error,
        "last_status_code": delivery.last_status_code,
        "next_attempt_at": _time(delivery.next_attempt_at),
        "created_at": _time(delivery.created_at),
        "updated_at": _time(delivery.updated_at),
        "delivered_at": _time(delivery.delivered_at),
    }


def webhook_routes(store: OutboxStore) -> list[Route]:
    async def list_deliveries(request: Request) -> Response:
        q = request.query_params
        limit = parse_page_size(q.get("page_size"), default=100, maximum=1000)
        found = await store.list(status=parse_status(q.get("status"), STATUSES), limit=limit)
        return json_response([delivery_to_json(d) for d in found])

    async def get_delivery(request: Request) -> Response:
        delivery_id = parse_uuid(str(request.path_params["id"]), "id")
        found = await store.get(delivery_id)
        if found is None:
            raise errors.NotFound(f"web hook delivery {delivery_id} was not found")
        return json_response(delivery_to_json(found))

    async def retry_delivery(request: Request) -> Response:
        delivery_id = parse_uuid(str(request.path_params["id"]), "id")
        if not await store.retry(delivery_id):
            found = await store.get(delivery_id)
            if found is None:
                raise errors.NotFound(f"web hook delivery {delivery_id} was not found")
            raise errors.Conflict(
                f"web hook delivery {delivery_id} is {found.status}; only dead or queued ones retry"
            )
        found = await store.get(delivery_id)
        assert found is not None
        return json_response(delivery_to_json(found), status=202)

    routes: list[Route] = []
    for prefix in ("/admin", ""):
        routes += [
            Route(f"{prefix}/webhooks/deliveries", list_deliveries, methods=["GET"]),
            Route(f"{prefix}/webhooks/deliveries/{{id}}", get_delivery, methods=["GET"]),
            Route(f"{prefix}/webhooks/deliveries/{{id}}/retry", retry_delivery, methods=["POST"]),
        ]
    return routes

"""Kratos admin courier API: ``GET /admin/courier/messages[/{id}]`` (kratos-api.md §2).

Listing is newest first with keyset pagination on ``(created_at, id)``; the page token carries that
position signed with itsdangerous, so a forged or tampered token is a 400 and never a scan from an
arbitrary position.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.pagination import link_header, parse_page_size, parse_status, parse_uuid
from sidecar.api.respond import json_response
from sidecar.courier.model import MESSAGE_STATUSES, Dispatch, Message
from sidecar.courier.store import CourierStore, Cursor

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dispatch_to_json(dispatch: Dispatch) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(dispatch.id),
        "message_id": str(dispatch.message_id),
        "status": dispatch.status,
        "created_at": _timestamp(dispatch.created_at),
        "updated_at": _timestamp(dispatch.updated_at),
    }
    if dispatch.error is not None:
        body["error"] = {"message": dispatch.error}
    return body


def message_to_json(message: Message) -> dict[str, Any]:
    """Kratos' ``message`` schema; template data stays internal, as in Kratos (``json:"-"``)."""
    return {
        "id": str(message.id),
        "type": message.type,
        "channel": message.type,
        "status": message.status,
        "recipient": message.recipient,
        "subject": message.subject,
        "body": message.body,
        "template_type": message.template_type,
        "send_count": message.send_count,
        "created_at": _timestamp(message.created_at),
        "updated_at": _timestamp(message.updated_at),
        "dispatches": [dispatch_to_json(d) for d in message.dispatches],
    }


class CourierPageTokens:
    """Seals a ``(created_at, id)`` listing position."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("courier page tokens need a secret")
        self._serializer = URLSafeSerializer(secret, salt="sidecar.courier.messages")

    def seal(self, cursor: Cursor) -> str:
        created, last_id = cursor
        return str(self._serializer.dumps([_timestamp(created), last_id.hex]))

    def open(self, token: str) -> Cursor:
        try:
            created, last_id = self._serializer.loads(token)
            return datetime.fromisoformat(str(created)).astimezone(UTC), uuid.UUID(hex=str(last_id))
        except (BadSignature, ValueError, TypeError):
            raise errors.BadRequest(
                "The page token is invalid, do not craft your own page tokens", reason="invalid page_token"
            ) from None


class CourierHandlers:
    def __init__(self, store: CourierStore, tokens: CourierPageTokens) -> None:
        self.store = store
        self.tokens = tokens

    async def list_messages(self, request: Request) -> Response:
        q = request.query_params
        page_size = parse_page_size(q.get("page_size"), default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        status = parse_status(q.get("status"), MESSAGE_STATUSES)
        recipient = q.get("recipient") or None
        token = q.get("page_token")
        after = self.tokens.open(token) if token else None
        # One extra row tells whether a next page exists without a COUNT.
        rows = await self.store.list(page_size=page_size + 1, after=after, status=status, recipient=recipient)
        page, more = rows[:page_size], len(rows) > page_size
        next_token = self.tokens.seal((page[-1].created_at, page[-1].id)) if more and page else None
        params = {k: v for k, v in (("status", status), ("recipient", recipient)) if v}
        headers = {"Link": link_header(request.url.path, params, page_size, next_token)}
        return json_response([message_to_json(m) for m in page], headers=headers)

    async def get_message(self, request: Request) -> Response:
        message_id = parse_uuid(str(request.path_params["id"]), "id")
        message = await self.store.get(message_id)
        if message is None:
            raise errors.NotFound(f"courier message {message_id} was not found")
        return json_response(message_to_json(message))


def courier_routes(store: CourierStore, secret: str) -> list[Route]:
    """The courier routes on ``/admin/...`` and (as Kratos' admin port allows) without the prefix."""
    handlers = CourierHandlers(store, CourierPageTokens(secret))
    routes: list[Route] = []
    for prefix in ("/admin", ""):
        routes += [
            Route(f"{prefix}/courier/messages", handlers.list_messages, methods=["GET"]),
            Route(f"{prefix}/courier/messages/{{id}}", handlers.get_message, methods=["GET"]),
        ]
    return routes

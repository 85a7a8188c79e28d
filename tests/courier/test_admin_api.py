"""GET /admin/courier/messages[/{id}] (``sidecar/api/admin/courier.py``) over ASGI."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from starlette.applications import Starlette

from sidecar.api import respond
from sidecar.api.admin.courier import courier_routes
from sidecar.courier.model import Message
from sidecar.storage.sql.courier_store import SqlCourierStore

SECRET = "courier-page-token-secret-0123456789"
REQUIRED = {"id", "status", "type", "recipient", "body", "subject", "template_type", "send_count"}
REQUIRED |= {"created_at", "updated_at"}


@pytest.fixture
async def client(store: SqlCourierStore) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=courier_routes(store, SECRET), exception_handlers=respond.EXCEPTION_HANDLERS)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as c:
        yield c


async def seed(store: SqlCourierStore, n: int) -> list[Message]:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        await store.enqueue(
            Message(
                recipient=f"u{i % 3}@example.test",
                subject=f"s{i}",
                body=f"b{i}",
                template_type="login_code_valid",
                created_at=base + timedelta(seconds=i),
            )
        )
        for i in range(n)
    ]


def next_link(response: httpx.Response) -> str | None:
    match = re.search(r'<([^>]+)>; rel="next"', response.headers["link"])
    return match.group(1) if match else None


async def test_pages_follow_link_header(client: httpx.AsyncClient, store: SqlCourierStore) -> None:
    made = await seed(store, 25)
    r = await client.get("/admin/courier/messages")
    assert r.status_code == 200 and len(r.json()) == 10  # Kratos' default page size
    assert 'rel="first"' in r.headers["link"]
    seen = [m["id"] for m in r.json()]
    url = next_link(r)
    while url:
        r = await client.get(url)
        assert r.status_code == 200
        seen += [m["id"] for m in r.json()]
        url = next_link(r)
    assert seen == [str(m.id) for m in reversed(made)]  # newest first, each once


async def test_filters_and_links_keep_them(client: httpx.AsyncClient, store: SqlCourierStore) -> None:
    await seed(store, 12)
    [claimed] = await store.claim_batch("w", limit=1, lease=timedelta(minutes=1))
    r = await client.get("/courier/messages", params={"status": "processing"})
    assert [m["id"] for m in r.json()] == [str(claimed.id)]
    r = await client.get("/admin/courier/messages", params={"recipient": "u1@example.test", "page_size": 2})
    assert {m["recipient"] for m in r.json()} == {"u1@example.test"} and len(r.json()) == 2
    url = next_link(r)
    assert url is not None and "recipient=u1%40example.test" in url and "page_size=2" in url
    r = await client.get(url)
    assert {m["recipient"] for m in r.json()} == {"u1@example.test"}


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        pytest.param({"status": "delivered"}, "invalid status filter", id="bad-status"),
        pytest.param({"page_token": "forged"}, "invalid page_token", id="forged-token"),
        pytest.param({"page_size": "ten"}, None, id="bad-page-size"),
        pytest.param({"page_size": "0"}, None, id="zero-page-size"),
    ],
)
async def test_bad_queries_are_400(
    client: httpx.AsyncClient, params: dict[str, str], reason: str | None
) -> None:
    r = await client.get("/admin/courier/messages", params=params)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == 400 and error["status"] == "Bad Request" and error["message"]
    if reason:
        assert error["reason"] == reason


async def test_tampered_token_is_400(client: httpx.AsyncClient, store: SqlCourierStore) -> None:
    await seed(store, 3)
    url = next_link(await client.get("/admin/courier/messages", params={"page_size": 1}))
    assert url is not None
    token = httpx.URL(url).params["page_token"]
    payload, _, signature = token.rpartition(".")
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
    r = await client.get("/admin/courier/messages", params={"page_token": forged})
    assert r.status_code == 400


async def test_page_size_is_capped(client: httpx.AsyncClient, store: SqlCourierStore) -> None:
    await seed(store, 2)
    r = await client.get("/admin/courier/messages", params={"page_size": "5000"})
    assert r.status_code == 200 and "page_size=1000" in r.headers["link"]


async def test_get_message_shape(client: httpx.AsyncClient, store: SqlCourierStore) -> None:
    [made] = await seed(store, 1)
    await store.claim_batch("w", limit=1, lease=timedelta(minutes=1))
    await store.mark_sent(made.id, "w")
    for path in (f"/admin/courier/messages/{made.id}", f"/courier/messages/{made.id}"):
        r = await client.get(path)
        assert r.status_code == 200
        body = r.json()
        assert set(body) >= REQUIRED
        assert (body["status"], body["type"], body["send_count"]) == ("sent", "email", 1)
        assert body["created_at"].endswith("Z")
        [dispatch] = body["dispatches"]
        assert dispatch["status"] == "success" and dispatch["message_id"] == str(made.id)
        assert "template_data" not in body and "html_body" not in body
    json.dumps(body)


async def test_get_errors(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/courier/messages/not-a-uuid")
    assert r.status_code == 400 and r.json()["error"]["code"] == 400
    r = await client.get(f"/admin/courier/messages/{uuid.uuid4()}")
    assert r.status_code == 404 and r.json()["error"]["status"] == "Not Found"


async def test_official_sdk_parses_the_listing(client: httpx.AsyncClient, store: SqlCourierStore) -> None:
    """ory-kratos-client 25.4.0 validates enums and required fields strictly (kratos-api.md §10)."""
    from ory_kratos_client.models.message import Message as SdkMessage

    [made] = await seed(store, 1)
    await store.claim_batch("w", limit=1, lease=timedelta(minutes=1))
    await store.mark_failed(made.id, "w", error="smtp down", retry_at=None)
    [body] = (await client.get("/admin/courier/messages")).json()
    parsed = SdkMessage.from_dict(body)
    assert parsed is not None and str(parsed.id) == str(made.id)
    assert parsed.status == "abandoned" and parsed.template_type == "login_code_valid"
    assert parsed.dispatches is not None and parsed.dispatches[0].status == "failed"

"""Small helpers for driving flows over HTTP in tests."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.public.conftest import PASSWORD

JSON = {"Accept": "application/json"}


def node_value(flow: dict[str, Any], name: str) -> Any:
    for node in flow["ui"]["nodes"]:
        if node["attributes"].get("name") == name:
            return node["attributes"].get("value")
    raise KeyError(name)


def message_ids(flow: dict[str, Any]) -> list[int]:
    ids = [m["id"] for m in flow["ui"].get("messages", [])]
    return ids + [m["id"] for n in flow["ui"]["nodes"] for m in n["messages"]]


async def browser_flow(client: httpx.AsyncClient, kind: str, query: str = "") -> dict[str, Any]:
    r = await client.get(f"/.auth/self-service/{kind}/browser{query}", headers=JSON)
    assert r.status_code == 200, r.text
    flow: dict[str, Any] = r.json()
    return flow


async def api_flow(client: httpx.AsyncClient, kind: str, **headers: str) -> dict[str, Any]:
    r = await client.get(f"/.auth/self-service/{kind}/api", headers=headers)
    assert r.status_code == 200, r.text
    flow: dict[str, Any] = r.json()
    return flow


async def register_browser(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, *, json_req: bool = True
) -> httpx.Response:
    flow = await browser_flow(client, "registration")
    body = {
        "method": "password",
        "csrf_token": node_value(flow, "csrf_token"),
        "traits.email": email,
        "password": password,
    }
    return await client.post(
        f"/.auth/self-service/registration?flow={flow['id']}", data=body, headers=JSON if json_req else {}
    )


async def login_browser(
    client: httpx.AsyncClient,
    identifier: str,
    password: str = PASSWORD,
    *,
    json_req: bool = True,
    query: str = "",
) -> httpx.Response:
    flow = await browser_flow(client, "login", query)
    body = {
        "method": "password",
        "csrf_token": node_value(flow, "csrf_token"),
        "identifier": identifier,
        "password": password,
    }
    return await client.post(
        f"/.auth/self-service/login?flow={flow['id']}", data=body, headers=JSON if json_req else {}
    )


async def register_api(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    flow = await api_flow(client, "registration")
    body = {"method": "password", "password": password, "traits": {"email": email}}
    return await client.post(f"/.auth/self-service/registration?flow={flow['id']}", json=body)


async def login_api(client: httpx.AsyncClient, identifier: str, password: str = PASSWORD) -> httpx.Response:
    flow = await api_flow(client, "login")
    body = {"method": "password", "identifier": identifier, "password": password}
    return await client.post(f"/.auth/self-service/login?flow={flow['id']}", json=body)

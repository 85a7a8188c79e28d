"""An admin app with the console, driven in process through httpx (the browser test is in e2e)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.app import Services, create_admin_app
from tests.conftest import make_config

KEY = "console-key-0123456789abcdef"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, html[:2000]
    return found.group(1)


@dataclass
class Console:
    client: httpx.AsyncClient
    services: Services
    app: Any

    async def sign_in(self, key: str = KEY, name: str = "Ada Admin") -> httpx.Response:
        page = await self.client.get("/console/login")
        form = {"csrf_token": csrf_of(page.text), "api_key": key, "name": name, "next": "/console"}
        return await self.client.post("/console/login", data=form)

    async def csrf(self, path: str = "/console") -> str:
        page = await self.client.get(path)
        assert page.status_code == 200, page.text[:500]
        return csrf_of(page.text)

    async def post(self, path: str, data: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return await self.client.post(path, data={"csrf_token": await self.csrf(), **(data or {})}, **kw)


MakeConsole = Callable[..., Awaitable[Console]]


@pytest.fixture
async def make_console(services_factory: Any, tmp_path: Path) -> AsyncIterator[MakeConsole]:
    clients: list[httpx.AsyncClient] = []

    async def factory(client_ip: str = "127.0.0.1", **overrides: Any) -> Console:
        serve = overrides.pop("serve", {"admin": {"api_key": KEY}})
        config = make_config(dsn=f"sqlite:///{tmp_path}/console-{len(clients)}.db", serve=serve, **overrides)
        services = await services_factory(config)
        app = create_admin_app(services, manage_lifespan=False)
        transport = httpx.ASGITransport(app=app, client=(client_ip, 50000))
        client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:4434")
        clients.append(client)
        return Console(client, services, app)

    yield factory
    for c in clients:
        await c.aclose()


@pytest.fixture
def audit(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    """The audit lines written so far, as their structured fields."""
    caplog.set_level(logging.INFO, logger="sidecar.console.audit")

    def lines() -> list[dict[str, Any]]:
        keys = ("actor", "actor_via", "action", "identity_id", "result", "detail", "client_ip")
        return [
            {k: getattr(r, k, None) for k in keys}
            for r in caplog.records
            if r.name == "sidecar.console.audit"
        ]

    return lines

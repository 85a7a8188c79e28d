"""A public + admin app on real stores (SQLite by default), driven in-process over httpx."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import make_config

BASE = "http://127.0.0.1:4433"
PUBLIC = BASE + "/.auth"
PASSWORD = "correct-Horse-battery-staple-42"


@dataclass
class Harness:
    services: Any
    client: httpx.AsyncClient
    admin: httpx.AsyncClient

    def new_client(self) -> httpx.AsyncClient:
        """Another browser: its own cookie jar."""
        return httpx.AsyncClient(transport=self.client._transport, base_url=BASE)


HarnessFactory = Callable[..., Awaitable[Harness]]


@contextlib.asynccontextmanager
async def harnesses(services_factory: Any, sqlite_dsn: str) -> AsyncIterator[HarnessFactory]:
    """Builds harnesses on demand; their clients are closed on exit (services by ``services_factory``)."""
    from sidecar.app import create_admin_app, create_public_app

    opened: list[httpx.AsyncClient] = []

    async def factory(*, redis_prefix: str | None = None, **overrides: Any) -> Harness:
        overrides.setdefault("dsn", sqlite_dsn)
        overrides.setdefault("dev", True)
        if redis_prefix is not None:
            # Sessions, flows and counters on Redis under a test-only prefix.
            from tests.conftest import REDIS_URL

            overrides["redis"] = {"url": REDIS_URL, "key_prefix": redis_prefix}
        overrides.setdefault(
            "selfservice",
            {"allowed_return_urls": ["http://127.0.0.1:4433/app", "https://app.example.test/"]},
        )
        services = await services_factory(make_config(**overrides))
        public = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_public_app(services, manage_lifespan=False)),
            base_url=BASE,
        )
        admin = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_admin_app(services, manage_lifespan=False)),
            base_url="http://127.0.0.1:4434",
        )
        opened.extend([public, admin])
        return Harness(services, public, admin)

    try:
        yield factory
    finally:
        for c in opened:
            await c.aclose()


@pytest.fixture
async def harness_factory(services_factory: Any, sqlite_dsn: str) -> AsyncIterator[HarnessFactory]:
    async with harnesses(services_factory, sqlite_dsn) as factory:
        yield factory


@pytest.fixture
async def harness(harness_factory: HarnessFactory) -> Harness:
    return await harness_factory()

"""The single wiring point: builds every service once from ``Config`` and mounts the two apps.

Construction is synchronous and connects to nothing (engines and clients are lazy); ``start``
runs migrations in dev mode and background tasks, ``stop`` closes pools. Each constructor gets
only the narrow protocols it uses.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.types import ASGIApp

from sidecar.api import respond
from sidecar.config.model import Config
from sidecar.hashing.hasher import PasswordHasher
from sidecar.identity.manager import IdentityManager
from sidecar.identity.store import IdentityStore
from sidecar.kv.store import KeyValueStore
from sidecar.schema.registry import SchemaRegistry
from sidecar.session.store import SessionStore
from sidecar.storage.sql.database import SqlDatabase

log = logging.getLogger("sidecar")


@dataclass
class Services:
    config: Config
    database: SqlDatabase
    identity_store: IdentityStore
    session_store: SessionStore
    kv: KeyValueStore
    hasher: PasswordHasher
    schemas: SchemaRegistry
    identities: IdentityManager
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _shutting_down: bool = False

    def readiness_checks(self) -> dict[str, Callable[[], Awaitable[None]]]:
        checks = {"database": self.database.ping}
        if self.config.redis is not None:
            checks["redis"] = self.kv.ping
        return checks

    def is_ready(self) -> bool:
        return not self._shutting_down

    def begin_shutdown(self) -> None:
        """Readiness turns false first, so load balancers drain us before we stop accepting."""
        self._shutting_down = True

    async def start(self) -> None:
        if self.config.dev:
            await self.database.migrate()
        await self.schemas.load()

    async def stop(self) -> None:
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:  # shutdown must go on even if one pool fails to close
                log.exception("error while closing a service")


def build_services(config: Config) -> Services:
    database = SqlDatabase(config.dsn)
    closers: list[Callable[[], Awaitable[None]]] = [database.close]
    session_store: SessionStore
    kv: KeyValueStore
    if config.redis is not None:
        from sidecar.storage.redis.backend import RedisBackend

        redis = RedisBackend(config.redis.url)
        session_store, kv = redis.sessions, redis.kv
        closers.append(redis.close)
    else:
        session_store, kv = database.sessions, database.kv
    hasher = PasswordHasher(config.hashers)
    closers.append(hasher.close)
    schemas = SchemaRegistry(config.identity, base_url=config.public_base_url)
    identities = IdentityManager(database.identities, schemas, hasher)
    return Services(
        config=config,
        database=database,
        identity_store=database.identities,
        session_store=session_store,
        kv=kv,
        hasher=hasher,
        schemas=schemas,
        identities=identities,
        _closers=closers,
    )


def _lifespan(services: Services) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    return lifespan


def create_admin_app(services: Services, *, manage_lifespan: bool = True) -> ASGIApp:
    from sidecar.api.admin.routes import admin_routes

    return Starlette(
        routes=admin_routes(services),
        exception_handlers=respond.EXCEPTION_HANDLERS,
        lifespan=_lifespan(services) if manage_lifespan else None,
    )


def create_public_app(services: Services, *, manage_lifespan: bool = True) -> ASGIApp:
    from starlette.routing import Mount

    from sidecar.api.public.routes import public_routes

    prefix = services.config.serve.public.prefix
    routes = public_routes(services)
    return Starlette(
        routes=[Mount(prefix, routes=routes)] if prefix else routes,
        exception_handlers=respond.EXCEPTION_HANDLERS,
        lifespan=_lifespan(services) if manage_lifespan else None,
    )

"""The single wiring point: builds every service once from ``Config`` and mounts the two apps.

Construction is synchronous and connects to nothing (engines and clients are lazy); ``start``
runs migrations in dev mode and background tasks, ``stop`` closes pools. Each constructor gets
only the narrow protocols it uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.types import ASGIApp

from sidecar.api import respond
from sidecar.config.model import Config
from sidecar.courier.service import Courier
from sidecar.courier.smtp import SmtpSender
from sidecar.courier.templates import Templates
from sidecar.courier.worker import CourierWorker
from sidecar.flows.service import SelfServiceFlows, build_flows
from sidecar.hashing.hasher import PasswordHasher
from sidecar.identity.manager import IdentityManager
from sidecar.identity.store import IdentityStore
from sidecar.kv.store import KeyValueStore
from sidecar.metrics import Metrics
from sidecar.rules.holder import RulesHolder
from sidecar.schema.registry import SchemaRegistry
from sidecar.session.invalidation import Invalidation, create_invalidation
from sidecar.session.manager import SessionManager, publish_to
from sidecar.session.resolver import SessionResolver
from sidecar.session.store import SessionStore
from sidecar.storage.monitor import StoreMonitor
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
    metrics: Metrics
    sessions: SessionManager
    selfservice: SelfServiceFlows
    resolver: SessionResolver
    invalidation: Invalidation
    courier: Courier
    courier_worker: CourierWorker | None
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    rules: RulesHolder = field(default_factory=lambda: RulesHolder([]))
    _shutting_down: bool = False
    _courier_task: asyncio.Task[None] | None = None
    _courier_stop: asyncio.Event = field(default_factory=asyncio.Event)
    _monitor_task: asyncio.Task[None] | None = None

    def readiness_checks(self) -> dict[str, Callable[[], Awaitable[None]]]:
        checks: dict[str, Callable[[], Awaitable[None]]] = {"database": self.database.ping}
        if self.config.redis is not None:
            checks["redis"] = self.kv.ping
        return checks

    def on_stop(self, close: Callable[[], Awaitable[None]]) -> None:
        """Run ``close`` at stop; closers run last-registered first, like nested context managers."""
        self._closers.append(close)

    def is_ready(self) -> bool:
        return not self._shutting_down

    def begin_shutdown(self) -> None:
        """Readiness turns false first, so load balancers drain us before we stop accepting."""
        self._shutting_down = True

    async def start(self) -> None:
        if self.config.dev:
            await self.database.migrate()
        await self.schemas.load()
        self._monitor_task = asyncio.create_task(StoreMonitor(self.readiness_checks()).run())
        if self.courier_worker is not None:
            self._courier_stop = asyncio.Event()
            self._courier_task = asyncio.create_task(self.courier_worker.run(self._courier_stop))

    async def stop(self) -> None:
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor_task
            self._monitor_task = None
        if self.courier_worker is not None and self._courier_task is not None:
            # Hand unsent claims back to the queue before the database pool closes.
            await self.courier_worker.stop()
            self._courier_stop.set()
            await self._courier_task
            self._courier_task = None
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:  # shutdown must go on even if one pool fails to close
                log.exception("error while closing a service")


def build_services(config: Config, *, courier_worker: bool = True) -> Services:
    database = SqlDatabase(config.dsn)
    closers: list[Callable[[], Awaitable[None]]] = [database.close]
    session_store: SessionStore
    kv: KeyValueStore
    redis_client = None
    if config.redis is not None:
        from sidecar.storage.redis.backend import RedisBackend

        redis = RedisBackend(config.redis.url, config.redis.key_prefix)
        session_store, kv, redis_client = redis.sessions, redis.kv, redis.client
        closers.append(redis.close)
    else:
        session_store, kv = database.sessions, database.kv
    hasher = PasswordHasher(config.hashers)
    closers.append(hasher.close)
    metrics = Metrics()
    metrics.track_hashing_queue(lambda: hasher.queue_depth)
    schemas = SchemaRegistry(config.identity, base_url=config.public_base_url)
    identities = IdentityManager(database.identities, schemas, hasher)
    sessions = SessionManager(session_store, config.session)
    courier = Courier(database.courier, Templates(config.courier.template_override_path))
    selfservice = build_flows(
        config, kv, identities, schemas, sessions, courier=courier, addresses=database.identities
    )
    if selfservice.oidc is not None:
        closers.append(selfservice.oidc.strategy.client.aclose)
    # The proxy's session cache and the revocations that clear it on every worker.
    resolver = SessionResolver(
        session_store, database.identities, ttl=config.session.cache_ttl, on_lookup=metrics.session_cache
    )
    redis_prefix = config.redis.key_prefix if config.redis else ""
    invalidation = create_invalidation(kv, redis_client, prefix=redis_prefix)
    sessions.set_on_revoke(publish_to(invalidation))

    async def courier_queue_depth() -> int:
        counts = await database.courier.count_by_status()
        return sum(n for status, n in counts.items() if status in ("queued", "processing"))

    metrics.track_courier_queue(courier_queue_depth)
    # Loaded by create_public_app; the admin API reads its coverage counts.
    rules = RulesHolder(config.rules, order=config.rules_order, reserved_prefix=config.serve.public.prefix)
    metrics.track_rule_matches(rules.matches_since_start)
    worker = (
        CourierWorker(database.courier, SmtpSender(config.courier.smtp), config.courier)
        if courier_worker
        else None
    )
    return Services(
        config=config,
        database=database,
        identity_store=database.identities,
        session_store=session_store,
        kv=kv,
        hasher=hasher,
        schemas=schemas,
        identities=identities,
        metrics=metrics,
        sessions=sessions,
        selfservice=selfservice,
        resolver=resolver,
        invalidation=invalidation,
        courier=courier,
        courier_worker=worker,
        _closers=closers,
        rules=rules,
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
    from sidecar.api.admin.auth import AdminKey
    from sidecar.api.admin.routes import admin_routes

    app: ASGIApp = Starlette(
        routes=admin_routes(services),
        exception_handlers=respond.EXCEPTION_HANDLERS,
        lifespan=_lifespan(services) if manage_lifespan else None,
    )
    key = services.config.serve.admin.api_key
    return AdminKey(app, key) if key else app


def create_public_app(services: Services, *, manage_lifespan: bool = True, gateway: bool = True) -> ASGIApp:
    """The public listener: the proxy gateway around the Starlette app (``gateway=False``: the plain app)."""
    from starlette.routing import Mount

    from sidecar.api.public.routes import public_routes
    from sidecar.strategies.oidc.providers import form_action_origins as oidc_origins
    from sidecar.ui.api_client import PublicApiClient, in_process
    from sidecar.ui.pages import page_routes

    config = services.config
    prefix = config.serve.public.prefix
    # The built-in pages read flows through the public API, in process, exactly as an external
    # UI would over the network: one contract, and the pages never reach around it.
    pages_api = PublicApiClient(config.public_base_url, transport=in_process(lambda: app))
    services.on_stop(pages_api.aclose)
    routes = [
        *public_routes(services),
        *page_routes(
            fetch_flow=pages_api.fetch_flow,
            fetch_error=pages_api.fetch_error,
            whoami=pages_api.whoami,
            logout_url=pages_api.logout_url,
            public_base_url=config.public_base_url,
            selfservice=config.selfservice,
            form_action_origins=oidc_origins(
                config.selfservice.methods.oidc.enabled, config.selfservice.methods.oidc.config.providers
            ),
        ),
    ]
    app: ASGIApp = Starlette(
        routes=[Mount(prefix, routes=routes)] if prefix else routes,
        exception_handlers=respond.EXCEPTION_HANDLERS,
        lifespan=_lifespan(services) if manage_lifespan else None,
    )
    cors = config.serve.public.cors
    if cors.enabled:
        # Only the API under the prefix: proxied app traffic keeps whatever CORS the app answers.
        from starlette.middleware.cors import CORSMiddleware

        exact, pattern = cors_origins(cors.allowed_origins)
        app = CORSMiddleware(
            app,
            allow_origins=exact,
            allow_origin_regex=pattern,
            allow_methods=cors.allowed_methods,
            allow_headers=cors.allowed_headers,
            expose_headers=cors.exposed_headers,
            allow_credentials=cors.allow_credentials,
            max_age=cors.max_age or 600,
        )
    if not gateway:
        return app
    from sidecar.proxy.gateway import build_gateway

    services.rules.load()  # a bad rule file (RulesError) fails the start here
    public = build_gateway(
        services.config,
        services.resolver,
        app,
        rules=services.rules,
        invalidation=services.invalidation,
        metrics=services.metrics,
    )
    services.on_stop(public.stop)  # registered last, so stopped before the pools it uses
    return public


def cors_origins(origins: list[str]) -> tuple[list[str], str | None]:
    """Exact origins, and one regex for Kratos-style wildcards (``https://*.example.com``).

    A ``*`` inside an origin stands for one DNS label, never a dot or another scheme, so
    ``https://*.example.com`` cannot match ``https://evil.test/.example.com``.
    """
    exact = [o for o in origins if o == "*" or "*" not in o]
    wild = [re.escape(o).replace(r"\*", "[A-Za-z0-9-]+") for o in origins if o != "*" and "*" in o]
    return exact, ("^(?:" + "|".join(wild) + ")$") if wild else None

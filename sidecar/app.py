"""The composition root: the one place that builds every service from ``Config`` and the two apps.

``build_services`` constructs everything in dependency order and hands each constructor only what
it uses, so no object is changed after it was built: stores → hasher → metrics → schemas →
session cache → revocations → sessions → identities (whose changes the sessions follow) →
courier → strategies → flows. ``create_public_app`` and ``create_admin_app`` then give each route
builder the few collaborators it calls, and ``wrap_apps`` puts both inside the access log.

Construction is synchronous and connects to nothing (engines and clients are lazy); ``start``
runs migrations in dev mode and background tasks, ``stop`` closes pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from sidecar.admission import Admission
from sidecar.api import respond
from sidecar.api.admin.auth import AdminKey
from sidecar.api.admin.courier import CourierPageTokens
from sidecar.api.admin.identities import IdentityHandlers
from sidecar.api.admin.organizations import OrganizationHandlers
from sidecar.api.admin.routes import admin_routes
from sidecar.api.admin.scim_tokens import ScimTokenHandlers
from sidecar.api.cors_log import CorsDebugLog
from sidecar.api.health import health_routes
from sidecar.api.languages import ApiLanguages
from sidecar.api.origin import RequestAudit
from sidecar.api.pagination import PageTokens, pagination_secret
from sidecar.api.public.errors_flow import ErrorFlows
from sidecar.api.public.flow_http import HttpContext
from sidecar.api.public.routes import public_routes
from sidecar.api.public.selfservice import selfservice_routes
from sidecar.api.scim.routes import LazyScimEndpoint, ScimServices, scim_routes
from sidecar.audit import AuditLog
from sidecar.config.model import Config, RateLimit
from sidecar.console.audit import Audit
from sidecar.console.auth import ConsoleAuth
from sidecar.console.courier import CourierPages
from sidecar.console.identities import IdentityPages
from sidecar.console.organizations import OrganizationPages, SsoConnection
from sidecar.console.overview import Overview
from sidecar.console.pages import PREFIX as CONSOLE_PREFIX
from sidecar.console.pages import Pages
from sidecar.console.recovery import RecoverySection
from sidecar.console.routes import console_routes
from sidecar.console.rules import RulesPages
from sidecar.console.sessions import SessionSection
from sidecar.console.signin import SignIn
from sidecar.console.webhooks import WebhookPages
from sidecar.courier.http import ChannelRouter, HttpChannel
from sidecar.courier.sender import Sender
from sidecar.courier.service import Courier
from sidecar.courier.smtp import SmtpSender
from sidecar.courier.store import CourierStore
from sidecar.courier.templates import Templates
from sidecar.courier.worker import CourierWorker
from sidecar.flows.identifier_first import IdentifierFirst, find_by_any_identifier
from sidecar.flows.login import LoginFlows
from sidecar.flows.logout import LogoutFlows
from sidecar.flows.recovery import RecoveryFlows, SettingsAfterRecovery
from sidecar.flows.registration import RegistrationFlows
from sidecar.flows.service import SelfServiceFlows
from sidecar.flows.settings import SettingsFlows
from sidecar.flows.store import FlowStore
from sidecar.flows.verification import VerificationFlows
from sidecar.flows.web_hooks import Dispatcher, WebHookServices, identity_updater
from sidecar.hashing.hasher import PasswordHasher
from sidecar.i18n import Catalogs
from sidecar.identity.addresses import ObservedAddresses
from sidecar.identity.identity_json import identity_to_json
from sidecar.identity.manager import IdentityManager
from sidecar.identity.model import Identity
from sidecar.identity.store import IdentityStore
from sidecar.kv.store import KeyValueStore
from sidecar.line_writer import BufferedLineWriter
from sidecar.logs import AccessLog, admin_route_classifier, public_route_classifier
from sidecar.metrics import Metrics
from sidecar.organization.manager import OrganizationManager
from sidecar.proxy.access import Access
from sidecar.proxy.clients import LazyWebSockets, create_upstream
from sidecar.proxy.decisions import DecisionEndpoints
from sidecar.proxy.deny import Denials
from sidecar.proxy.fast import FastProxy
from sidecar.proxy.gateway import Gateway
from sidecar.proxy.http1 import Http1Client
from sidecar.proxy.identity_headers import IdentityHeaders
from sidecar.proxy.prefix import OwnPaths
from sidecar.proxy.upstream import Upstream, WebSocketConnector
from sidecar.proxy.websocket import WebSocketProxy
from sidecar.proxy.whoami import WhoamiEndpoint
from sidecar.rules.holder import RulesHolder
from sidecar.schema.registry import SchemaRegistry
from sidecar.security.breaches import BreachCheck
from sidecar.security.jsonnet import JsonnetSandbox
from sidecar.security.jwt import JwtSigner
from sidecar.security.ratelimit import RateLimiter
from sidecar.security.throttle import Throttle
from sidecar.security.trusted_proxies import TrustedProxies
from sidecar.session.aal import Assurance
from sidecar.session.invalidation import Invalidation, create_invalidation
from sidecar.session.manager import SessionManager
from sidecar.session.resolver import SessionResolver
from sidecar.session.store import SessionStore
from sidecar.session.token_exchange import TokenExchanges
from sidecar.session.tokenizer import SessionTokenizer
from sidecar.session.whoami import Whoami
from sidecar.storage.monitor import StoreMonitor
from sidecar.storage.sql.database import SqlDatabase
from sidecar.strategies.address_challenge import AddressDirectory, ChallengeDeps, Mailer
from sidecar.strategies.deps import StrategyDeps
from sidecar.strategies.federation.continuation import SignInContinuation
from sidecar.strategies.federation.routing import OrganizationRouter, OrganizationsByDomain
from sidecar.strategies.oidc.callback import oidc_callbacks
from sidecar.strategies.oidc.providers import form_action_origins as oidc_origins
from sidecar.strategies.registry import assurance as strategy_assurance
from sidecar.strategies.registry import build_registry
from sidecar.strategies.saml.binding import form_action_origins as saml_origins
from sidecar.tracing import Tracing
from sidecar.ui.api_client import PublicApiClient, in_process
from sidecar.ui.pages import page_routes
from sidecar.webhooks.audit_forward import OutboxAuditForwarder
from sidecar.webhooks.outbox import OutboxDispatcher, OutboxPolicy, OutboxWorker
from sidecar.webhooks.runner import DEFAULT_HEADER_ALLOWLIST, WebHookRunner

if TYPE_CHECKING:
    from sidecar.strategies.saml.acs import GateObserver
    from sidecar.strategies.saml.connections import SamlConnections

log = logging.getLogger("sidecar")

Closer = Callable[[], Awaitable[None]]


@dataclass
class Services:
    """Every long-lived object of one worker, built once by ``build_services``."""

    config: Config
    database: SqlDatabase
    identity_store: IdentityStore
    session_store: SessionStore
    kv: KeyValueStore
    hasher: PasswordHasher
    schemas: SchemaRegistry
    identities: IdentityManager
    organizations: OrganizationManager
    assurance: Assurance
    metrics: Metrics
    sessions: SessionManager
    selfservice: SelfServiceFlows
    resolver: SessionResolver
    invalidation: Invalidation
    courier: Courier
    courier_worker: CourierWorker | None
    outbox_worker: OutboxWorker | None
    """Sends the web hook outbox (only when a ``web_hook`` has ``response.ignore`` or
    ``log.audit.webhook`` is set)."""
    readiness_checks: dict[str, Callable[[], Awaitable[None]]]
    monitor: StoreMonitor
    """Logs each store's outages and recoveries (``readiness_checks``, run in the background)."""
    rules: RulesHolder
    """The access rules; loaded by ``create_public_app``, counted per rule for coverage."""
    tracing: Tracing
    """OpenTelemetry spans (``tracing``); off unless ``provider: otel``."""
    audit: AuditLog
    """Security audit events (``log.audit``); flows and the session and admin endpoints write them."""
    tokenizer: SessionTokenizer
    """``/sessions/whoami?tokenize_as=``: the session as a JWT (``session.whoami.tokenizer``)."""
    catalogs: Catalogs
    """The gettext catalogs of pages, emails and (``translate_api``) API texts."""
    jsonnet: JsonnetSandbox
    """This process's Jsonnet pool: every body, mapper and tokenizer evaluation runs on it."""
    _closers: list[Closer] = field(default_factory=list)
    _shutting_down: bool = False
    _courier_task: asyncio.Task[None] | None = None
    _courier_stop: asyncio.Event = field(default_factory=asyncio.Event)
    _outbox_task: asyncio.Task[None] | None = None
    _monitor_task: asyncio.Task[None] | None = None

    def on_stop(self, close: Closer) -> None:
        """Run ``close`` at stop; closers run last-registered first, like nested context managers."""
        self._closers.append(close)

    def is_ready(self) -> bool:
        return not self._shutting_down

    def begin_shutdown(self) -> None:
        """Readiness turns false first, so load balancers drain us before we stop accepting."""
        self._shutting_down = True

    async def start(self) -> None:
        self.audit.open()  # a path that cannot be written fails the start, not the first sign-in
        if self.config.dev:
            await self.database.migrate()
        await self.schemas.load()
        self._monitor_task = asyncio.create_task(self.monitor.run())
        if self.courier_worker is not None:
            self._courier_stop = asyncio.Event()
            self._courier_task = asyncio.create_task(self.courier_worker.run(self._courier_stop))
        if self.outbox_worker is not None:
            self._outbox_task = asyncio.create_task(self.outbox_worker.run(self._courier_stop))

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
        if self.outbox_worker is not None and self._outbox_task is not None:
            self._courier_stop.set()
            await self._outbox_task
            await self.outbox_worker.stop()
            self._outbox_task = None
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:  # shutdown must go on even if one pool fails to close
                log.exception("error while closing a service")
        self.audit.close()


def send_limits(config: Config) -> RateLimit:
    """Mail-bombing limits: messages per address and per client IP in the rate-limit window."""
    rl = config.security.rate_limit
    return rl.model_copy(update={"per_identifier": rl.send_per_address, "per_ip": rl.send_per_ip})


def saml_limits(config: Config) -> RateLimit:
    """``selfservice.methods.saml.config.rate_limit`` as the per-IP counters of a ``RateLimiter``."""
    limit = config.selfservice.methods.saml.config.rate_limit
    return RateLimit(enabled=limit.enabled, per_ip=limit.per_ip, window=limit.window)


def saml_gate(config: Config) -> Admission:
    """The bound on concurrent SAML signature checks (one per process)."""
    method = config.selfservice.methods.saml.config
    return Admission(
        method.max_concurrent_verifications,
        method.max_queued_verifications,
        refusal="Too many single sign-on answers are being checked right now, please retry in a moment",
    )


def _courier_queue_depth(store: CourierStore) -> Callable[[], Awaitable[int]]:
    async def depth() -> int:
        counts = await store.count_by_status()
        return sum(n for status, n in counts.items() if status in ("queued", "processing"))

    return depth


def outbox_policy(config: Config) -> OutboxPolicy:
    hooks = config.webhooks
    secret = hooks.signing_secret
    if secret is None:  # only in --dev (config validation): sign with the cookie secret
        log.warning(
            "dev mode: webhooks.signing_secret is not set; outbox deliveries are signed with secrets.cookie"
        )
        secret = (config.secrets.cookie or config.secrets.default)[0]
    return OutboxPolicy(
        signing_secret=secret,
        max_attempts=hooks.max_attempts,
        initial_backoff=hooks.initial_backoff.total_seconds(),
        max_backoff=hooks.max_backoff.total_seconds(),
        interval=hooks.worker_interval.total_seconds(),
        lease=hooks.lease.total_seconds(),
    )


def web_hook_header_allowlist(config: Config) -> tuple[str, ...]:
    """Kratos' ``clients.web_hook.header_allowlist``: request headers web hooks may see."""
    section = (config.clients.model_extra or {}).get("web_hook") or {}
    allow = section.get("header_allowlist") if isinstance(section, dict) else None
    return tuple(str(h) for h in allow) if isinstance(allow, list) else DEFAULT_HEADER_ALLOWLIST


def build_flows(
    config: Config,
    kv: KeyValueStore,
    identities: IdentityManager,
    schemas: SchemaRegistry,
    sessions: SessionManager,
    assurance: Assurance,
    *,
    courier: Mailer | None = None,
    addresses: AddressDirectory | None = None,
    audit: AuditLog | None = None,
    dispatcher: Dispatcher | None = None,
    organizations: OrganizationsByDomain | None = None,
    tracing: Tracing | None = None,
    saml_admission: Admission | None = None,
    saml_observer: GateObserver | None = None,
    sandbox: JsonnetSandbox | None = None,
) -> tuple[SelfServiceFlows, list[Closer]]:
    """The strategies, then the flows in the order they need each other; and what to close."""
    store = FlowStore(kv)
    hooks_client = httpx.AsyncClient(follow_redirects=False)
    closers_first: list[Closer] = [hooks_client.aclose]
    if sandbox is None:
        sandbox = JsonnetSandbox()
        closers_first.append(sandbox.close)
    runner = WebHookRunner(
        hooks_client, sandbox, header_allowlist=web_hook_header_allowlist(config), tracing=tracing
    )
    if dispatcher is None and config.fire_and_forget_hooks():
        raise ValueError("fire-and-forget web hooks need the outbox dispatcher")
    web_hooks = WebHookServices(runner, dispatcher)
    throttle = Throttle(kv, config.security.rate_limit)
    challenge = None
    if courier is not None and addresses is not None:
        challenge = ChallengeDeps(addresses, courier, kv, RateLimiter(kv, send_limits(config)))
    closers: list[Closer] = closers_first
    password = config.selfservice.methods.password
    breaches = None
    if password.enabled and password.config.haveibeenpwned_enabled:
        # Kratos' resilient client: a 1 s connection timeout; the answer is small.
        client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=1.0), follow_redirects=False)
        closers.append(client.aclose)
        breaches = BreachCheck(password.config, client)
    registry = build_registry(
        StrategyDeps(
            config,
            identities,
            schemas,
            throttle,
            kv=kv,
            jsonnet=sandbox,
            challenge=challenge,
            breaches=breaches,
        )
    )
    audit = audit or AuditLog.off()
    verification = VerificationFlows(
        config, store, registry.verification, kv=kv, audit=audit, web_hooks=web_hooks
    )
    registration = RegistrationFlows(
        config,
        store,
        registry.registration,
        sessions,
        schemas,
        after_registration=verification.after_registration,
        discard=identities.delete,
        audit=audit,
        web_hooks=web_hooks,
        update=identity_updater(identities),
    )
    settings = SettingsFlows(
        config,
        store,
        registry.settings,
        sessions,
        assurance,
        identities.get,
        schemas,
        audit=audit,
        web_hooks=web_hooks,
        update=identity_updater(identities),
    )
    recovery = RecoveryFlows(
        config,
        store,
        registry.recovery,
        sessions=sessions,
        settings=SettingsAfterRecovery(settings),
        kv=kv,
        audit=audit,
        web_hooks=web_hooks,
    )
    oidc = registry.oidc
    idfirst = None
    if config.selfservice.flows.login.style == "identifier_first":
        mitigate = config.security.account_enumeration.mitigate

        async def find_identity(identifier: str) -> Identity | None:
            return await find_by_any_identifier(identifier, identities.find_by_credential)

        idfirst = IdentifierFirst(schemas, find_identity, mitigate=mitigate)
    saml = registry.saml
    starts = {
        **(saml.sso_starts() if saml is not None else {}),
        **(oidc.signin.sso_starts() if oidc is not None else {}),  # OIDC first where both exist
    }
    sso = (
        OrganizationRouter(organizations, config.public_base_url, starts)
        if starts and organizations is not None
        else None
    )
    login = LoginFlows(
        config,
        store,
        registry.login,
        sessions,
        assurance,
        identities.get,
        audit=audit,
        identifier_first=idfirst,
        web_hooks=web_hooks,
        verify=verification.after_registration,
        sso=sso,
    )
    # Kratos keeps an exchanger until its cleanup; here it lives as long as the longer flow.
    flows_config = config.selfservice.flows
    exchanges = TokenExchanges(kv, max(flows_config.login.lifespan, flows_config.registration.lifespan))
    # Where an OIDC callback or a SAML assertion continues: one for both protocols.
    continuation = SignInContinuation(
        store,
        login,
        registration,
        settings,
        base_url=config.public_base_url,
        registration_enabled=config.selfservice.flows.registration.enabled,
    )
    callbacks = oidc_callbacks(oidc, kv, continuation, exchanges) if oidc is not None else None
    saml_endpoints = None
    if saml is not None:
        # Here, not at the top: it imports pysaml2 (~0.5 s), loaded only with SAML on (registry).
        from sidecar.strategies.saml.acs import SamlEndpoints

        saml_endpoints = SamlEndpoints(
            saml,
            continuation,
            sessions,
            identities.get,
            clock_skew=config.selfservice.methods.saml.config.clock_skew,
            gate=saml_admission or saml_gate(config),
            limiter=RateLimiter(kv, saml_limits(config)),
            observer=saml_observer,
        )
        closers.append(saml.connections.aclose)
    flows = SelfServiceFlows(
        login=login,
        registration=registration,
        logout=LogoutFlows(config, sessions, audit=audit, single_logout=saml_endpoints),
        throttle=throttle,
        recovery=recovery,
        verification=verification,
        settings=settings,
        oidc=callbacks,
        exchanges=exchanges,
        saml=saml_endpoints,
    )
    return flows, closers + ([oidc.client.aclose] if oidc is not None else [])


def courier_sender(config: Config, sandbox: JsonnetSandbox) -> tuple[Sender, httpx.AsyncClient | None]:
    """Emails by SMTP, or by HTTP with ``courier.delivery_strategy: http``; text messages through
    the ``sms`` channel of ``courier.channels`` (Kratos ``courier/courier.go`` ``channels``)."""
    courier = config.courier
    sms = courier.channel("sms")
    if courier.delivery_strategy == "smtp" and sms is None:
        return SmtpSender(courier.smtp), None
    # Kratos' courier HTTP client; the worker's send timeout bounds each request too.
    client = httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0), follow_redirects=False)
    channels: dict[str, Sender] = {}
    http_mail = courier.http.request_config
    if courier.delivery_strategy == "http" and http_mail is not None:
        channels["email"] = HttpChannel("email", http_mail, client, sandbox)
    else:
        channels["email"] = SmtpSender(courier.smtp)
    if sms is not None:
        channels["sms"] = HttpChannel("sms", sms.request_config, client, sandbox)
    return ChannelRouter(channels), client


def load_catalogs(config: Config) -> Catalogs:
    """The built-in catalogs plus ``selfservice.languages.catalog_dir``; an unknown default refused."""
    languages = config.selfservice.languages
    if languages.catalog_dir and not Path(languages.catalog_dir).is_dir():
        raise ValueError(f"selfservice.languages.catalog_dir: {languages.catalog_dir} is not a directory")
    catalogs = Catalogs(languages.catalog_dir)
    if languages.default not in catalogs.languages:
        raise ValueError(
            f"selfservice.languages.default: no catalog {languages.default!r} "
            f"(available: {', '.join(catalogs.languages)})"
        )
    return catalogs


def build_services(config: Config, *, courier_worker: bool = True) -> Services:
    tracing = Tracing(config.tracing)
    database = SqlDatabase(config.dsn)
    # Closers run last-registered first: the exporter flushes after everything else has stopped.
    closers: list[Closer] = [tracing.shutdown, database.close]
    readiness: dict[str, Callable[[], Awaitable[None]]] = {"database": database.ping}
    session_store: SessionStore
    kv: KeyValueStore
    redis_client = None
    if config.redis is not None:
        # Here, not at the top: redis-py costs ~0.2 s of imports, for sessions in Redis only.
        from sidecar.storage.redis.backend import RedisBackend

        redis = RedisBackend(config.redis)
        session_store, kv, redis_client = redis.sessions, redis.kv, redis.channel
        closers.append(redis.close)
        readiness["redis"] = kv.ping
    else:
        session_store, kv = database.sessions, database.kv
    catalogs = load_catalogs(config)
    # One pool of Jsonnet sandbox processes for this server process: web hook and courier bodies,
    # the OIDC and SAML claims mappers, the session tokenizer. Started lazily, ended at shutdown.
    sandbox = JsonnetSandbox()
    closers.append(sandbox.close)
    hasher = PasswordHasher(config.hashers, tracing=tracing)
    closers.append(hasher.close)
    # Loaded by create_public_app (a bad rule file fails the start there); the admin API and the
    # metrics read its coverage counts.
    rules = RulesHolder(config.rules, order=config.rules_order, reserved_prefix=config.serve.public.prefix)
    saml_admission = saml_gate(config)
    metrics = Metrics(
        hashing_queue=lambda: hasher.queue_depth,
        saml_queue=lambda: saml_admission.queue_depth,
        courier_queue=_courier_queue_depth(database.courier),
        rule_matches=rules.matches_since_start,
        jsonnet=sandbox,
    )
    closers.append(metrics.aclose)  # the last fold of this process's counts (multi-process mode)
    schemas = SchemaRegistry(config.identity, base_url=config.public_base_url)
    assurance = strategy_assurance()
    # The proxy's session cache, and the revocations that clear it in every worker.
    resolver = SessionResolver(
        session_store,
        database.identities,
        ttl=config.session.cache_ttl,
        on_lookup=metrics.session_cache,
        assurance=assurance,
        tracing=tracing,
        organizations=database.organizations,
    )
    invalidation = create_invalidation(
        kv, resolver, redis_client, prefix=config.redis.key_prefix if config.redis else ""
    )
    sessions = SessionManager(session_store, config.session, revocations=invalidation)
    argon2 = config.hashers.argon2
    identities = IdentityManager(
        database.identities,
        schemas,
        hasher,
        observer=sessions,
        # Only when configured: by default the dummy hash already takes as long as a real check.
        failed_check_delay=(
            (argon2.expected_duration.total_seconds(), argon2.expected_deviation.total_seconds())
            if {"expected_duration", "expected_deviation"} & argon2.model_fields_set
            else None
        ),
        login_hints=config.selfservice.flows.registration.login_hints,
        tracing=tracing,
        organizations=database.organizations,
    )
    organizations = OrganizationManager(database.organizations)
    courier = Courier(
        database.courier,
        Templates(
            config.courier.template_override_path,
            catalogs=catalogs,
            default_language=config.selfservice.languages.default,
            identity_field=config.selfservice.languages.identity_field,
        ),
    )
    audit_hook = config.log.audit.webhook
    forwarder = None
    if audit_hook is not None and config.log.audit.enabled:
        forwarder = OutboxAuditForwarder(
            database.outbox,
            audit_hook.url,
            headers=audit_hook.headers,
            events=audit_hook.events,
            timeout=audit_hook.timeout.total_seconds(),
        )
    audit = AuditLog(config.log.audit.path if config.log.audit.enabled else None, forwarder=forwarder)
    selfservice, flow_closers = build_flows(
        config,
        kv,
        identities,
        schemas,
        sessions,
        assurance,
        courier=courier,
        addresses=ObservedAddresses(database.identities, sessions),
        audit=audit,
        dispatcher=OutboxDispatcher(database.outbox),
        organizations=organizations,
        tracing=tracing,
        saml_admission=saml_admission,
        saml_observer=metrics,
        sandbox=sandbox,
    )
    closers += flow_closers
    if forwarder is not None:
        closers.append(forwarder.drain)  # closed in reverse: rows still being written, then the pool
    outbox_worker = None
    if courier_worker and (config.fire_and_forget_hooks() or forwarder is not None):
        outbox_client = httpx.AsyncClient(follow_redirects=False)
        closers.append(outbox_client.aclose)
        outbox_worker = OutboxWorker(
            database.outbox,
            WebHookRunner(outbox_client, sandbox, tracing=tracing),
            outbox_policy(config),
            audit=audit,
        )
    worker = None
    if courier_worker:
        sender, courier_client = courier_sender(config, sandbox)
        if courier_client is not None:
            closers.append(courier_client.aclose)
        worker = CourierWorker(database.courier, sender, config.courier, tracing=tracing)
    return Services(
        catalogs=catalogs,
        config=config,
        database=database,
        identity_store=database.identities,
        session_store=session_store,
        kv=kv,
        hasher=hasher,
        schemas=schemas,
        identities=identities,
        organizations=organizations,
        assurance=assurance,
        metrics=metrics,
        sessions=sessions,
        selfservice=selfservice,
        resolver=resolver,
        invalidation=invalidation,
        courier=courier,
        courier_worker=worker,
        outbox_worker=outbox_worker,
        readiness_checks=readiness,
        monitor=StoreMonitor(readiness, on_check=metrics.store_up),
        _closers=closers,
        rules=rules,
        audit=audit,
        tracing=tracing,
        tokenizer=SessionTokenizer(
            config.session.whoami.tokenizer.templates, issuer=config.public_base_url, sandbox=sandbox
        ),
        jsonnet=sandbox,
    )


# --- the two ASGI apps ----------------------------------------------------------------------------


def _lifespan(services: Services) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    return lifespan


def _health(services: Services) -> list[Route]:
    return health_routes(services.readiness_checks, ready=services.is_ready)


def create_admin_app(services: Services, *, manage_lifespan: bool = True) -> ASGIApp:
    config = services.config
    schemas = services.schemas

    audit = RequestAudit(services.audit, TrustedProxies.parse(config.serve.public.trusted_proxies))

    def admin_json(identity: Identity) -> dict[str, Any]:
        return identity_to_json(identity, schema_url=schemas.schema_url(identity.schema_id), admin=True)

    routes: list[BaseRoute] = [
        *admin_routes(
            identities=IdentityHandlers(
                services.identities,
                services.identity_store,
                schemas,
                PageTokens.from_config(config, "identities"),
                config.serve.admin.max_body_size,
                audit,
            ),
            organizations=OrganizationHandlers(
                services.organizations,
                PageTokens.from_config(config, "organizations"),
                config.serve.admin.max_body_size,
            ),
            scim_tokens=ScimTokenHandlers(
                services.organizations, services.database.scim, config.public_base_url
            ),
            sessions=services.sessions,
            find_identity=services.identity_store.get,
            identity_json=admin_json,
            session_tokens=PageTokens.from_config(config, "admin-sessions"),
            recovery=services.selfservice.recovery,
            courier_store=services.database.courier,
            courier_secret=pagination_secret(config),
            metrics=services.metrics,
            rules=services.rules,
            health=_health(services),
            admin_base_url=config.admin_base_url,
            public_base_url=config.public_base_url,
            max_body=config.serve.admin.max_body_size,
            audit=audit,
            outbox=services.database.outbox,
            faster_session_extend=config.feature_flags.faster_session_extend,
            saml_connections=_saml_connections(services.selfservice),
        )
    ]
    console = config.serve.admin.console
    if console.enabled:
        routes += build_console(services)
    app: ASGIApp = Starlette(
        routes=routes,
        exception_handlers=respond.EXCEPTION_HANDLERS,
        lifespan=_lifespan(services) if manage_lifespan else None,
    )
    key = config.serve.admin.api_key
    return AdminKey(app, key, own_sign_in=CONSOLE_PREFIX if console.enabled else None) if key else app


def _saml_connections(flows: SelfServiceFlows) -> SamlConnections | None:
    """The connections behind the SAML endpoints; None with SAML off."""
    if flows.saml is None:
        return None
    # Loaded already (SAML is on); imported here so that pysaml2 stays out when it is off.
    from sidecar.strategies.saml.acs import SamlEndpoints

    return flows.saml.connections if isinstance(flows.saml, SamlEndpoints) else None


def build_console(services: Services) -> list[BaseRoute]:
    """The admin console's routes (``/console``), over the same services as the admin API."""
    config = services.config
    admin = config.serve.admin
    auth = ConsoleAuth(services.kv, admin.api_key, admin.console.session_lifespan)
    # The admin listener trusts no forwarding header: the peer is the client (as for the admin API).
    security = RequestAudit(services.audit, TrustedProxies.parse([]))
    # The console speaks the self-service pages' languages, chosen the same way (selfservice.languages).
    pages = Pages(
        auth,
        Audit(security),
        admin.max_body_size,
        catalogs=services.catalogs,
        languages=config.selfservice.languages,
    )
    sessions = SessionSection(pages, services.sessions)
    flows = services.selfservice.recovery
    recovery = (
        RecoverySection(pages, flows, services.identities, config.selfservice, config.public_base_url)
        if flows is not None
        else None
    )
    identities = IdentityPages(
        pages,
        services.identities,
        services.identity_store,
        services.schemas,
        PageTokens.from_config(config, "console-identities"),
        admin.console.page_size,
        extras=[sessions, recovery] if recovery is not None else [sessions],
    )
    courier_store = services.database.courier
    return console_routes(
        pages,
        signin=SignIn(pages, auth),
        overview=Overview(pages, services.identity_store, courier_store, services.metrics),
        identities=identities,
        sessions=sessions,
        recovery=recovery,
        courier=CourierPages(
            pages, courier_store, CourierPageTokens(pagination_secret(config)), admin.console.page_size
        ),
        webhooks=WebhookPages(pages, services.database.outbox, admin.console.page_size),
        rules=RulesPages(
            pages,
            services.rules,
            services.metrics,
            services.identity_store,
            config.session.whoami.required_aal,
        ),
        organizations=OrganizationPages(
            pages,
            services.organizations,
            services.identity_store,
            services.database.scim,
            PageTokens.from_config(config, "console-organizations"),
            admin.console.page_size,
            public_base_url=config.public_base_url,
            sso=_sso_connections(config),
        ),
    )


def _sso_connections(config: Config) -> dict[str, list[SsoConnection]]:
    """The configured single sign-on connections by organization id (lower-case)."""
    found: dict[str, list[SsoConnection]] = {}
    for p in config.selfservice.methods.oidc.config.providers:
        if p.organization_id:
            connection = SsoConnection("oidc", p.id, p.label or p.id)
            found.setdefault(p.organization_id.lower(), []).append(connection)
    for s in config.selfservice.methods.saml.config.providers:
        if s.organization_id:
            found.setdefault(s.organization_id.lower(), []).append(
                SsoConnection("saml", s.id, s.label or s.id)
            )
    return found


def create_public_app(services: Services, *, manage_lifespan: bool = True, gateway: bool = True) -> ASGIApp:
    """The public listener: the proxy gateway around the Starlette app (``gateway=False``: the plain app)."""

    config = services.config
    prefix = config.serve.public.prefix
    schemas = services.schemas

    def public_identity(identity: Identity) -> dict[str, Any]:
        return identity_to_json(identity, schema_url=schemas.schema_url(identity.schema_id), admin=False)

    ctx = HttpContext(
        config,
        services.sessions,
        TrustedProxies.parse(config.serve.public.trusted_proxies),
        public_identity,
        services.metrics,
        services.audit,
    )
    whoami = Whoami(
        services.resolver,
        required_aal=config.session.whoami.required_aal,
        public_base_url=config.public_base_url,
        public_identity=public_identity,
    )
    selfservice = selfservice_routes(
        ctx,
        services.selfservice,
        ErrorFlows(config, services.kv),
        services.identities.get,
        whoami,
        PageTokens.from_config(config, "sessions"),
        config.serve.public.max_body_size,
        services.tokenizer,
    )
    # The built-in pages read flows through the public API, in process, exactly as an external
    # UI would over the network: one contract, and the pages never reach around it.
    pages_api = PublicApiClient(config.public_base_url, transport=in_process(lambda: app))
    services.on_stop(pages_api.aclose)
    scim = LazyScimEndpoint(
        ScimServices(
            find_organization=services.organizations.find,
            organization=services.organizations.get,
            store=services.database.scim,
            identities=services.identities,
            sessions=services.sessions,
            config=config.scim,
            username_trait=lambda: "username" in schemas.default().trait_names,
            public_base_url=config.public_base_url,
            secret=pagination_secret(config),
            max_body=config.serve.public.max_body_size,
        )
    )
    routes = [
        *scim_routes(scim),
        *public_routes(
            health=_health(services),
            schemas=schemas,
            selfservice=selfservice,
            admin_base_url=config.admin_base_url,
            prefix=prefix,
            redirect_admin_paths=config.serve.public.redirect_admin_paths,
        ),
        *page_routes(
            fetch_flow=pages_api.fetch_flow,
            fetch_error=pages_api.fetch_error,
            whoami=pages_api.whoami,
            logout_url=pages_api.logout_url,
            public_base_url=config.public_base_url,
            selfservice=config.selfservice,
            catalogs=services.catalogs,
            form_action_origins=[
                *oidc_origins(
                    config.selfservice.methods.oidc.enabled, config.selfservice.methods.oidc.config.providers
                ),
                *saml_origins(
                    config.selfservice.methods.saml.enabled, config.selfservice.methods.saml.config.providers
                ),
            ],
        ),
    ]
    app: ASGIApp = Starlette(
        routes=[Mount(prefix, routes=routes)] if prefix else routes,
        exception_handlers=respond.EXCEPTION_HANDLERS,
        lifespan=_lifespan(services) if manage_lifespan else None,
    )
    if config.selfservice.languages.translate_api:
        app = ApiLanguages(
            app, catalogs=services.catalogs, languages=config.selfservice.languages, prefix=prefix
        )
    cors = config.serve.public.cors
    if cors.enabled:
        # Only the API under the prefix: proxied app traffic keeps whatever CORS the app answers.
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
        if cors.debug:
            app = CorsDebugLog(app)
    if not gateway:
        return app
    services.rules.load()  # a bad rule file (RulesError) fails the start here
    public = build_gateway(
        config,
        app,
        resolver=services.resolver,
        rules=services.rules,
        metrics=services.metrics,
        invalidation=services.invalidation,
        whoami=WhoamiEndpoint(whoami, config.session.cookie.name, cors=cors.enabled),
        tracing=services.tracing,
    )
    services.on_stop(public.stop)  # registered last, so stopped before the pools it uses
    return public


def build_gateway(
    config: Config,
    public_app: ASGIApp,
    *,
    resolver: SessionResolver,
    rules: RulesHolder,
    metrics: Metrics | None = None,
    invalidation: Invalidation | None = None,
    upstream: Upstream | None = None,
    websockets: WebSocketConnector | None = None,
    whoami: WhoamiEndpoint | None = None,
    tracing: Tracing | None = None,
) -> Gateway:
    """The access path around ``public_app``, over loaded ``rules``; connects to nothing until a
    request is proxied. ``upstream`` and ``websockets`` default to the configured clients."""
    proxy = config.proxy
    signer = None
    if proxy.jwt.enabled or any(r.upstream_jwt for r in rules.current.rules):
        signer = JwtSigner(
            config.secrets.default or config.secrets.cookie,
            alg=proxy.jwt.alg,
            issuer=proxy.jwt.issuer or config.public_base_url,
            default_audience=proxy.jwt.audience,
        )
    trusted = TrustedProxies.parse(config.serve.public.trusted_proxies)
    paths = OwnPaths(config.serve.public.prefix, reject_parameters=proxy.reject_path_parameters)
    access = Access(config, resolver, rules, metrics, tracing)
    identity = IdentityHeaders(proxy, rules, signer)
    denials = Denials(config.public_base_url)
    upstream_base = proxy.upstream.rstrip("/") if proxy.upstream else None
    base = urlsplit(config.public_base_url)
    base_origin = f"{base.scheme}://{base.netloc}"
    return Gateway(
        public_app,
        paths=paths,
        access=access,
        identity=identity,
        denials=denials,
        decisions=DecisionEndpoints(
            access,
            identity,
            denials,
            trusted,
            public_base_url=config.public_base_url,
            reject_path_parameters=proxy.reject_path_parameters,
        ),
        websockets=WebSocketProxy(
            enabled=proxy.websockets,
            paths=paths,
            access=access,
            resolver=resolver,
            identity=identity,
            trusted=trusted,
            # Lazy, both: no connection until a request is proxied (rules may gain an upstream).
            connector=websockets or LazyWebSockets(proxy.timeouts),
            upstream_base=upstream_base,
            base_origin=base_origin,
            allowed_origins=proxy.allowed_ws_origins,
        ),
        trusted=trusted,
        rules=rules,
        upstream=upstream or create_upstream(proxy.timeouts, proxy.upstream_client),
        upstream_base=upstream_base,
        base_origin=base_origin,
        invalidation=invalidation,
        metrics=metrics,
        whoami=whoami,
        tracing=tracing,
    )


def wrap_apps(services: Services, public: Any, admin: Any) -> tuple[Any, Any]:
    """Both apps inside the access log (request id, one JSON line, request metrics)."""
    config = services.config
    trusted = TrustedProxies.parse(config.serve.public.trusted_proxies).trusts
    enabled = config.log.level in ("trace", "debug", "info")
    write = None
    if enabled and config.log.access_buffer > 0:
        writer = BufferedLineWriter(
            lambda: sys.stderr,
            buffer_size=config.log.access_buffer,
            flush_interval=config.log.access_flush_interval.total_seconds(),
        )
        services.on_stop(writer.aclose)  # the last lines are written at shutdown
        write = writer.write
    options: dict[str, Any] = {
        "trusted": trusted,
        "metrics": services.metrics,
        "tracing": services.tracing,
        "text": config.log.format == "text",
        "enabled": enabled,
        "write": write,
        "leak_sensitive_values": config.log.leak_sensitive_values,
    }
    return (
        AccessLog(
            public,
            listener="public",
            classify=public_route_classifier(config.serve.public.prefix),
            **options,
        ),
        AccessLog(admin, listener="admin", classify=admin_route_classifier, **options),
    )


def fast_responders(config: Config, public: Any) -> tuple[Callable[[Any], Any], ...]:
    """The public listener's answers made in the HTTP protocol (``sidecar.http_protocol``): the
    gateway's decisions and whoami, inside the access log ``wrap_apps`` put around it; those that
    need the session store (a cache miss) as coroutines the protocol awaits. None with
    ``serve.public.fast_path: false`` or tracing on (its spans are opened on the ASGI path)."""
    if (
        not config.serve.public.fast_path
        or not isinstance(public, AccessLog)
        or public.tracing is not None
        or not isinstance(public.app, Gateway)
    ):
        return ()
    gateway: Gateway = public.app
    return (public.answering(gateway.answer_later, gateway.may_answer),)


def fast_relays(config: Config, public: Any) -> tuple[Callable[[Any, Any, bool], bool], ...]:
    """The public listener's proxied GETs served from the HTTP protocol (``sidecar.proxy.fast``),
    inside the access log, when ``fast_responders`` has responders (the same switch and
    conditions) and the upstream client is ours (``proxy.upstream_client: http1``)."""
    if not fast_responders(config, public):
        return ()
    gateway: Gateway = public.app
    client = gateway.upstream
    if not isinstance(client, Http1Client):
        return ()
    take = public.taking(FastProxy(gateway.plan_now, client, gateway.metrics).take)

    def relay(proto: Any, scope: Any, keep_alive: bool) -> bool:
        return take(scope, proto, keep_alive) is not None

    return (relay,)


def cors_origins(origins: list[str]) -> tuple[list[str], str | None]:
    """Exact origins, and one regex for Kratos-style wildcards (``https://*.example.com``).

    A ``*`` inside an origin stands for one DNS label, never a dot or another scheme, so
    ``https://*.example.com`` cannot match ``https://evil.test/.example.com``.
    """
    exact = [o for o in origins if o == "*" or "*" not in o]
    wild = [re.escape(o).replace(r"\*", "[A-Za-z0-9-]+") for o in origins if o != "*" and "*" in o]
    return exact, ("^(?:" + "|".join(wild) + ")$") if wild else None

"""All self-service and session routes of the public API, for ``sidecar.api.public.routes``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.routing import Route

from sidecar.api.pagination import PageTokens
from sidecar.api.public.errors_flow import ErrorFlows, error_routes
from sidecar.api.public.flow_http import HttpContext
from sidecar.api.public.login import login_routes
from sidecar.api.public.logout import logout_routes
from sidecar.api.public.oidc import oidc_routes
from sidecar.api.public.recovery import recovery_routes
from sidecar.api.public.registration import registration_routes
from sidecar.api.public.sessions import session_routes
from sidecar.api.public.settings import settings_routes
from sidecar.api.public.verification import verification_routes
from sidecar.api.public.webauthn_js import webauthn_js_routes
from sidecar.identity.codec import identity_to_json
from sidecar.identity.model import Identity
from sidecar.proxy.headers import TrustedProxies

if TYPE_CHECKING:
    from sidecar.app import Services
    from sidecar.flows.lifecycle import FlowLifecycle
    from sidecar.flows.service import SelfServiceFlows


def _lifecycles(flows: SelfServiceFlows) -> dict[str, FlowLifecycle]:
    found = {"login": flows.login.life, "registration": flows.registration.life}
    if flows.settings is not None:
        found["settings"] = flows.settings.life
    return found


def selfservice_routes(services: Services) -> list[Route]:
    config = services.config
    schemas = services.schemas

    def public_identity(identity: Identity) -> dict[str, Any]:
        return identity_to_json(identity, schema_url=schemas.schema_url(identity.schema_id), admin=False)

    ctx = HttpContext(
        config,
        services.sessions,
        TrustedProxies.parse(config.serve.public.trusted_proxies),
        public_identity,
        services.metrics,
    )
    error_flows = ErrorFlows(config, services.kv)
    flows = services.selfservice
    max_body = config.serve.public.max_body_size
    return [
        *login_routes(ctx, flows.login, error_flows, max_body),
        *registration_routes(ctx, flows.registration, error_flows, max_body),
        *logout_routes(ctx, flows.logout, error_flows, max_body),
        *(recovery_routes(ctx, flows.recovery, error_flows, max_body) if flows.recovery else []),
        *(verification_routes(ctx, flows.verification, error_flows, max_body) if flows.verification else []),
        *(
            settings_routes(ctx, flows.settings, services.identities.get, error_flows, max_body)
            if flows.settings
            else []
        ),
        *session_routes(ctx, services.identities.get, PageTokens.from_config(config, "sessions")),
        *(oidc_routes(ctx, flows.oidc, _lifecycles(flows), error_flows, max_body) if flows.oidc else []),
        *error_routes(error_flows),
        *webauthn_js_routes(),
    ]

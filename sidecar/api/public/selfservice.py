"""All self-service and session routes of the public API, for ``sidecar.api.public.routes``."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from starlette.routing import Route

from sidecar.api.pagination import PageTokens
from sidecar.api.public.errors_flow import ErrorFlows, error_routes
from sidecar.api.public.flow_http import HttpContext
from sidecar.api.public.login import login_routes
from sidecar.api.public.logout import logout_routes
from sidecar.api.public.oidc import oidc_routes
from sidecar.api.public.recovery import recovery_routes
from sidecar.api.public.registration import registration_routes
from sidecar.api.public.saml import saml_routes
from sidecar.api.public.sessions import session_routes
from sidecar.api.public.settings import settings_routes
from sidecar.api.public.token_exchange import token_exchange_routes
from sidecar.api.public.verification import verification_routes
from sidecar.api.public.webauthn_js import webauthn_js_routes
from sidecar.flows.lifecycle import FlowLifecycle
from sidecar.flows.service import SelfServiceFlows
from sidecar.identity.model import Identity
from sidecar.session.tokenizer import SessionTokenizer
from sidecar.session.whoami import Whoami


def _lifecycles(flows: SelfServiceFlows) -> dict[str, FlowLifecycle]:
    found = {"login": flows.login.life, "registration": flows.registration.life}
    if flows.settings is not None:
        found["settings"] = flows.settings.life
    return found


def selfservice_routes(
    ctx: HttpContext,
    flows: SelfServiceFlows,
    error_flows: ErrorFlows,
    get_identity: Callable[[uuid.UUID], Awaitable[Identity]],
    whoami: Whoami,
    session_tokens: PageTokens,
    max_body: int,
    tokenizer: SessionTokenizer,
) -> list[Route]:
    return [
        *login_routes(ctx, flows.login, error_flows, max_body, flows.exchanges),
        *registration_routes(ctx, flows.registration, error_flows, max_body, flows.exchanges),
        *logout_routes(ctx, flows.logout, error_flows, max_body),
        *(recovery_routes(ctx, flows.recovery, error_flows, max_body) if flows.recovery else []),
        *(verification_routes(ctx, flows.verification, error_flows, max_body) if flows.verification else []),
        *(
            settings_routes(ctx, flows.settings, get_identity, error_flows, max_body)
            if flows.settings
            else []
        ),
        *(token_exchange_routes(ctx, flows.exchanges, get_identity) if flows.exchanges else []),
        *session_routes(ctx, whoami, get_identity, session_tokens, tokenizer),
        *(
            oidc_routes(ctx, flows.oidc, _lifecycles(flows), error_flows, max_body, flows.exchanges)
            if flows.oidc
            else []
        ),
        *(saml_routes(ctx, flows.saml, _lifecycles(flows), flows.logout, error_flows) if flows.saml else []),
        *error_routes(error_flows),
        *webauthn_js_routes(),
    ]

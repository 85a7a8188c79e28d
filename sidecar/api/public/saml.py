"""SAML 2.0 service provider endpoints, per connection (docs/SSO.md):

- ``GET /self-service/methods/saml/metadata/{id}``: our metadata (entity id, ACS, SLO, key).
- ``GET /self-service/methods/saml/auth/{id}?RelayState=``: the HTTP-POST binding's page that
  posts a waiting AuthnRequest to the identity provider (once).
- ``POST /self-service/methods/saml/acs/{id}``: the assertion consumer service. The POST is
  cross-site and carries no ``SameSite=Lax`` cookie, so the response is parked (two minutes, once)
  and the browser continues with a same-site ``GET ...?continue=<handle>`` that does carry them.
- ``GET|POST /self-service/methods/saml/slo/{id}``: single logout: an identity provider's
  LogoutRequest (answered with a LogoutResponse), or the LogoutResponse to ours.

ACS posts and SLO requests are counted per client IP before their body is read (429 with
``Retry-After`` past ``rate_limit.per_ip``).
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.public.errors_flow import ErrorFlows
from sidecar.api.public.federated import came_back
from sidecar.api.public.flow_http import HttpContext, read_submission, see_other
from sidecar.api.respond import error_response
from sidecar.flows.lifecycle import FlowLifecycle
from sidecar.flows.logout import LogoutFlows
from sidecar.flows.service import SamlCallbacks
from sidecar.strategies.saml.binding import MAX_MESSAGE, PATH

_SUBMIT = "document.forms[0].submit();"
_SUBMIT_HASH = base64.b64encode(hashlib.sha256(_SUBMIT.encode()).digest()).decode()
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_WAIT_PAGE = (
    '<!doctype html><html><head><meta charset="utf-8"><title>Please wait</title></head><body>'
    "<h1>Please wait a moment</h1><p>{message}.</p><p>Reload this page {when} to "
    "continue.</p></body></html>"
)


def _retry_later(exc: errors.ServiceUnavailable | errors.TooManyRequests, request: Request) -> Response:
    """503 (the verification bound) or 429 (the per-IP limit) with ``Retry-After``: a page a person
    can read (reloading it retries, nothing was taken yet), Kratos' JSON error for everything else."""
    if "text/html" in request.headers.get("accept", ""):
        headers = {**_NO_STORE, **exc.headers, "Content-Security-Policy": "default-src 'none'"}
        wait = exc.headers.get("Retry-After", "")
        when = f"in {wait} seconds" if wait.isdigit() and int(wait) > 5 else "in a few seconds"
        page = _WAIT_PAGE.format(message=html.escape(exc.message), when=when)
        return HTMLResponse(page, status_code=exc.code, headers=headers)
    return error_response(exc, request)


def _post_page(url: str, fields: Mapping[str, str]) -> HTMLResponse:
    parts = urlsplit(url)
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in fields.items()
    )
    body = (
        '<!doctype html><html><head><meta charset="utf-8"><title>Signing in</title></head><body>'
        f'<form method="post" action="{html.escape(url)}">{inputs}'
        '<noscript><button type="submit">Continue</button></noscript></form>'
        f"<script>{_SUBMIT}</script></body></html>"
    )
    csp = (
        f"default-src 'none'; script-src 'sha256-{_SUBMIT_HASH}'; "
        f"form-action {parts.scheme}://{parts.netloc}; frame-ancestors 'none'"
    )
    return HTMLResponse(body, headers={**_NO_STORE, "Content-Security-Policy": csp})


def saml_routes(
    ctx: HttpContext,
    endpoints: SamlCallbacks,
    lifecycles: Mapping[str, FlowLifecycle],
    logout: LogoutFlows,
    error_flows: ErrorFlows,
) -> list[Route]:
    base = ctx.config.public_base_url.rstrip("/")
    max_body = MAX_MESSAGE + 8 * 1024

    async def metadata(request: Request) -> Response:
        try:
            xml = await endpoints.metadata(request.path_params["provider"])
        except errors.SidecarError as exc:
            return error_response(exc, request)  # read by programs (identity providers), not people
        return Response(
            xml, media_type="application/samlmetadata+xml", headers={"Cache-Control": "max-age=300"}
        )

    async def auth(request: Request) -> Response:
        try:
            url, fields = await endpoints.post_form(
                request.path_params["provider"], request.query_params.get("RelayState")
            )
        except errors.SidecarError as exc:
            return await error_flows.redirect(exc, request)
        return _post_page(url, fields)

    def throttled(exc: errors.TooManyRequests, request: Request) -> Response:
        retry = exc.headers.get("Retry-After", "")
        ctx.audit.emit(
            "attempt.throttled",
            ctx.origin(request),
            flow="saml",
            method="saml",
            retry_after=int(retry) if retry.isdigit() else None,
        )
        return _retry_later(exc, request)

    async def read(request: Request, message: str) -> dict[str, Any]:
        try:
            return await read_submission(request, max_body)
        except errors.PayloadTooLarge:
            endpoints.refused_early(message, "too_large")
            raise

    async def acs(request: Request) -> Response:
        provider = request.path_params["provider"]
        try:
            if request.method == "POST":
                # Counted per client IP before the body is read: the count is what bounds a flood.
                await endpoints.admit("response", ctx.client_ip(request))
                body = await read(request, "response")
                fields = {
                    k: v
                    for k, v in body.items()
                    if k in ("SAMLResponse", "RelayState") and isinstance(v, str)
                }
                await endpoints.precheck(provider, fields.get("SAMLResponse"))
                handle = await endpoints.park(fields)
                return see_other(f"{base}{PATH}/acs/{provider}?{urlencode({'continue': handle})}")
            async with endpoints.verifying():  # 503 before the parked response is taken
                fields = await endpoints.unpark(request.query_params.get("continue"))
                csrf_token, new = ctx.ensure_csrf(request)
                client = await ctx.client(request, csrf_token=csrf_token)
                kind, outcome = await endpoints.consume(
                    provider, fields.get("SAMLResponse"), fields.get("RelayState"), client
                )
        except errors.TooManyRequests as exc:
            return throttled(exc, request)
        except errors.ServiceUnavailable as exc:
            return _retry_later(exc, request)
        except errors.SidecarError as exc:
            return await error_flows.redirect(exc, request)
        response = came_back(ctx, lifecycles, kind, outcome)
        if new:
            ctx.set_csrf_cookie(response, csrf_token)
        return response

    async def slo(request: Request) -> Response:
        provider = request.path_params["provider"]
        try:
            await endpoints.admit("logout_request", ctx.client_ip(request))
            if request.method == "POST":
                body = await read(request, "logout_request")
                fields = {k: v for k, v in body.items() if isinstance(v, str)}
                binding, query = "post", None
            else:
                fields = dict(request.query_params)
                binding, query = "redirect", request.url.query
            if fields.get("SAMLRequest"):
                answer = await endpoints.logout_from_idp(provider, fields["SAMLRequest"], binding, query)
                return see_other(answer)
            if fields.get("SAMLResponse"):
                # The identity provider finished the logout we asked for: on to the logout's target.
                target = await endpoints.logged_out(fields.get("RelayState"))
                return see_other(target or logout.after_url(None))
            raise errors.BadRequest("Neither a SAMLRequest nor a SAMLResponse was sent.")
        except errors.TooManyRequests as exc:
            return throttled(exc, request)
        except errors.ServiceUnavailable as exc:
            return _retry_later(exc, request)
        except errors.SidecarError as exc:
            return await error_flows.redirect(exc, request)

    return [
        Route(f"{PATH}/metadata/{{provider}}", metadata, methods=["GET"]),
        Route(f"{PATH}/auth/{{provider}}", auth, methods=["GET"]),
        Route(f"{PATH}/acs/{{provider}}", acs, methods=["GET", "POST"]),
        Route(f"{PATH}/slo/{{provider}}", slo, methods=["GET", "POST"]),
    ]

"""The built-in pages: a server-rendered UI over the Kratos public API, like Ory's own UIs.

Each page reads a flow (by id) and draws ``ui.action``, ``ui.method``, ``ui.nodes`` and
``ui.messages`` generically, so a new strategy's nodes appear without template changes. The forms
post straight to the public API (``ui.action``); the API answers with a 303 back to the page, which
shows the updated flow. Pages work without JavaScript.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from sidecar import __version__, errors
from sidecar.config.model import SelfService
from sidecar.ui import page_headers, wording
from sidecar.ui.forms import build_forms
from sidecar.ui.node_view import as_mapping, messages_of, safe_href, same_origin_check

log = logging.getLogger("sidecar.ui")

FetchFlow = Callable[[str, str, Request], Awaitable[dict[str, Any]]]
FetchError = Callable[[str], Awaitable[dict[str, Any]]]
Whoami = Callable[[Request], Awaitable[dict[str, Any] | None]]
LogoutUrl = Callable[[Request], Awaitable[str | None]]

FLOW_KINDS = ("login", "registration", "settings", "recovery", "verification")
# Pages whose URLs or forms may carry one-time tokens and codes (see page_headers.REFERRER_TOKEN_PAGES).
_TOKEN_PAGES = frozenset({"recovery", "verification", "error"})
_STATIC_FILES = {"style.css": "text/css; charset=utf-8", "nodes.js": "text/javascript; charset=utf-8"}


@dataclass(frozen=True)
class _Settings:
    prefix: str
    registration_enabled: bool
    recovery_enabled: bool
    verification_enabled: bool


def page_routes(
    *,
    fetch_flow: FetchFlow,
    fetch_error: FetchError,
    whoami: Whoami,
    logout_url: LogoutUrl,
    public_base_url: str,
    selfservice: SelfService | None = None,
    form_action_origins: Sequence[str] = (),
    templates_dir: str | None = None,
) -> list[BaseRoute]:
    """Routes of the built-in pages, relative to the public prefix (mount them under ``/.auth``).

    ``GET /ui/{login,registration,settings,recovery,verification}?flow=<id>`` draw a flow; without
    ``flow`` they 303 to ``{prefix}/self-service/<kind>/browser`` (other query parameters such as
    ``return_to``, ``refresh`` and ``aal`` are kept), which creates a flow and comes back with
    ``?flow=``. ``GET /ui/error?id=`` draws a stored error, ``GET /ui/welcome`` the signed-in landing
    page, ``GET /ui/static/<file>`` the stylesheet and script, ``GET /`` (the prefix itself) an
    index of the pages and endpoints.

    The callables are the seam to the core (all may raise ``sidecar.errors.SidecarError``):

    - ``fetch_flow(kind, flow_id, request)``: the flow's Kratos JSON, exactly what
      ``GET /self-service/<kind>/flows?id=`` answers, checked against the request's cookies (CSRF,
      session). Raises ``NotFound`` (the page starts a new flow), ``FlowExpired``/``FlowReplaced``
      with ``use_flow_id`` in ``.extra`` (the page shows that flow, else starts a new one),
      ``SessionInactive`` (to sign-in), ``SessionAlreadyAvailable`` (to the welcome page), any error
      with ``redirect_browser_to`` in ``.extra`` (followed), anything else (an error page).
    - ``fetch_error(error_id)``: the ``flowError`` JSON of ``GET /self-service/errors?id=``; raises
      ``NotFound``.
    - ``whoami(request)``: the session JSON of ``GET /sessions/whoami``, or None when signed out.
    - ``logout_url(request)``: ``logout_url`` of ``GET /self-service/logout/browser``, or None.

    ``public_base_url`` is the browser-facing base including the prefix
    (``http://127.0.0.1:4433/.auth``): links and redirects use its path, the CSP its origin.
    ``selfservice`` decides which links are shown (registration, recovery) and adds the origins of the
    configured return URLs to the CSP ``form-action``, as does ``form_action_origins`` (e.g. OIDC
    providers). ``templates_dir`` holds templates that replace built-in ones of the same name.
    """
    settings = _Settings(
        prefix=urlsplit(public_base_url).path.rstrip("/"),
        registration_enabled=selfservice.flows.registration.enabled if selfservice else True,
        recovery_enabled=selfservice.flows.recovery.enabled if selfservice else True,
        verification_enabled=selfservice.flows.verification.enabled if selfservice else True,
    )
    csp = page_headers.content_security_policy(
        page_headers.form_action_sources(public_base_url, selfservice, form_action_origins)
    )
    pages = _Pages(
        settings=settings,
        csp=csp,
        env=_environment(templates_dir),
        same_origin=same_origin_check(public_base_url),
        fetch_flow=fetch_flow,
        fetch_error=fetch_error,
        whoami=whoami,
        logout_url=logout_url,
        base_url=public_base_url.rstrip("/"),
    )
    routes: list[BaseRoute] = [
        Route(f"/ui/{kind}", pages.flow_endpoint(kind), methods=["GET"]) for kind in FLOW_KINDS
    ]
    routes += [
        Route("/", pages.index, methods=["GET"]),
        Route("/ui/error", pages.error_page, methods=["GET"]),
        Route("/ui/welcome", pages.welcome, methods=["GET"]),
        Route("/ui/static/{name}", pages.static, methods=["GET"]),
    ]
    return routes


def _environment(templates_dir: str | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = [jinja2.PackageLoader("sidecar.ui", "templates")]
    if templates_dir:
        loaders.insert(0, jinja2.FileSystemLoader(templates_dir))
    # Autoescape everywhere: every string in a flow may come from a user (traits, messages).
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )


class _Pages:
    def __init__(
        self,
        *,
        settings: _Settings,
        csp: str,
        env: jinja2.Environment,
        same_origin: Callable[[str], bool],
        fetch_flow: FetchFlow,
        fetch_error: FetchError,
        whoami: Whoami,
        logout_url: LogoutUrl,
        base_url: str = "",
    ) -> None:
        self.settings = settings
        self.csp = csp
        self.env = env
        self.same_origin = same_origin
        self.fetch_flow = fetch_flow
        self.fetch_error = fetch_error
        self.whoami = whoami
        self.logout_url_of = logout_url
        self.base_url = base_url
        self.static_files: dict[str, tuple[bytes, str]] = {}
        for name, media_type in _STATIC_FILES.items():
            body = resources.files("sidecar.ui").joinpath("static", name).read_bytes()
            self.static_files[name] = (body, media_type)
        # The content hash in each static URL lets browsers cache them for good.
        self.static_versions = {
            name: hashlib.sha256(body).hexdigest()[:12] for name, (body, _) in self.static_files.items()
        }
        env.globals.update(static_url=self.static_url, prefix=settings.prefix, version=__version__)

    # --- URLs ------------------------------------------------------------------------------

    def static_url(self, name: str) -> str:
        return f"{self.settings.prefix}/ui/static/{name}?v={self.static_versions.get(name, '')}"

    def init_url(self, kind: str, params: Mapping[str, str] | None = None) -> str:
        query = urlencode({k: v for k, v in (params or {}).items() if v})
        url = f"{self.settings.prefix}/self-service/{kind}/browser"
        return f"{url}?{query}" if query else url

    def page_url(self, kind: str, flow_id: str) -> str:
        return f"{self.settings.prefix}/ui/{kind}?{urlencode({'flow': flow_id})}"

    # --- responses -------------------------------------------------------------------------

    def render(self, template: str, context: dict[str, Any], *, page: str, status: int = 200) -> Response:
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(
            html,
            status_code=status,
            headers=page_headers.page_headers(self.csp, carries_tokens=page in _TOKEN_PAGES),
        )

    def redirect(self, url: str, *, page: str) -> Response:
        response = RedirectResponse(url, status_code=303)
        # Even a redirect can leak its own URL (with a token) through Referer on the next hop.
        response.headers["Referrer-Policy"] = (
            page_headers.REFERRER_TOKEN_PAGES if page in _TOKEN_PAGES else page_headers.REFERRER_DEFAULT
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    def error_response(
        self,
        *,
        status: int,
        title: str,
        message: str,
        retry_url: str | None,
        page: str,
        shown_code: int | None = None,
    ) -> Response:
        context = {
            "title": title,
            "message": message,
            "code": shown_code or status,
            "retry_url": retry_url,
            "links": [link for link in self.links("error", {}) if link[1] != retry_url],
        }
        return self.render("error.html", context, page=page, status=status)

    # --- flow pages ------------------------------------------------------------------------

    def flow_endpoint(self, kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self.flow_page(kind, request)

        return endpoint

    async def flow_page(self, kind: str, request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items() if k != "flow"}
        flow_id = request.query_params.get("flow")
        if not flow_id:
            return self.redirect(self.init_url(kind, params), page=kind)
        try:
            flow = await self.fetch_flow(kind, flow_id, request)
        except (errors.FlowExpired, errors.FlowReplaced) as exc:
            new_id = exc.extra.get("use_flow_id")
            if isinstance(new_id, str) and new_id and new_id != flow_id:
                return self.redirect(self.page_url(kind, new_id), page=kind)
            return_to = exc.details.get("return_to") or params.get("return_to") or ""
            return self.redirect(self.init_url(kind, {**params, "return_to": str(return_to)}), page=kind)
        except errors.NotFound:
            return self.redirect(self.init_url(kind, params), page=kind)
        except errors.SessionInactive:
            return self.redirect(self.init_url("login"), page=kind)
        except errors.SessionAlreadyAvailable:
            return self.redirect(f"{self.settings.prefix}/ui/welcome", page=kind)
        except errors.SidecarError as exc:
            target = safe_href(exc.extra.get("redirect_browser_to"))
            if target:
                return self.redirect(target, page=kind)
            if exc.code >= 500:
                log.warning("could not load %s flow %s: %s", kind, flow_id, exc.message)
            return self.error_response(
                status=exc.code,
                title=wording.error_title(exc.code),
                message=exc.reason or exc.message,
                retry_url=self.init_url(kind, params),
                page=kind,
            )
        return self.render("flow.html", self.flow_context(kind, flow), page=kind)

    def flow_context(self, kind: str, flow: Mapping[str, Any]) -> dict[str, Any]:
        ui = as_mapping(flow.get("ui"))
        identity = as_mapping(flow.get("identity")) if "identity" in flow else None
        return {
            "kind": kind,
            "flow": flow,
            "title": wording.flow_title(kind, flow),
            "subtitle": wording.flow_subtitle(kind, flow, identity),
            "messages": messages_of(ui.get("messages")),
            "forms": build_forms(ui, split_by_group=kind == "settings", same_origin=self.same_origin),
            "links": self.links(kind, flow),
        }

    def links(self, kind: str, flow: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Links between the pages; each keeps the flow's ``return_to`` so the journey ends where it began."""
        return_to = flow.get("return_to")
        keep = {"return_to": return_to} if isinstance(return_to, str) and return_to else {}
        s = self.settings
        signed_in_step = kind == "login" and (flow.get("refresh") or flow.get("requested_aal") == "aal2")
        out: list[tuple[str, str]] = []
        if kind == "login" and not signed_in_step:
            if s.registration_enabled:
                out.append(("Create an account", self.init_url("registration", keep)))
            if s.recovery_enabled:
                out.append(("Forgot your password?", self.init_url("recovery", keep)))
        elif kind == "registration":
            out.append(("Already have an account? Sign in", self.init_url("login", keep)))
        elif kind in ("recovery", "verification", "error"):
            out.append(("Back to sign in", self.init_url("login", keep)))
        elif kind == "settings" or signed_in_step:
            out.append(("Back to your account", f"{s.prefix}/ui/welcome"))
        return out

    # --- error, welcome, static ----------------------------------------------------------------

    async def error_page(self, request: Request) -> Response:
        error_id = request.query_params.get("id", "")
        try:
            flow_error = await self.fetch_error(error_id) if error_id else None
        except errors.NotFound:
            flow_error = None
        except errors.SidecarError as exc:
            return self.error_response(
                status=exc.code,
                title=wording.error_title(exc.code),
                message=exc.message,
                retry_url=None,
                page="error",
            )
        if flow_error is None:
            return self.error_response(
                status=404,
                title="Error not found",
                message="This error does not exist or has been cleaned up.",
                retry_url=None,
                page="error",
            )
        err = as_mapping(flow_error.get("error"))
        code = err["code"] if isinstance(err.get("code"), int) else 500
        return self.error_response(
            status=200,  # the page itself was found; the stored error's code is shown on it
            title=wording.error_title(code),
            message=str(err.get("reason") or err.get("message") or "An unexpected error occurred."),
            retry_url=None,
            page="error",
            shown_code=code,
        )

    async def welcome(self, request: Request) -> Response:
        try:
            session = await self.whoami(request)
            logout = await self.logout_url_of(request) if session else None
        except errors.SessionInactive:
            session, logout = None, None
        except errors.SidecarError as exc:
            # session_aal2_required: the session needs its second factor first (step-up login).
            target = safe_href(exc.extra.get("redirect_browser_to"))
            if target:
                return self.redirect(target, page="welcome")
            return self.error_response(
                status=exc.code,
                title=wording.error_title(exc.code),
                message=exc.message,
                retry_url=None,
                page="welcome",
            )
        if not session:
            return self.redirect(self.init_url("login"), page="welcome")
        identity = as_mapping(session.get("identity"))
        traits = as_mapping(identity.get("traits"))
        methods = session.get("authentication_methods")
        identifier = wording.primary_identifier(traits)
        context = {
            "title": "You are signed in",
            "session": session,
            "identity": identity,
            "identifier": identifier,
            # The identifier is already the subtitle; list the other traits.
            "traits": [
                (k, v) for k, v in traits.items() if isinstance(v, str | int | float) and v != identifier
            ],
            "aal": session.get("authenticator_assurance_level"),
            "methods": [m.get("method") for m in methods if isinstance(m, Mapping)]
            if isinstance(methods, list)
            else [],
            "expires_at": session.get("expires_at"),
            "expires_at_text": wording.readable_time(session.get("expires_at")),
            "logout_url": safe_href(logout),
            "settings_url": self.init_url("settings"),
            "verification_url": self.init_url("verification") if self.settings.verification_enabled else None,
            "links": [],
        }
        return self.render("welcome.html", context, page="welcome")

    async def index(self, request: Request) -> Response:
        """``GET {prefix}/``: where the README's first link lands; the flows, health and API."""
        s = self.settings
        actions = [("Sign in", self.init_url("login"), True)]
        if s.registration_enabled:
            actions.append(("Create an account", self.init_url("registration"), False))
        actions.append(("Your account", f"{s.prefix}/ui/welcome", False))
        if s.recovery_enabled:
            actions.append(("Recover your account", self.init_url("recovery"), False))
        if s.verification_enabled:
            actions.append(("Verify an email address", self.init_url("verification"), False))
        endpoints = [
            ("Readiness", f"{s.prefix}/health/ready"),
            ("Liveness", f"{s.prefix}/health/alive"),
            ("Version", f"{s.prefix}/version"),
            ("Session", f"{s.prefix}/sessions/whoami"),
            ("JWT keys", f"{s.prefix}/.well-known/jwks.json"),
        ]
        context = {
            "title": "Sign-in and accounts",
            "subtitle": "Start here to sign in, create an account or manage yours.",
            "actions": actions,
            "endpoints": endpoints,
            "base_url": self.base_url,
            "links": [],
        }
        return self.render("index.html", context, page="index")

    async def static(self, request: Request) -> Response:
        found = self.static_files.get(request.path_params["name"])
        if found is None:
            return Response(
                "not found", status_code=404, media_type="text/plain", headers=page_headers.static_headers()
            )
        body, media_type = found
        return Response(body, media_type=media_type, headers=page_headers.static_headers())

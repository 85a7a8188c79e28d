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
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from sidecar import __version__, errors
from sidecar.config.model import Languages, SelfService
from sidecar.flows.messages import localise
from sidecar.i18n import N_, Catalogs, Translator, builtin_catalogs, identity_language, negotiate
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
    catalogs: Catalogs | None = None,
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

    Pages are in the negotiated language (``selfservice.languages``; ``catalogs`` are the gettext
    catalogs, the built-in ones by default): the flow's messages and labels by their Kratos ids, the
    pages' own words by their English text.
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
        templates_dir=templates_dir,
        catalogs=catalogs or builtin_catalogs(),
        languages=selfservice.languages if selfservice else Languages(),
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


def _environment(templates_dir: str | None, translator: Translator) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = [jinja2.PackageLoader("sidecar.ui", "templates")]
    if templates_dir:
        loaders.insert(0, jinja2.FileSystemLoader(templates_dir))
    # Autoescape everywhere: every string in a flow may come from a user (traits, messages).
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    # One environment per language: ``_()`` in the templates is that language's gettext.
    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=translator.gettext,
        ngettext=translator.ngettext,  # the catalog's plural forms (French 0 and 1, Japanese one)
        pgettext=translator.pgettext,
        newstyle=True,
    )
    return env


class _Pages:
    def __init__(
        self,
        *,
        settings: _Settings,
        csp: str,
        templates_dir: str | None,
        catalogs: Catalogs,
        languages: Languages,
        same_origin: Callable[[str], bool],
        fetch_flow: FetchFlow,
        fetch_error: FetchError,
        whoami: Whoami,
        logout_url: LogoutUrl,
        base_url: str = "",
    ) -> None:
        self.settings = settings
        self.csp = csp
        self.templates_dir = templates_dir
        self.catalogs = catalogs
        self.languages = languages
        self.envs: dict[str, jinja2.Environment] = {}
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

    # --- language ---------------------------------------------------------------------------

    def language(self, request: Request, identity: Mapping[str, Any] | None = None) -> tuple[str, str | None]:
        """The page's language, and a ``?lang=`` choice to remember in the cookie (or None)."""
        asked = request.query_params.get("lang")
        chosen = self.catalogs.match(asked) if asked else None
        return (
            negotiate(
                self.catalogs,
                default=self.languages.default,
                identity_tag=identity_language(identity, self.languages.identity_field),
                accept=request.headers.get("accept-language"),
                chosen=chosen or request.cookies.get(self.languages.cookie),
            ),
            chosen,
        )

    def environment(self, language: str) -> jinja2.Environment:
        env = self.envs.get(language)
        if env is None:
            env = _environment(self.templates_dir, self.catalogs.translator(language))
            env.globals.update(static_url=self.static_url, prefix=self.settings.prefix, version=__version__)
            self.envs[language] = env
        return env

    def render(
        self,
        template: str,
        context: dict[str, Any],
        *,
        page: str,
        request: Request,
        status: int = 200,
        identity: Mapping[str, Any] | None = None,
    ) -> Response:
        language, remember = self.language(request, identity)
        tr = self.catalogs.translator(language)
        # The pages' own words are English msgids (marked with N_ where they are written).
        for key in ("title", "subtitle", "message"):
            if isinstance(context.get(key), str):
                context[key] = tr.gettext(context[key])
        for key in ("links", "actions", "endpoints"):
            if isinstance(context.get(key), list):
                context[key] = [(tr.gettext(item[0]), *item[1:]) for item in context[key]]
        if "flow" in context:
            context.update(self.localised_ui(context, tr))
        context["html_lang"] = language.replace("_", "-")
        html = self.environment(language).get_template(template).render(**context)
        response = HTMLResponse(
            html,
            status_code=status,
            headers=page_headers.page_headers(self.csp, carries_tokens=page in _TOKEN_PAGES),
        )
        response.headers["Content-Language"] = context["html_lang"]
        response.headers["Vary"] = "Accept-Language, Cookie"
        return self.remember(response, remember)

    def remember(self, response: Response, chosen: str | None) -> Response:
        if chosen:
            response.set_cookie(
                self.languages.cookie,
                chosen,
                max_age=365 * 24 * 3600,
                path=self.settings.prefix or "/",
                samesite="lax",
                httponly=True,
            )
        return response

    def localised_ui(self, context: dict[str, Any], tr: Translator) -> dict[str, Any]:
        """The flow's messages and forms with every Kratos text in ``tr``'s language."""
        flow = context["flow"]
        ui = _localised(as_mapping(flow.get("ui")), tr)
        kind = context["kind"]
        forms = build_forms(ui, split_by_group=kind == "settings", same_origin=self.same_origin)
        identity = as_mapping(flow.get("identity")) if "identity" in flow else None
        return {
            "messages": messages_of(ui.get("messages")),
            "forms": [replace(f, heading=tr.gettext(f.heading)) if f.heading else f for f in forms],
            "subtitle": wording.flow_subtitle(kind, flow, identity, tr.gettext),
        }

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
        request: Request,
    ) -> Response:
        context = {
            "title": title,
            "message": message,
            "code": shown_code or status,
            "retry_url": retry_url,
            "links": [link for link in self.links("error", {}) if link[1] != retry_url],
        }
        return self.render("error.html", context, page=page, status=status, request=request)

    # --- flow pages ------------------------------------------------------------------------

    def flow_endpoint(self, kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self.flow_page(kind, request)

        return endpoint

    async def flow_page(self, kind: str, request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items() if k not in ("flow", "lang")}
        flow_id = request.query_params.get("flow")
        if not flow_id:
            # The flow is made first: a ``?lang=`` choice rides along in its cookie.
            _, chosen = self.language(request)
            return self.remember(self.redirect(self.init_url(kind, params), page=kind), chosen)
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
                request=request,
            )
        return self.render(
            "flow.html",
            self.flow_context(kind, flow),
            page=kind,
            request=request,
            identity=as_mapping(flow.get("identity")) or None,
        )

    def flow_context(self, kind: str, flow: Mapping[str, Any]) -> dict[str, Any]:
        identity = as_mapping(flow.get("identity")) if "identity" in flow else None
        return {
            "kind": kind,
            "flow": flow,
            "title": wording.flow_title(kind, flow),
            "subtitle": wording.flow_subtitle(kind, flow, identity),
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
                out.append((N_("Create an account"), self.init_url("registration", keep)))
            if s.recovery_enabled:
                out.append((N_("Forgot your password?"), self.init_url("recovery", keep)))
        elif kind == "registration":
            out.append((N_("Already have an account? Sign in"), self.init_url("login", keep)))
        elif kind in ("recovery", "verification", "error"):
            out.append((N_("Back to sign in"), self.init_url("login", keep)))
        elif kind == "settings" or signed_in_step:
            out.append((N_("Back to your account"), f"{s.prefix}/ui/welcome"))
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
                request=request,
            )
        if flow_error is None:
            return self.error_response(
                status=404,
                title=N_("Error not found"),
                message=N_("This error does not exist or has been cleaned up."),
                retry_url=None,
                page="error",
                request=request,
            )
        err = as_mapping(flow_error.get("error"))
        code = err["code"] if isinstance(err.get("code"), int) else 500
        return self.error_response(
            status=200,  # the page itself was found; the stored error's code is shown on it
            title=wording.error_title(code),
            message=str(err.get("reason") or err.get("message") or N_("An unexpected error occurred.")),
            retry_url=None,
            page="error",
            request=request,
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
                request=request,
            )
        if not session:
            return self.redirect(self.init_url("login"), page="welcome")
        identity = as_mapping(session.get("identity"))
        traits = as_mapping(identity.get("traits"))
        methods = session.get("authentication_methods")
        identifier = wording.primary_identifier(traits)
        context = {
            "title": N_("You are signed in"),
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
        return self.render("welcome.html", context, page="welcome", request=request, identity=identity)

    async def index(self, request: Request) -> Response:
        """``GET {prefix}/``: where the README's first link lands; the flows, health and API."""
        s = self.settings
        actions = [(N_("Sign in"), self.init_url("login"), True)]
        if s.registration_enabled:
            actions.append((N_("Create an account"), self.init_url("registration"), False))
        actions.append((N_("Your account"), f"{s.prefix}/ui/welcome", False))
        if s.recovery_enabled:
            actions.append((N_("Recover your account"), self.init_url("recovery"), False))
        if s.verification_enabled:
            actions.append((N_("Verify an email address"), self.init_url("verification"), False))
        endpoints = [
            (N_("Readiness"), f"{s.prefix}/health/ready"),
            (N_("Liveness"), f"{s.prefix}/health/alive"),
            (N_("Version"), f"{s.prefix}/version"),
            (N_("Session"), f"{s.prefix}/sessions/whoami"),
            (N_("JWT keys"), f"{s.prefix}/.well-known/jwks.json"),
        ]
        context = {
            "title": N_("Sign-in and accounts"),
            "subtitle": N_("Start here to sign in, create an account or manage yours."),
            "actions": actions,
            "endpoints": endpoints,
            "base_url": self.base_url,
            "links": [],
        }
        return self.render("index.html", context, page="index", request=request)

    async def static(self, request: Request) -> Response:
        found = self.static_files.get(request.path_params["name"])
        if found is None:
            return Response(
                "not found", status_code=404, media_type="text/plain", headers=page_headers.static_headers()
            )
        body, media_type = found
        return Response(body, media_type=media_type, headers=page_headers.static_headers())


def _localised(ui: Mapping[str, Any], tr: Translator) -> dict[str, Any]:
    """A copy of a flow's ``ui`` with ``text`` of its messages and node labels in ``tr``'s language."""

    def texts(items: Any) -> Any:
        if not isinstance(items, list):
            return items
        return [{**m, "text": localise(m, tr)} if isinstance(m, Mapping) else m for m in items]

    nodes = []
    for node in ui.get("nodes") or []:
        if not isinstance(node, Mapping):
            nodes.append(node)
            continue
        meta = as_mapping(node.get("meta"))
        label = meta.get("label")
        if isinstance(label, Mapping):
            meta = {**meta, "label": {**label, "text": localise(label, tr)}}
        nodes.append({**node, "messages": texts(node.get("messages")), "meta": meta})
    return {**ui, "messages": texts(ui.get("messages")), "nodes": nodes if "nodes" in ui else ui.get("nodes")}

"""HTTP around the self-service flows: reading requests into plain values, cookies, and turning
flow outcomes into Kratos responses (303 for browsers, JSON for API flows and JSON-req).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from sidecar import errors
from sidecar.api.body import parse_json, read_body
from sidecar.api.origin import client_ip, request_origin
from sidecar.api.respond import json_response
from sidecar.audit import AuditLog, RequestOrigin
from sidecar.config.dev import cookie_secure
from sidecar.config.model import Config
from sidecar.flows.form import FormBody
from sidecar.flows.lifecycle import FlowLifecycle
from sidecar.flows.model import Flow, flow_to_json
from sidecar.flows.outcome import Client, FlowReplaced, RequestInfo, ShowFlow
from sidecar.identity.model import Identity, utcnow
from sidecar.metrics import Metrics
from sidecar.security import csrf
from sidecar.security.trusted_proxies import TrustedProxies
from sidecar.session.manager import SessionManager
from sidecar.session.model import Session

NO_STORE = {"Cache-Control": "private, no-cache, no-store, must-revalidate"}
CSRF_MAX_AGE = 365 * 24 * 3600
_IGNORED_COOKIE_PREFIXES = ("__cf", "_cf", "cf_")


def _accept_q(accept: str, offer: str) -> float:
    """q of the most specific Accept range matching ``offer`` (0 when none matches)."""
    main = offer.split("/")[0]
    best, best_rank = 0.0, -1
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        rank = 2 if media == offer else 1 if media == f"{main}/*" else 0 if media == "*/*" else -1
        if rank < 0 or rank < best_rank:
            continue
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        best, best_rank = q, rank
    return best


def is_json_request(request: Request) -> bool:
    """Kratos' ``x.IsJSONRequest``: Accept prefers JSON over HTML, or the body is JSON."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        return True
    accept = request.headers.get("accept", "")
    return bool(accept) and _accept_q(accept, "application/json") > _accept_q(accept, "text/html")


def has_browser_markers(request: Request) -> bool:
    if request.headers.get("origin"):
        return True
    return any(not name.startswith(_IGNORED_COOKIE_PREFIXES) for name in request.cookies)


# Outcome class name -> result label; a re-shown flow is a rejected (or intermediate) submission.
SUBMISSION_RESULTS = {
    "Completed": "success",
    "ShowFlow": "shown",
    "FlowReplaced": "expired",
    "AlreadySignedIn": "already_signed_in",
}


@dataclass(frozen=True, slots=True)
class HttpContext:
    """What handlers share: config, the session manager and trusted proxies."""

    config: Config
    sessions: SessionManager
    proxies: TrustedProxies
    public_identity: Callable[[Identity], dict[str, Any]]
    """The identity as self-service callers may see it (no credentials, no ``metadata_admin``)."""
    metrics: Metrics | None = None
    audit: AuditLog = field(default_factory=AuditLog.off)

    def count_submission(
        self, kind: str, body: Mapping[str, Any] | None, outcome: object, request: Request
    ) -> None:
        """One ``sidecar_flow_submissions_total`` sample: flow, submitted method, what became of it;
        and the audit event of a throttled attempt (a 429 error, or a flow shown again with 429)."""
        method = body.get("method") if body else None
        method = method if isinstance(method, str) and method.isidentifier() and len(method) <= 32 else "-"
        status = outcome.code if isinstance(outcome, errors.SidecarError) else getattr(outcome, "status", 0)
        if status == 429:
            headers = outcome.headers if isinstance(outcome, ShowFlow | errors.SidecarError) else {}
            retry = (headers or {}).get("Retry-After", "")
            self.audit.emit(
                "attempt.throttled",
                self.origin(request),
                flow=kind,
                method=method,
                retry_after=int(retry) if retry.isdigit() else None,
            )
        if self.metrics is None:
            return
        if status == 429:  # a 429 error, or the flow shown again by the throttle
            result = "rate_limited"
        elif isinstance(outcome, errors.SidecarError):
            result = f"error_{outcome.code}"
        else:
            result = SUBMISSION_RESULTS.get(type(outcome).__name__, "other")
        self.metrics.flow_submission(kind, method, result)

    def public_url(self, request: Request) -> str:
        """The request's URL as seen from outside: the public base URL + the path below the prefix."""
        path = request.url.path
        prefix = self.config.serve.public.prefix
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        query = request.url.query
        return self.config.public_base_url + path + (f"?{query}" if query else "")

    @property
    def csrf_cookie(self) -> str:
        return csrf.cookie_name(self.config.public_base_url)

    def client_ip(self, request: Request) -> str | None:
        return client_ip(request, self.proxies)

    def presented_token(self, request: Request, *, cookie: bool = True) -> str | None:
        """X-Session-Token, then the session cookie, then ``Authorization: Bearer`` (Kratos' order)."""
        token = request.headers.get("x-session-token")
        if token:
            return token
        token = request.cookies.get(self.config.session.cookie.name) if cookie else None
        if token:
            return token
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return value.strip() or None if scheme.lower() == "bearer" else None

    async def current_session(
        self, request: Request, *, cookie: bool = True
    ) -> tuple[Session | None, str | None]:
        token = self.presented_token(request, cookie=cookie)
        session = await self.sessions.resolve(token) if token else None
        return session, token if session else None

    async def client(
        self,
        request: Request,
        *,
        csrf_token: str | None = None,
        submitted: str | None = None,
        cookie_session: bool = True,
    ) -> Client:
        session, token = await self.current_session(request, cookie=cookie_session)
        cookie = request.cookies.get(self.csrf_cookie)
        return Client(
            ip=self.client_ip(request),
            user_agent=request.headers.get("user-agent"),
            csrf_token=csrf_token or (cookie if csrf.is_well_formed(cookie) else None),
            csrf_submitted=submitted or request.headers.get(csrf.HEADER),
            session=session,
            session_token=token,
            browser_markers=has_browser_markers(request),
            request_id=request.scope.get("sidecar.request_id"),
            trace_id=request.scope.get("sidecar.trace_id"),
            request=RequestInfo(
                method=request.method,
                url=str(request.url),
                headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw),
                cookies=tuple(request.cookies.items()),
            ),
        )

    def origin(self, request: Request) -> RequestOrigin:
        """Who and where, for an audit event outside a flow."""
        return request_origin(request, self.proxies)

    def ensure_csrf(self, request: Request) -> tuple[str, bool]:
        """The browser's CSRF base token, and whether it is new (and must be set as a cookie)."""
        cookie = request.cookies.get(self.csrf_cookie)
        if cookie is not None and csrf.is_well_formed(cookie):
            return cookie, False
        return csrf.new_token(), True

    @property
    def secure(self) -> bool:
        return cookie_secure(self.config)

    def set_csrf_cookie(self, response: Response, token: str) -> None:
        c = self.config.cookies
        response.set_cookie(
            self.csrf_cookie,
            token,
            max_age=CSRF_MAX_AGE,
            path=c.path,
            domain=c.domain,
            secure=self.secure,
            httponly=True,
            samesite=c.same_site.lower(),  # type: ignore[arg-type]
        )

    def set_session_cookie(self, response: Response, token: str, session: Session) -> None:
        c = self.config.session.cookie
        max_age = None
        if c.persistent:
            max_age = max(0, int((session.expires_at - utcnow()).total_seconds()))
        response.set_cookie(
            c.name,
            token,
            max_age=max_age,
            expires=max_age,
            path=c.path or self.config.cookies.path,
            domain=c.domain or self.config.cookies.domain,
            secure=self.secure,
            httponly=True,
            samesite=c.same_site.lower(),  # type: ignore[arg-type]
        )

    def clear_session_cookie(self, response: Response) -> None:
        c = self.config.session.cookie
        response.delete_cookie(
            c.name,
            path=c.path or self.config.cookies.path,
            domain=c.domain or self.config.cookies.domain,
            secure=self.secure,
            httponly=True,
            samesite=c.same_site.lower(),  # type: ignore[arg-type]
        )


def nest_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``traits.name.first=A`` → ``{"traits": {"name": {"first": "A"}}}`` (first value wins)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node.setdefault(parts[-1], value)
    return out


async def read_submission(request: Request, max_size: int) -> dict[str, Any]:
    """A submit body: JSON object or form-urlencoded (GET: the query string). A form is a
    ``FormBody``, whose traits the flow decodes against the identity schema as Kratos does."""
    if request.method == "GET":
        pairs = [(k, v) for k, v in request.query_params.multi_items() if k != "flow"]
        return FormBody(nest_form(pairs), pairs)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await read_body(request, max_size)
    if ctype == "application/json" or ctype.endswith("+json"):
        value = parse_json(raw) if raw.strip() else {}
        if not isinstance(value, dict):
            raise errors.BadRequest("the request body must be a JSON object")
        return value
    if ctype in ("application/x-www-form-urlencoded", ""):
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=1000)
        except UnicodeDecodeError:
            raise errors.BadRequest("the form body is not valid UTF-8") from None
        except ValueError:
            raise errors.BadRequest("the form body has too many fields") from None
        return FormBody(nest_form(pairs), pairs)
    raise errors.UnsupportedMediaType(f"unsupported Content-Type {ctype}")


def flow_json(flow: Flow, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(flow_to_json(flow), status, {**NO_STORE, **(headers or {})})


def see_other(url: str, headers: Mapping[str, str] | None = None) -> Response:
    return RedirectResponse(url, status_code=303, headers={**NO_STORE, **(headers or {})})


def show_flow(outcome: ShowFlow, life: FlowLifecycle, json_req: bool) -> Response:
    if outcome.flow.type == "browser" and not json_req:
        return see_other(life.ui_redirect(outcome.flow), outcome.headers)
    return flow_json(outcome.flow, outcome.status, outcome.headers)


def replaced(outcome: FlowReplaced, life: FlowLifecycle, json_req: bool) -> Response:
    if outcome.flow.type == "browser" and not json_req:
        return see_other(life.ui_redirect(outcome.flow))
    expired_at = outcome.expired.expires_at
    since = utcnow() - expired_at
    raise errors.FlowExpired(
        f"The {life.kind} flow expired {since / timedelta(minutes=1):.2f} minutes ago, please try again.",
        extra={
            "use_flow_id": str(outcome.flow.id),
            "expired_at": expired_at.isoformat().replace("+00:00", "Z"),
            "since": int(since / timedelta(microseconds=1)) * 1000,
        },
    )

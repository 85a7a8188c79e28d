"""Signing in to the console: the admin API key (or, without one, a loopback client) exchanged
for a console session behind an HttpOnly, SameSite=Strict cookie.

The session lives in the key-value store (shared by every worker, so a sign-out anywhere is a
sign-out everywhere) under the SHA-256 of the cookie's value; the cookie alone is worthless once
the record is gone. Each session carries its own CSRF token, which every form posts back; a
request the browser marks as cross-site (``Sec-Fetch-Site``) or from another ``Origin`` is
refused before the token is even read. Failed sign-ins are counted per client address, so the key
cannot be guessed at speed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from sidecar.console.audit import Actor
from sidecar.i18n import N_
from sidecar.kv.store import KeyValueStore

COOKIE = "sidecar_console"
LOGIN_CSRF_COOKIE = "sidecar_console_csrf"
COOKIE_PATH = "/console"
MAX_FAILURES = 10
FAILURE_WINDOW = timedelta(minutes=15)
_KEY = "console:session:"
_FAILURES = "console:signin-failures:"


class SignInRefused(Exception):
    """The sign-in was refused; ``str()`` is what the form shows (an English msgid, translated
    there; the audit line keeps the English)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    actor: Actor
    csrf: str
    expires_at: datetime
    language: str = ""
    """The language of this request's pages (``Pages`` negotiates it per request; "" before)."""


def client_ip(request: Request) -> str:
    # The direct peer only: the admin listener trusts no forwarding header.
    return request.client.host if request.client else ""


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def clean_name(raw: str) -> str:
    """The operator's name for the audit log: printable, trimmed, at most 64 characters."""
    kept = "".join(ch for ch in raw if unicodedata.category(ch)[0] not in ("C", "Z") or ch == " ")
    return " ".join(kept.split())[:64] or "admin"


class ConsoleAuth:
    def __init__(self, kv: KeyValueStore, api_key: str | None, lifespan: timedelta) -> None:
        self._kv = kv
        self._key = api_key.encode() if api_key else None
        self.lifespan = lifespan

    @property
    def needs_key(self) -> bool:
        return self._key is not None

    def may_try(self, request: Request) -> bool:
        """Without a key only loopback clients may sign in at all."""
        return self._key is not None or is_loopback(client_ip(request))

    async def sign_in(self, request: Request, presented_key: str, name: str) -> tuple[str, ConsoleSession]:
        """A new console session and its cookie value, or ``SignInRefused``."""
        ip = client_ip(request)
        failures = _FAILURES + ip
        if self._key is None:
            if not is_loopback(ip):
                raise SignInRefused(
                    N_(
                        "No admin API key is configured (serve.admin.api_key), so the console only "
                        "accepts sign-ins from this machine (loopback)."
                    ),
                    403,
                )
            via = "loopback"
        else:
            seen = await self._kv.get(failures)
            if seen is not None and int(seen) >= MAX_FAILURES:
                raise SignInRefused(N_("Too many failed sign-ins from your address; try again later."), 429)
            if not hmac.compare_digest(presented_key.encode(), self._key):
                await self._kv.incr(failures, FAILURE_WINDOW)
                raise SignInRefused(N_("That is not the admin API key."))
            await self._kv.delete(failures)
            via = "api_key"
        token = secrets.token_urlsafe(32)
        digest = _digest(token)
        expires_at = datetime.now(UTC) + self.lifespan
        session = ConsoleSession(
            actor=Actor(name=clean_name(name), via=via, session=digest[:12], client_ip=ip),
            csrf=secrets.token_urlsafe(32),
            expires_at=expires_at,
        )
        record = {
            "name": session.actor.name,
            "via": via,
            "ip": ip,
            "csrf": session.csrf,
            "expires_at": expires_at.isoformat(),
        }
        await self._kv.set(_KEY + digest, json.dumps(record).encode(), self.lifespan)
        return token, session

    async def current(self, request: Request) -> ConsoleSession | None:
        token = request.cookies.get(COOKIE)
        if not token or len(token) > 128:
            return None
        digest = _digest(token)
        raw = await self._kv.get(_KEY + digest)
        if raw is None:
            return None
        record = json.loads(raw)
        expires_at = datetime.fromisoformat(record["expires_at"])
        if expires_at <= datetime.now(UTC):
            return None
        actor = Actor(
            name=record["name"], via=record["via"], session=digest[:12], client_ip=client_ip(request)
        )
        return ConsoleSession(actor=actor, csrf=record["csrf"], expires_at=expires_at)

    async def sign_out(self, request: Request) -> None:
        token = request.cookies.get(COOKIE)
        if token and len(token) <= 128:
            await self._kv.delete(_KEY + _digest(token))

    # --- cookies --------------------------------------------------------------------------------

    def set_cookie(self, request: Request, response: Response, token: str) -> None:
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(self.lifespan.total_seconds()),
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def clear_cookie(self, request: Request, response: Response) -> None:
        response.delete_cookie(
            COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )

    @staticmethod
    def login_csrf(request: Request) -> tuple[str, bool]:
        """The sign-in form's double-submit token, and whether the cookie must be (re)set."""
        current = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if 20 <= len(current) <= 128:
            return current, False
        return secrets.token_urlsafe(32), True

    @staticmethod
    def set_login_csrf(request: Request, response: Response, token: str) -> None:
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site or origin.

    ``Sec-Fetch-Site`` is the browser's own verdict; ``Origin`` must name this host. A browser
    that sends ``Origin: null`` (privacy settings, some referrer policies) is believed only with
    ``Sec-Fetch-Site: same-origin``. The CSRF token is checked after this in any case.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return site == "same-origin"
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def token_matches(expected: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(expected.encode(), (presented or "").encode())

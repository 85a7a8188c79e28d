"""Logout (kratos-api.md §1.5): browser logout URLs bound to the cookie session, API token revocation.

The logout token (``ory_lo_`` + 32 alphanumerics) is stored on the session as a digest, so a
token is good only together with the session cookie it was made for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode

from sidecar import errors
from sidecar.audit import AuditLog, Origin
from sidecar.config.model import Config
from sidecar.security.return_to import resolve_return_to
from sidecar.session.manager import SessionManager
from sidecar.session.model import Session


@dataclass(frozen=True, slots=True)
class LogoutUrl:
    logout_url: str
    logout_token: str


class SingleLogout(Protocol):
    """Single logout at the identity provider the session came from (SAML SLO)."""

    async def logout_url(self, session: Session, target: str) -> str | None:
        """Where to send the browser after the local logout (the identity provider's logout, which
        comes back to ``target``), or None to go to ``target`` at once."""
        ...


class LogoutFlows:
    def __init__(
        self,
        config: Config,
        sessions: SessionManager,
        *,
        audit: AuditLog | None = None,
        single_logout: SingleLogout | None = None,
    ) -> None:
        self._config = config
        self._single_logout = single_logout
        self._audit = audit or AuditLog.off()
        self._sessions = sessions
        self._base = config.public_base_url

    def _return_to(self, raw: str | None) -> str | None:
        ss = self._config.selfservice
        return resolve_return_to(
            raw,
            allowed=ss.allowed_return_urls,
            public_base_url=self._base,
            default_url=ss.default_browser_return_url,
        )

    async def create_browser(self, session: Session | None, return_to: str | None) -> LogoutUrl:
        if session is None:
            raise errors.SessionInactive()
        checked = self._return_to(return_to)
        token = await self._sessions.bind_logout_token(session)
        query = {"token": token, **({"return_to": checked} if checked else {})}
        return LogoutUrl(f"{self._base}/self-service/logout?{urlencode(query)}", token)

    def after_url(self, return_to: str | None) -> str:
        ss = self._config.selfservice
        return (
            self._return_to(return_to)
            or ss.flows.logout.after.default_browser_return_url
            or ss.default_browser_return_url
            or self._base + "/ui/login"
        )

    async def perform_browser(
        self, token: str | None, session: Session | None, return_to: str | None, origin: Origin | None = None
    ) -> str:
        """Revoke the cookie session when ``token`` was made for it; the URL to send the browser to."""
        if not token:
            raise errors.BadRequest("Please include a token in the URL query.", reason="missing logout token")
        target = self.after_url(return_to)
        if session is None or not self._sessions.logout_token_matches(session, token):
            raise errors.Forbidden(
                "Unable to log out because the logout token in the URL query does not match "
                "the session cookie.",
                reason="The logout token does not belong to this session.",
            )
        await self._sessions.revoke(session)
        self._audit.emit("logout", origin, identity_id=session.identity_id, session_id=session.id)
        if self._single_logout is not None:
            return await self._single_logout.logout_url(session, target) or target
        return target

    async def perform_api(self, session_token: object, origin: Origin | None = None) -> None:
        if not isinstance(session_token, str) or not session_token:
            raise errors.BadRequest("session_token must be a non-empty string", reason="malformed body")
        session = await self._sessions.resolve(session_token)
        if session is None:
            raise errors.Forbidden(
                "The provided session token is unknown or no longer valid.", reason="unknown session token"
            )
        await self._sessions.revoke(session)
        self._audit.emit("logout", origin, identity_id=session.identity_id, session_id=session.id)

"""An identity's sessions on its detail page (device, times, methods); revoke one or all.

Revoking goes through ``SessionManager``, which also tells every worker's session cache, so the
proxy stops honouring the session at once, as after the admin API's ``DELETE /admin/sessions/{id}``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sidecar import errors
from sidecar.console.auth import ConsoleSession
from sidecar.console.identities import identity_url
from sidecar.console.listing import path_id
from sidecar.console.pages import Form, Pages
from sidecar.i18n import N_
from sidecar.identity.model import Identity
from sidecar.session.manager import SessionManager

MAX_SHOWN = 50
"""The newest sessions shown on the detail page; "revoke all" still reaches every one."""


class SessionSection:
    def __init__(self, pages: Pages, sessions: SessionManager) -> None:
        self.pages = pages
        self.sessions = sessions

    async def detail_context(self, identity: Identity) -> dict[str, Any]:
        now = datetime.now(UTC)
        found = sorted(
            await self.sessions.list_for_identity(identity.id), key=lambda s: s.authenticated_at, reverse=True
        )
        rows = []
        last_used: dict[str, datetime] = {}
        for s in found:
            for m in s.authentication_methods:
                if m.method not in last_used or m.completed_at > last_used[m.method]:
                    last_used[m.method] = m.completed_at
        for s in found[:MAX_SHOWN]:
            device = s.devices[0] if s.devices else None
            rows.append(
                {
                    "id": str(s.id),
                    "live": s.is_valid(now),
                    "aal": s.aal,
                    "methods": [m.method for m in s.authentication_methods],
                    "authenticated_at": s.authenticated_at,
                    "expires_at": s.expires_at,
                    "ip": device.ip_address if device else None,
                    "user_agent": device.user_agent if device else None,
                }
            )
        return {"sessions": rows, "sessions_hidden": max(len(found) - MAX_SHOWN, 0), "last_used": last_used}

    async def revoke(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        identity_id = path_id(request, "identity")
        session = await self.sessions.get(path_id(request, "session", "session_id"))
        if session is None or session.identity_id != identity_id:
            raise errors.NotFound(N_("This identity has no such session."))
        await self.sessions.revoke(session)
        self.pages.audit.record(
            signed_in.actor, "session.revoke", identity_id=identity_id, detail=f"session {session.id}"
        )
        self.pages.audit.security(
            "session.revoked", request, identity_id=identity_id, session_id=str(session.id), count=1
        )
        return self.pages.redirect(f"{identity_url(identity_id)}?done=session#sessions")

    async def revoke_all(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        identity_id = path_id(request, "identity")
        # Revoked, not deleted: the list keeps showing them, as inactive.
        count = await self.sessions.revoke_others(identity_id, None)
        self.pages.audit.record(
            signed_in.actor, "session.revoke_all", identity_id=identity_id, detail=f"{count} sessions"
        )
        self.pages.audit.security("session.revoked", request, identity_id=identity_id, count=count)
        return self.pages.redirect(f"{identity_url(identity_id)}?done=sessions#sessions")

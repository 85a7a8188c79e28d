"""Recovery for an identity: a link or a code made by the admin, shown once and never stored here.

The flow is made by ``RecoveryFlows.create_for_admin``, exactly as ``POST /admin/recovery/link``
and ``/code`` make it, and the page that shows the secret is ``no-store``. The audit line says a
secret was made, never the secret.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from sidecar import errors
from sidecar.api.admin.recovery import MAX_EXPIRES_IN, AdminRecoveryFlows
from sidecar.config.model import SelfService, parse_duration
from sidecar.console.auth import ConsoleSession
from sidecar.console.listing import path_id
from sidecar.console.pages import Form, Pages, Problem
from sidecar.i18n import N_, Phrase
from sidecar.identity.manager import IdentityManager
from sidecar.identity.model import Identity
from sidecar.ui.wording import primary_identifier


class RecoverySection:
    def __init__(
        self,
        pages: Pages,
        recovery: AdminRecoveryFlows,
        identities: IdentityManager,
        selfservice: SelfService,
        public_base_url: str,
    ) -> None:
        self.pages = pages
        self.recovery = recovery
        self.identities = identities
        methods = selfservice.methods
        enabled = selfservice.flows.recovery.enabled
        self.kinds = [
            k for k, on in (("code", methods.code.enabled), ("link", methods.link.enabled)) if on and enabled
        ]
        self.public_base_url = public_base_url

    async def detail_context(self, identity: Identity) -> dict[str, Any]:
        return {"recovery_enabled": bool(self.kinds), "recovery_kinds": self.kinds}

    async def create(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        identity_id = path_id(request, "identity")
        identity = await self.identities.get(identity_id)
        kind = form.get("kind", "")
        if kind not in self.kinds:
            raise Problem(400, Phrase(N_("The recovery method “{kind}” is not enabled."), kind=kind[:16]))
        expires_in: timedelta | None = None
        raw = form.get("expires_in", "").strip()
        if raw:
            try:
                expires_in = parse_duration(raw)
            except ValueError:
                expires_in = None
            if expires_in is None or not timedelta(0) < expires_in <= MAX_EXPIRES_IN:
                raise errors.BadRequest(
                    N_("Valid for: a positive duration of at most 365 days, such as 15m or 1h.")
                )
        made = await self.recovery.create_for_admin(
            identity, kind=kind, flow_type="browser", expires_in=expires_in
        )
        if kind == "link":
            link = f"{self.public_base_url}/self-service/recovery?" + urlencode(
                {"flow": str(made.flow.id), "token": made.secret}
            )
            code = None
        else:
            link = f"{self.public_base_url}/self-service/recovery?flow={made.flow.id}"
            code = made.secret
        self.pages.audit.record(
            signed_in.actor, f"recovery.{kind}", identity_id=identity.id, detail="shown once"
        )
        context = {
            "title": Phrase(N_("Recovery code") if code else N_("Recovery link")),
            "identity": identity,
            "identifier": primary_identifier(identity.traits) or str(identity.id),
            "link": link,
            "code": code,
            "expires_at": made.expires_at,
        }
        return self.pages.render("recovery.html", context, signed_in=signed_in, section="identities")

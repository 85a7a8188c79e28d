"""The console's audit trail: one log line per action, saying who did what to which identity.

Lines go to the ``sidecar.console.audit`` logger, which ``configure_logging`` keeps at ``info``
whatever ``log.level`` says: an operator may silence the access log, never the record of admin
actions. In the JSON format each field is a key; in the text format the message carries them all.

Changes to identities and sessions are also security audit events (``sidecar.audit``,
``log.audit``), written exactly as the admin API writes them but with ``actor: console``, so one
stream holds every change whichever door it came through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from sidecar.api.origin import RequestAudit

log = logging.getLogger("sidecar.console.audit")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is signed in to the console."""

    name: str
    """What the operator typed at sign-in (``admin`` when nothing), for people reading the log."""
    via: str
    """``api_key`` or ``loopback``: what let them in."""
    session: str
    """A short, non-secret handle of the console session (the first characters of its digest)."""
    client_ip: str


class Audit:
    def __init__(self, security: RequestAudit | None = None, logger: logging.Logger | None = None) -> None:
        self._log = logger or log
        self._security = security or RequestAudit.off()

    def security(self, event: str, request: Request, *, identity_id: object, **fields: Any) -> None:
        """A security audit event (``sidecar/audit.py``'s table) for a change made in the console."""
        self._security.emit(event, request, identity_id=str(identity_id), actor="console", **fields)

    def record(
        self,
        actor: Actor | None,
        action: str,
        *,
        identity_id: object = None,
        result: str = "ok",
        detail: str = "",
        client_ip: str = "",
    ) -> None:
        """``action`` is a dotted verb (``identity.update``); ``result`` ``ok``, ``refused`` or ``failed``."""
        fields = {
            "audit": "console",
            "actor": actor.name if actor else "-",
            "actor_via": actor.via if actor else "-",
            "console_session": actor.session if actor else "-",
            "client_ip": actor.client_ip if actor else client_ip,
            "action": action,
            "identity_id": str(identity_id) if identity_id is not None else None,
            "result": result,
        }
        if detail:
            fields["detail"] = detail
        text = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and k != "audit")
        self._log.info("console %s", text, extra=fields)

"""The console's audit trail: one log line per action, saying who did what to which identity.

Lines go to the ``sidecar.audit`` logger, which ``configure_logging`` keeps at ``info`` whatever
``log.level`` says: an operator may silence the access log, never the record of admin actions.
In the JSON format each field is a key; in the text format the message carries them all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("sidecar.audit")


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
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log

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

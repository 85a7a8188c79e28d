"""Session JSON in Kratos' shape (OpenAPI ``session``; kratos-api.md §3.2).

The token is never part of it. ``identity`` is passed in already encoded for the audience: the
public view (no credentials, no ``metadata_admin``) for self-service, the admin view for admin.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sidecar.session.model import Session


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def session_to_json(
    session: Session, identity: dict[str, Any] | None, *, include_devices: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(session.id),
        "active": session.active,
        "expires_at": _time(session.expires_at),
        "authenticated_at": _time(session.authenticated_at),
        "authenticator_assurance_level": session.aal,
        "authentication_methods": [
            {
                "method": m.method,
                "aal": m.aal,
                "completed_at": _time(m.completed_at),
                **({"provider": m.provider} if m.provider else {}),
            }
            for m in session.authentication_methods
        ],
        "issued_at": _time(session.issued_at),
    }
    if identity is not None:
        out["identity"] = identity
    if include_devices:
        out["devices"] = [
            {
                "id": str(d.id),
                **({"ip_address": d.ip_address} if d.ip_address else {}),
                **({"user_agent": d.user_agent} if d.user_agent else {}),
                **({"location": d.location} if d.location else {}),
            }
            for d in session.devices
        ]
    return out

"""Session <-> JSON, shared by the Redis and SQL session stores.

One codec means a session written by one backend reads back identically from the other, and the
wire shape is plain JSON (ISO-8601 datetimes with offset, UUIDs as strings) that an operator can
inspect in ``redis-cli`` or ``psql``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sidecar.session.model import AuthenticationMethod, Device, Session
from sidecar.slotted import builder
from sidecar.storage.values import json_document, parse_uuid

_method, _device, _session = builder(AuthenticationMethod), builder(Device), builder(Session)


def encode_datetime(value: datetime) -> str:
    # Naive datetimes are taken as UTC so a round trip never shifts a timestamp by the host offset.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def decode_datetime(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is UTC:  # what encode_datetime writes ("+00:00" parses to UTC itself)
        return parsed
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


_PROVIDER_SESSION = ("subject", "subject_format", "session_index")
"""Written only when set: most methods have none, and older documents lack them."""


def _method_to_dict(method: AuthenticationMethod) -> dict[str, Any]:
    out = {
        "method": method.method,
        "aal": method.aal,
        "completed_at": encode_datetime(method.completed_at),
        "provider": method.provider,
    }
    for key in _PROVIDER_SESSION:
        value = getattr(method, key)
        if value is not None:
            out[key] = value
    return out


def _method_from_dict(data: dict[str, Any]) -> AuthenticationMethod:
    return _method(
        method=data["method"],
        aal=data.get("aal", "aal1"),
        completed_at=decode_datetime(data["completed_at"]),
        provider=data.get("provider"),
        subject=data.get("subject"),
        subject_format=data.get("subject_format"),
        session_index=data.get("session_index"),
    )


def _device_to_dict(device: Device) -> dict[str, Any]:
    return {
        "id": str(device.id),
        "ip_address": device.ip_address,
        "user_agent": device.user_agent,
        "location": device.location,
    }


def _device_from_dict(data: dict[str, Any]) -> Device:
    return _device(
        id=parse_uuid(data["id"]),
        ip_address=data.get("ip_address"),
        user_agent=data.get("user_agent"),
        location=data.get("location"),
    )


def session_to_dict(session: Session) -> dict[str, Any]:
    return {
        "id": str(session.id),
        "identity_id": str(session.identity_id),
        "active": session.active,
        "expires_at": encode_datetime(session.expires_at),
        "issued_at": encode_datetime(session.issued_at),
        "authenticated_at": encode_datetime(session.authenticated_at),
        "aal": session.aal,
        "authentication_methods": [_method_to_dict(m) for m in session.authentication_methods],
        "devices": [_device_to_dict(d) for d in session.devices],
        "logout_token_digest": session.logout_token_digest,
        "extra": session.extra,
    }


def session_from_dict(
    data: dict[str, Any], *, active: bool | None = None, expires_at: datetime | None = None
) -> Session:
    """``active`` and ``expires_at``, when given, win over the document's (the SQL store's columns)."""
    return _session(
        id=parse_uuid(data["id"]),
        identity_id=parse_uuid(data["identity_id"]),
        active=bool(data["active"]) if active is None else active,
        expires_at=decode_datetime(data["expires_at"]) if expires_at is None else expires_at,
        issued_at=decode_datetime(data["issued_at"]),
        authenticated_at=decode_datetime(data["authenticated_at"]),
        aal=data.get("aal", "aal1"),
        authentication_methods=tuple(map(_method_from_dict, data.get("authentication_methods", ()))),
        devices=tuple(map(_device_from_dict, data.get("devices", ()))),
        logout_token_digest=data.get("logout_token_digest"),
        extra=dict(data.get("extra") or {}),
    )


def dumps_session(session: Session, **envelope: Any) -> bytes:
    """Compact JSON bytes; ``envelope`` adds backend bookkeeping fields (e.g. the token digest)."""
    return json.dumps({**session_to_dict(session), **envelope}, separators=(",", ":")).encode()


def loads_session(raw: bytes | str) -> tuple[Session, dict[str, Any]]:
    """The session and the full decoded document (so callers can read their envelope fields)."""
    data: dict[str, Any] = json_document(raw) if isinstance(raw, bytes) else json.loads(raw)
    return session_from_dict(data), data

"""Session values (Kratos shape, kratos-api.md §3.2). Tokens never live in these objects."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sidecar.identity.model import new_id, utcnow


@dataclass(frozen=True, slots=True)
class AuthenticationMethod:
    method: str
    aal: str = "aal1"
    completed_at: datetime = field(default_factory=utcnow)
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class Device:
    ip_address: str | None = None
    user_agent: str | None = None
    location: str | None = None
    id: uuid.UUID = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class Session:
    identity_id: uuid.UUID
    expires_at: datetime
    id: uuid.UUID = field(default_factory=new_id)
    active: bool = True
    issued_at: datetime = field(default_factory=utcnow)
    authenticated_at: datetime = field(default_factory=utcnow)
    aal: str = "aal1"
    authentication_methods: tuple[AuthenticationMethod, ...] = ()
    devices: tuple[Device, ...] = ()
    logout_token_digest: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def is_valid(self, now: datetime) -> bool:
        return self.active and self.expires_at > now

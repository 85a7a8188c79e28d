"""Session values (Kratos shape, kratos-api.md §3.2). Tokens never live in these objects."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sidecar.identity.model import new_id, utcnow


@dataclass(frozen=True, slots=True)
class ProviderSignIn:
    """What a federated sign-in tells the session it starts: which connection or provider (SAML,
    OIDC), and for SAML's single logout the subject it named and the identity provider's own
    session."""

    provider: str
    subject: str | None = None
    subject_format: str | None = None
    session_index: str | None = None


@dataclass(frozen=True, slots=True)
class AuthenticationMethod:
    method: str
    aal: str = "aal1"
    completed_at: datetime = field(default_factory=utcnow)
    provider: str | None = None
    """Kratos: the provider (SAML connection, OIDC provider id) the method signed in with."""
    subject: str | None = None
    """Sidecar-only, stored but never shown: the subject the provider named (the SAML NameID)."""
    subject_format: str | None = None
    """Sidecar-only: the NameID's ``Format`` (a LogoutRequest must repeat it)."""
    session_index: str | None = None
    """Sidecar-only: the identity provider's session (the SAML ``SessionIndex``), so its single
    logout ends this session and no other."""

    @classmethod
    def of(
        cls, method: str, aal: str, completed_at: datetime, via: ProviderSignIn | None = None
    ) -> AuthenticationMethod:
        if via is None:
            return cls(method=method, aal=aal, completed_at=completed_at)
        return cls(
            method=method,
            aal=aal,
            completed_at=completed_at,
            provider=via.provider,
            subject=via.subject,
            subject_format=via.subject_format,
            session_index=via.session_index,
        )


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

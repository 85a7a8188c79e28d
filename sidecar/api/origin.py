"""Who and where a request came from, as audit events record it (``sidecar.audit.Origin``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from starlette.requests import Request

from sidecar.audit import AuditLog, RequestOrigin
from sidecar.security.trusted_proxies import TrustedProxies


def client_ip(request: Request, proxies: TrustedProxies) -> str | None:
    """The peer, or the client a trusted proxy names in ``X-Forwarded-For``."""
    peer = request.client.host if request.client else None
    xff = request.headers.get("x-forwarded-for")
    return proxies.client_address(peer, xff.encode("latin-1") if xff else None) or None


def request_origin(request: Request, proxies: TrustedProxies) -> RequestOrigin:
    return RequestOrigin(
        ip=client_ip(request, proxies),
        user_agent=request.headers.get("user-agent"),
        request_id=request.scope.get("sidecar.request_id"),
        trace_id=request.scope.get("sidecar.trace_id"),
    )


@dataclass(frozen=True, slots=True)
class RequestAudit:
    """The audit log as HTTP handlers use it: the event's origin read from the request."""

    log: AuditLog
    proxies: TrustedProxies

    def emit(
        self, event: str, request: Request, *, identity_id: UUID | str | None = None, **fields: Any
    ) -> None:
        self.log.emit(event, request_origin(request, self.proxies), identity_id=identity_id, **fields)

    @classmethod
    def off(cls) -> RequestAudit:
        return cls(AuditLog.off(), TrustedProxies.parse([]))

"""The error tree. Each class knows its Kratos error id, HTTP status and reason.

Nothing here imports HTTP code: ``sidecar.api.respond`` is the single place that turns
these into Kratos' JSON envelope (``{"error": {"id", "code", "status", "reason", "message"}}``),
an HTML page or a browser redirect.

    SidecarError
    ├── BadRequest (400)
    │   ├── ValidationError        schema violations; carries per-path messages
    │   ├── SessionAlreadyAvailable
    │   ├── ReturnToForbidden
    │   ├── FlowDisabled
    │   └── IdentityDisabled
    ├── Unauthorized (401)  ─ SessionInactive, SessionAAL1Required, AALAlreadyFulfilled
    ├── Forbidden (403)     ─ CSRFViolation, IdentityMismatch, AAL2Required, RefreshRequired
    ├── NotFound (404)
    ├── Conflict (409)      ─ DuplicateCredentials
    ├── FlowExpired (410)
    ├── PayloadTooLarge (413)
    ├── UnsupportedMediaType (415)
    ├── BrowserLocationChangeRequired (422)
    ├── TooManyRequests (429)
    ├── BadGateway (502) / ServiceUnavailable (503) / GatewayTimeout (504)
    └── InternalError (500)  never for client input
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar


class SidecarError(Exception):
    code: ClassVar[int] = 500
    error_id: ClassVar[str | None] = None
    reason: ClassVar[str] = ""
    default_message: ClassVar[str] = "an internal error occurred"

    def __init__(
        self,
        message: str | None = None,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        if reason is not None:
            self.reason = reason  # type: ignore[misc]
        self.details = details or {}
        # Top-level siblings of "error" in Kratos' envelope: redirect_browser_to, use_flow_id, ...
        self.extra = extra or {}
        self.headers = headers or {}
        super().__init__(self.message)

    @property
    def status(self) -> str:
        return HTTPStatus(self.code).phrase

    def to_dict(self, request_id: str | None = None) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "status": self.status, "message": self.message}
        if self.error_id:
            err["id"] = self.error_id
        if self.reason:
            err["reason"] = self.reason
        if self.details:
            err["details"] = self.details
        if request_id:
            err["request"] = request_id
        return {"error": err, **self.extra}


class BadRequest(SidecarError):
    code = 400
    default_message = "The request was malformed or contained invalid parameters"


class ValidationError(BadRequest):
    """Input failed validation. ``messages`` maps a JSON pointer-ish path to readable texts."""

    default_message = "The request was malformed or contained invalid parameters"

    def __init__(self, reason: str, *, messages: dict[str, list[str]] | None = None) -> None:
        super().__init__(reason=reason, details={"messages": messages} if messages else None)
        self.messages = messages or {}


class SessionAlreadyAvailable(BadRequest):
    error_id = "session_already_available"
    reason = "A valid session was detected and thus login is not possible."
    default_message = "A valid session was detected and thus login is not possible."


class ReturnToForbidden(BadRequest):
    error_id = "self_service_flow_return_to_forbidden"
    reason = "The return_to address is not allowed."
    default_message = "Requested return_to URL is not allowed."


class FlowDisabled(BadRequest):
    error_id = "self_service_flow_disabled"
    reason = "This endpoint was disabled by system administrator."
    default_message = "This endpoint was disabled by system administrator."


class IdentityDisabled(BadRequest):
    error_id = "identity_disabled"
    reason = "The identity is disabled."
    default_message = "The identity is disabled."


class VerifiedAddressRequired(BadRequest):
    error_id = "session_verified_address_required"
    reason = "Your account's email or phone address are not yet verified."
    default_message = "Your account's email or phone address are not yet verified."


class Unauthorized(SidecarError):
    code = 401
    default_message = "The request could not be authorized"


class SessionInactive(Unauthorized):
    error_id = "session_inactive"
    reason = "No active session was found in this request."
    default_message = "request does not have a valid authentication session"


class SessionAAL1Required(Unauthorized):
    error_id = "session_aal1_required"
    reason = "You can not requested a higher AAL (AAL2/AAL3) without an active session."
    default_message = "aal2 and aal3 can only be requested if a session exists already"


class AALAlreadyFulfilled(Unauthorized):
    error_id = "session_aal_already_fulfilled"
    reason = "The session already has the requested authenticator assurance level."
    default_message = "session has the requested authenticator assurance level already"


class Forbidden(SidecarError):
    code = 403
    default_message = "The requested action was forbidden"


class CSRFViolation(Forbidden):
    error_id = "security_csrf_violation"
    reason = (
        "Please retry the flow and optionally clear your cookies. The request was rejected to "
        "protect you from Cross-Site-Request-Forgery (CSRF) which could cause account takeover, "
        "leaking personal information, and other serious security issues."
    )
    default_message = "the request was rejected to protect you from Cross-Site-Request-Forgery"


class IdentityMismatch(Forbidden):
    error_id = "security_identity_mismatch"
    reason = "The flow was interrupted because the identity of the session does not match the flow."
    default_message = "the requested flow belongs to a different identity"


class AAL2Required(Forbidden):
    error_id = "session_aal2_required"
    reason = "An active session was found but it does not fulfill the Authenticator Assurance Level."
    default_message = "Session does not fulfill the requested Authenticator Assurance Level"


class RefreshRequired(Forbidden):
    error_id = "session_refresh_required"
    reason = (
        "The login session is too old and thus not allowed to update these fields. Please re-authenticate."
    )
    default_message = "The login session is too old and thus not allowed to update these fields."


class NotFound(SidecarError):
    code = 404
    default_message = "The requested resource could not be found"


class MethodNotAllowed(SidecarError):
    code = 405
    default_message = "The requested method is not allowed"


class Conflict(SidecarError):
    code = 409
    default_message = "The resource could not be created due to a conflict"


class DuplicateCredentials(Conflict):
    """A new identity collided with an existing account; ``hints`` (``login_hints``) says how that
    account signs in: Kratos' ``available_credential_types``, ``available_oidc_providers`` and
    ``credential_identifier_hint``."""

    def __init__(self, message: str | None = None, *, hints: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.hints = hints


class FlowExpired(SidecarError):
    code = 410
    error_id = "self_service_flow_expired"
    reason = "The self-service flow expired, please retry."
    default_message = "self-service flow expired"


class FlowReplaced(SidecarError):
    code = 410
    error_id = "self_service_flow_replaced"
    reason = "The self-service flow was replaced by another flow."
    default_message = "self-service flow replaced"


class PayloadTooLarge(SidecarError):
    code = 413
    default_message = "The request body is too large"


class UnsupportedMediaType(SidecarError):
    code = 415
    default_message = "The request content type is not supported"


class BrowserLocationChangeRequired(SidecarError):
    code = 422
    error_id = "browser_location_change_required"
    reason = "In order to complete this flow please redirect the browser to the given location."
    default_message = "browser location change required"


class TooManyRequests(SidecarError):
    code = 429
    default_message = "Too many requests, please retry later"


class InternalError(SidecarError):
    code = 500
    default_message = "An internal server error occurred, please contact the system administrator"


class BadGateway(SidecarError):
    code = 502
    default_message = "The upstream service could not be reached"


RETRY_AFTER_SECONDS = 3
"""What a 503 tells clients to wait: about one Redis failover or PostgreSQL restart
(docs/SCALING.md, measured)."""


class ServiceUnavailable(SidecarError):
    code = 503
    default_message = "A required backend is unavailable, please retry later"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        # A store outage is transient: tell clients (and nginx, browsers, SDK retries) when to
        # come back instead of leaving them to hammer a recovering backend.
        self.headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))


class GatewayTimeout(SidecarError):
    code = 504
    default_message = "The upstream service did not answer in time"

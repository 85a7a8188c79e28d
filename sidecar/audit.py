"""Security audit events: one JSON line per security-relevant fact, on a stream of their own.

One ``AuditLog`` is built in ``app.build_services`` from ``log.audit`` and handed to whoever
records a fact (flows, the admin and session endpoints); nothing here is global. Every event
names who and where: the identity id (never a secret), the client IP as the trusted proxies
report it, the user agent, the request id and the trace id (``Origin``).

What an event may carry is closed: ``EVENTS`` lists each event's own fields, and ``emit``
refuses any other name, so a token, cookie, password or code can only reach the audit log by
someone adding a field to this table (docs/AUDIT.md is checked against it by a test).

An ``AuditForwarder`` (``log.audit.webhook``: ``webhooks/audit_forward.py``), when given, gets
each event too, as the same JSON object as the line, and enqueues it in the web hook outbox.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID

AUDIT_VERSION = 1


class Origin(Protocol):
    """Where a fact came from (``flows.outcome.Client`` is one)."""

    @property
    def ip(self) -> str | None: ...

    @property
    def user_agent(self) -> str | None: ...

    @property
    def request_id(self) -> str | None: ...

    @property
    def trace_id(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class RequestOrigin:
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    trace_id: str | None = None


NO_ORIGIN = RequestOrigin()


@dataclass(frozen=True, slots=True)
class EventSpec:
    description: str
    fields: tuple[str, ...]


# Field meanings (docs/AUDIT.md): method = the Kratos method id (password, totp, code, oidc, ...);
# aal = the session's assurance level after the fact; reason = a stable id (a Kratos UI message
# id such as 4000006, or an error id), never free text a user typed; session_id and flow_id are
# record ids, not tokens; actor = who did it (self, admin_api, console).
EVENTS: dict[str, EventSpec] = {
    "login.succeeded": EventSpec(
        "A login flow completed: a session was issued, refreshed or raised to aal2.",
        ("method", "aal", "session_id", "flow_id", "flow_type"),
    ),
    "login.failed": EventSpec(
        "A login submission was refused (wrong credentials, unknown identifier, bad code, ...).",
        ("method", "reason", "flow_id", "flow_type"),
    ),
    "registration.succeeded": EventSpec(
        "A registration flow created an identity.", ("method", "session_id", "flow_id", "flow_type")
    ),
    "logout": EventSpec("A session ended by logout (browser or API).", ("session_id",)),
    "session.revoked": EventSpec(
        "Sessions revoked other than by logout: by their owner or through the admin API.",
        ("actor", "session_id", "count"),
    ),
    "mfa.enrolled": EventSpec("A second factor was set up in the settings flow.", ("method", "flow_id")),
    "mfa.removed": EventSpec("A second factor was removed in the settings flow.", ("method", "flow_id")),
    "password.changed": EventSpec("The password was set or changed in the settings flow.", ("flow_id",)),
    "recovery.started": EventSpec(
        "A recovery code or link was requested (for an unknown address nothing is sent; "
        "the event is written all the same, without an identity).",
        ("method", "flow_id", "flow_type"),
    ),
    "recovery.completed": EventSpec(
        "A recovery code or link was accepted: the identity got a privileged session.",
        ("method", "session_id", "flow_id", "flow_type"),
    ),
    "verification.started": EventSpec(
        "A verification code or link was requested.", ("method", "flow_id", "flow_type")
    ),
    "verification.completed": EventSpec(
        "An address was verified.", ("method", "via", "flow_id", "flow_type")
    ),
    "attempt.throttled": EventSpec(
        "A submission was refused with 429 by the brute-force throttle or a rate limit.",
        ("flow", "method", "retry_after"),
    ),
    "identity.created": EventSpec("An identity was created through the admin API.", ("actor",)),
    "identity.updated": EventSpec(
        "An identity was changed through the admin API (PUT, PATCH, credential removed).",
        ("actor", "operation"),
    ),
    "identity.deleted": EventSpec("An identity was deleted through the admin API.", ("actor",)),
    "webhook.dead_lettered": EventSpec(
        "A fire-and-forget web hook delivery gave up after `webhooks.max_attempts` (it stays "
        "listed at `/admin/webhooks/deliveries?status=dead`, where it can be retried).",
        ("delivery_id", "hook_id", "attempts", "status_code"),
    ),
}

Scalar = str | int | bool | None


class AuditForwarder(Protocol):
    """Where events go besides the line (the outbox for ``log.audit.webhook``)."""

    def forward(self, event: str, entry: dict[str, object], body: bytes) -> None:
        """``body`` is the line without its newline; must not raise, must not block."""
        ...


def _ident(value: UUID | str | None) -> str | None:
    return str(value) if value is not None else None


class AuditLog:
    """Writes audit events as JSON lines to ``path`` (``-``: standard output), or nowhere when off.

    Each event is one ``write`` of one line on an ``O_APPEND`` descriptor, so the lines of several
    worker processes sharing one file never interleave (POSIX appends of a line this size are
    atomic on local file systems). Events are rare next to requests: no buffering, no thread.
    """

    def __init__(
        self,
        path: str | None,
        *,
        clock: Callable[[], datetime] | None = None,
        service: str = "sidecar",
        forwarder: AuditForwarder | None = None,
    ) -> None:
        self.path = path
        self._forwarder = forwarder
        self.enabled = path is not None
        self._clock = clock or (lambda: datetime.now(UTC))
        self._service = service
        self._fd: int | None = None

    @classmethod
    def off(cls) -> AuditLog:
        return cls(None)

    def open(self) -> None:
        """Open the file now (``sidecar serve`` does, so a bad path fails the start, not a login)."""
        if self.path is None or self._fd is not None:
            return
        if self.path == "-":
            self._fd = 1
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def close(self) -> None:
        if self._fd is not None and self._fd > 2:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None

    def emit(
        self,
        event: str,
        origin: Origin | None,
        *,
        identity_id: UUID | str | None = None,
        **fields: Scalar | UUID,
    ) -> None:
        spec = EVENTS.get(event)
        if spec is None:
            raise ValueError(f"unknown audit event {event!r}")
        unknown = set(fields) - set(spec.fields)
        if unknown:
            raise ValueError(f"audit event {event!r} has no field(s) {sorted(unknown)}")
        if not self.enabled:
            return
        o = origin or NO_ORIGIN
        entry: dict[str, object] = {
            "time": self._clock().isoformat(timespec="milliseconds"),
            "event": event,
            "version": AUDIT_VERSION,
            "service": self._service,
            "identity_id": _ident(identity_id),
            "client_ip": o.ip,
            "user_agent": (o.user_agent or "")[:512] or None,
            "request_id": o.request_id,
            "trace_id": o.trace_id,
        }
        for name in spec.fields:
            value = fields.get(name)
            entry[name] = str(value) if isinstance(value, UUID) else value
        # ensure_ascii: a user agent's control characters come out escaped; one event, one line.
        line = json.dumps(entry, separators=(",", ":"), ensure_ascii=True) + "\n"
        if self._forwarder is not None:
            self._forwarder.forward(event, entry, line[:-1].encode("ascii"))
        self.open()
        if self._fd is None:
            return
        # A full disk or a closed pipe must not fail the sign-in that is being recorded.
        with contextlib.suppress(OSError):
            os.write(self._fd, line.encode("ascii"))

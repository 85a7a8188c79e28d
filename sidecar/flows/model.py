"""Self-service flow values and their Kratos JSON shape (kratos-api.md §3.3, §3.4).

A ``Flow`` is plain data: strategies append nodes, flow managers change state and messages, the
store keeps it as JSON. The browser flow's CSRF base token is kept on the flow (never sent); the
hidden ``csrf_token`` node gets a freshly masked copy each time the flow is rendered.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sidecar.flows.messages import Text
from sidecar.flows.nodes import Node
from sidecar.identity.model import new_id, utcnow
from sidecar.security import csrf

FlowKind = Literal["login", "registration", "settings", "recovery", "verification"]
FlowType = Literal["browser", "api"]


@dataclass(slots=True)
class Ui:
    action: str
    method: str = "POST"
    nodes: list[Node] = field(default_factory=list)
    messages: list[Text] = field(default_factory=list)

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n["attributes"].get("name") == name), None)


@dataclass(slots=True)
class Flow:
    kind: FlowKind
    type: FlowType
    expires_at: datetime
    request_url: str
    ui: Ui
    id: uuid.UUID = field(default_factory=new_id)
    issued_at: datetime = field(default_factory=utcnow)
    return_to: str | None = None
    state: str = "choose_method"
    active: str | None = None
    refresh: bool = False
    requested_aal: str = "aal1"
    identity_id: uuid.UUID | None = None
    identity_schema: str | None = None
    organization_id: uuid.UUID | None = None
    """Kratos' ``organization_id``: the flow signs in through this organization's SSO."""
    csrf_token: str | None = None
    transient_payload: dict[str, Any] | None = None
    internal: dict[str, Any] = field(default_factory=dict)
    """Kratos' ``internal_context``: server-side state of a strategy (never sent to clients)."""

    def is_expired(self, now: datetime | None = None) -> bool:
        return (now or utcnow()) >= self.expires_at

    # --- persistence (internal JSON, includes the CSRF base token) ---------------------------
    def to_record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": self.type,
            "id": str(self.id),
            "issued_at": self.issued_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "request_url": self.request_url,
            "return_to": self.return_to,
            "state": self.state,
            "active": self.active,
            "refresh": self.refresh,
            "requested_aal": self.requested_aal,
            "identity_id": str(self.identity_id) if self.identity_id else None,
            "identity_schema": self.identity_schema,
            "organization_id": str(self.organization_id) if self.organization_id else None,
            "csrf_token": self.csrf_token,
            "transient_payload": self.transient_payload,
            "internal": self.internal,
            "ui": {
                "action": self.ui.action,
                "method": self.ui.method,
                "nodes": self.ui.nodes,
                "messages": self.ui.messages,
            },
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Flow:
        ui = data["ui"]
        return cls(
            kind=data["kind"],
            type=data["type"],
            id=uuid.UUID(data["id"]),
            issued_at=datetime.fromisoformat(data["issued_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            request_url=data["request_url"],
            return_to=data.get("return_to"),
            state=data.get("state", "choose_method"),
            active=data.get("active"),
            refresh=bool(data.get("refresh")),
            requested_aal=data.get("requested_aal", "aal1"),
            identity_id=uuid.UUID(data["identity_id"]) if data.get("identity_id") else None,
            identity_schema=data.get("identity_schema"),
            organization_id=uuid.UUID(data["organization_id"]) if data.get("organization_id") else None,
            csrf_token=data.get("csrf_token"),
            transient_payload=data.get("transient_payload"),
            internal=dict(data.get("internal") or {}),
            ui=Ui(ui["action"], ui.get("method", "POST"), list(ui["nodes"]), list(ui.get("messages", []))),
        )


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def flow_to_json(flow: Flow) -> dict[str, Any]:
    """The public Kratos shape (``loginFlow`` / ``registrationFlow``), CSRF masked afresh."""
    nodes: list[dict[str, Any]] = []
    for node in flow.ui.nodes:
        attrs = node["attributes"]
        if attrs.get("name") == "csrf_token" and flow.csrf_token:
            node = {**node, "attributes": {**attrs, "value": csrf.mask(flow.csrf_token)}}
        nodes.append(dict(node))
    ui: dict[str, Any] = {"action": flow.ui.action, "method": flow.ui.method, "nodes": nodes}
    if flow.ui.messages:
        ui["messages"] = list(flow.ui.messages)
    out: dict[str, Any] = {
        "id": str(flow.id),
        "type": flow.type,
        "expires_at": _time(flow.expires_at),
        "issued_at": _time(flow.issued_at),
        "request_url": flow.request_url,
        "ui": ui,
        "state": flow.state,
    }
    if flow.return_to:
        out["return_to"] = flow.return_to
    if flow.active:
        out["active"] = flow.active
    if flow.transient_payload is not None:
        out["transient_payload"] = flow.transient_payload
    if flow.identity_schema:
        out["identity_schema"] = flow.identity_schema
    if flow.organization_id:
        out["organization_id"] = str(flow.organization_id)
    if flow.kind == "login":
        out["refresh"] = flow.refresh
        out["requested_aal"] = flow.requested_aal
        out["created_at"] = out["issued_at"]
        out["updated_at"] = out["issued_at"]
    return out

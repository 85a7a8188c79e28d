"""Flows persisted as JSON in the ``KeyValueStore``.

Entries outlive ``expires_at`` by a grace period so that a late submit or fetch can be answered
with Kratos' 410 ``self_service_flow_expired`` (plus a replacement flow) rather than a bare 404.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from sidecar.flows.model import Flow, FlowKind
from sidecar.identity.model import utcnow
from sidecar.kv.store import KeyValueStore

EXPIRED_GRACE = timedelta(hours=1)


def _key(kind: FlowKind, flow_id: uuid.UUID) -> str:
    return f"flow:{kind}:{flow_id}"


class FlowStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    async def save(self, flow: Flow) -> None:
        ttl = max(flow.expires_at - utcnow(), timedelta(seconds=1)) + EXPIRED_GRACE
        await self._kv.set(_key(flow.kind, flow.id), json.dumps(flow.to_record()).encode(), ttl)

    async def get(self, kind: FlowKind, flow_id: uuid.UUID) -> Flow | None:
        raw = await self._kv.get(_key(kind, flow_id))
        if raw is None:
            return None
        return Flow.from_record(json.loads(raw))

    async def delete(self, kind: FlowKind, flow_id: uuid.UUID) -> None:
        await self._kv.delete(_key(kind, flow_id))


def parse_flow_id(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None

"""The ``state`` of a redirect to a provider: single use, bound to one flow and one browser.

Kratos keeps it in the ``ory_kratos_continuity`` container; here it is a random value whose
SHA-256 names a short-lived record in the key-value store. The record holds what the callback
needs and must not come from the browser: the flow, the provider, the ``nonce``, the PKCE
verifier and the traits typed before leaving. ``take`` is atomic: a replayed callback finds
nothing. The flow itself is bound to the browser's CSRF cookie, which the callback checks.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from sidecar.kv.store import KeyValueStore
from sidecar.security import tokens

MAX_TTL = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class RedirectState:
    flow_kind: str
    flow_id: str
    provider: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    traits: dict[str, Any] = field(default_factory=dict)
    transient_payload: dict[str, Any] | None = None

    @property
    def flow_uuid(self) -> uuid.UUID:
        return uuid.UUID(self.flow_id)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _key(state: str) -> str:
    return f"oidc_state:{tokens.digest(state)}"


class StateStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    async def put(self, record: RedirectState, ttl: timedelta) -> str:
        state = new_secret()
        ttl = max(min(ttl, MAX_TTL), timedelta(seconds=30))
        await self._kv.set(_key(state), json.dumps(asdict(record)).encode(), ttl)
        return state

    async def take(self, state: str | None) -> RedirectState | None:
        if not state or len(state) > 256:
            return None
        raw = await self._kv.take(_key(state))
        if raw is None:
            return None
        try:
            return RedirectState(**json.loads(raw))
        except (TypeError, ValueError):
            return None

"""Server-side state of SAML sign-ins, in the key-value store.

- The ``RelayState`` sent with an AuthnRequest is a random value whose SHA-256 names a record of
  the login flow, the connection and the request's ID: the response must come back with it
  (taken once) and answer exactly that request (``InResponseTo``), so a response is bound to the
  flow, and through the flow's CSRF cookie to the browser, that asked for it.
- An HTTP-POST request waits under the same value until the browser picks it up (once).
- An HTTP-POST response arrives as a cross-site POST that carries no ``SameSite=Lax`` cookie; it
  is parked under a new random value and the browser is sent to a same-site GET that brings it back.
- The replay cache: each assertion ID is accepted once, remembered until its ``NotOnOrAfter``
  (plus the clock skew).
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from sidecar.kv.store import KeyValueStore
from sidecar.security import tokens

MAX_TTL = timedelta(hours=1)
PARKED_TTL = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class RelayRecord:
    flow_kind: str
    flow_id: str
    provider: str
    request_id: str

    @property
    def flow_uuid(self) -> uuid.UUID:
        return uuid.UUID(self.flow_id)


def _key(kind: str, value: str) -> str:
    return f"saml_{kind}:{tokens.digest(value)}"


def _usable(value: str | None) -> bool:
    return bool(value) and len(value or "") <= 256


class SamlStateStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    @staticmethod
    def new_value() -> str:
        return secrets.token_urlsafe(32)

    async def put(self, relay_state: str, record: RelayRecord, ttl: timedelta) -> None:
        ttl = max(min(ttl, MAX_TTL), timedelta(seconds=30))
        await self._kv.set(_key("state", relay_state), json.dumps(asdict(record)).encode(), ttl)

    async def take(self, relay_state: str | None) -> RelayRecord | None:
        if not _usable(relay_state):
            return None
        raw = await self._kv.take(_key("state", relay_state or ""))
        if raw is None:
            return None
        try:
            return RelayRecord(**json.loads(raw))
        except (TypeError, ValueError):
            return None

    async def put_form(self, relay_state: str, url: str, form: dict[str, str], ttl: timedelta) -> None:
        value = json.dumps({"url": url, "form": form}).encode()
        await self._kv.set(_key("post", relay_state), value, max(min(ttl, MAX_TTL), timedelta(seconds=30)))

    async def take_form(self, relay_state: str | None) -> tuple[str, dict[str, str]] | None:
        if not _usable(relay_state):
            return None
        raw = await self._kv.take(_key("post", relay_state or ""))
        if raw is None:
            return None
        data: dict[str, Any] = json.loads(raw)
        return str(data["url"]), {str(k): str(v) for k, v in data["form"].items()}

    async def park(self, fields: dict[str, str]) -> str:
        """Keep a posted response for the same-site GET that follows; returns its handle."""
        handle = self.new_value()
        await self._kv.set(_key("parked", handle), json.dumps(fields).encode(), PARKED_TTL)
        return handle

    async def unpark(self, handle: str | None) -> dict[str, str] | None:
        if not _usable(handle):
            return None
        raw = await self._kv.take(_key("parked", handle or ""))
        return {str(k): str(v) for k, v in json.loads(raw).items()} if raw is not None else None

    async def park_target(self, target: str) -> str:
        """The RelayState of an SP-initiated LogoutRequest: names where the browser goes after it."""
        relay = self.new_value()
        await self._kv.set(_key("logout", relay), target.encode(), MAX_TTL)
        return relay

    async def take_target(self, relay_state: str | None) -> str | None:
        if not _usable(relay_state):
            return None
        raw = await self._kv.take(_key("logout", relay_state or ""))
        return raw.decode() if raw is not None else None

    async def first_use(self, issuer: str, assertion_id: str, ttl: timedelta) -> bool:
        """True the first time an assertion (by issuer and ID) is seen; False for a replay."""
        name = "\n".join((issuer, assertion_id))
        key = f"saml_assertion:{tokens.digest(name)}"
        return await self._kv.add(key, b"1", max(ttl, timedelta(seconds=1)))

"""One-time secrets for recovery and verification: codes (``code``) and link tokens (``link``).

Codes are 6 digits and link tokens 32 alphanumerics (~190 bits), both from ``secrets``. A secret
is stored only as a digest inside its key, and that key also names the flow it was sent for, so a
code is good for that flow alone. ``take`` is the store's atomic read-and-delete: of two concurrent
submissions of one code, exactly one wins. Expiry is checked against the grant's ``expires_at``
(the key outlives it by a grace period so that a late use can be told "expired", as Kratos does,
rather than "invalid").

Every code submission of a flow is counted (atomic ``incr``) before the code is checked; past
``max_submissions`` the flow accepts no code at all, right or wrong, until it is started again
(Kratos' ``submit_count``). Sending a new code does not reset the count.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sidecar.kv.store import KeyValueStore
from sidecar.security import tokens

CODE_DIGITS = 6
GRACE = timedelta(hours=1)

SecretKind = Literal["code", "link"]


def new_code(digits: int = CODE_DIGITS) -> str:
    return f"{secrets.randbelow(10**digits):0{digits}d}"


def new_link_token() -> str:
    return tokens.random_alnum(32)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a secret, once presented, proves: control of ``address`` of ``identity_id``."""

    flow_id: uuid.UUID
    identity_id: uuid.UUID
    address: str
    via: str
    expires_at: datetime
    address_id: uuid.UUID | None = None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "flow_id": str(self.flow_id),
                "identity_id": str(self.identity_id),
                "address": self.address,
                "via": self.via,
                "expires_at": self.expires_at.isoformat(),
                "address_id": str(self.address_id) if self.address_id else None,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Grant:
        data = json.loads(raw)
        return cls(
            flow_id=uuid.UUID(data["flow_id"]),
            identity_id=uuid.UUID(data["identity_id"]),
            address=data["address"],
            via=data["via"],
            expires_at=datetime.fromisoformat(data["expires_at"]),
            address_id=uuid.UUID(data["address_id"]) if data.get("address_id") else None,
        )

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at


def _secret_key(purpose: str, kind: SecretKind, flow_id: uuid.UUID, secret: str) -> str:
    # The flow id goes into the digest too: the same code sent for two flows has two digests.
    return f"onetime:{purpose}:{kind}:{flow_id}:{tokens.digest(f'{flow_id}:{secret}')}"


def _latest_key(purpose: str, flow_id: uuid.UUID) -> str:
    return f"onetime:{purpose}:latest:{flow_id}"


def _attempts_key(purpose: str, flow_id: uuid.UUID) -> str:
    return f"onetime:{purpose}:attempts:{flow_id}"


class OneTimeSecrets:
    """Codes and link tokens of one purpose (``recovery`` or ``verification``)."""

    def __init__(self, kv: KeyValueStore, purpose: str) -> None:
        self._kv = kv
        self._purpose = purpose

    async def store(self, kind: SecretKind, secret: str, grant: Grant, now: datetime) -> None:
        """Keep ``secret`` for its flow; the flow's earlier secret stops working (Kratos' resend)."""
        ttl = max(grant.expires_at - now, timedelta(seconds=1)) + GRACE
        key = _secret_key(self._purpose, kind, grant.flow_id, secret)
        latest = _latest_key(self._purpose, grant.flow_id)
        previous = await self._kv.get(latest)
        if previous is not None:
            await self._kv.delete(previous.decode())
        await self._kv.set(key, grant.to_json(), ttl)
        await self._kv.set(latest, key.encode(), ttl)

    async def take(self, kind: SecretKind, flow_id: uuid.UUID, secret: str) -> Grant | None:
        """The grant of ``secret`` for this flow, consumed; None when unknown or already used."""
        if not secret or len(secret) > 256:
            return None
        raw = await self._kv.take(_secret_key(self._purpose, kind, flow_id, secret))
        return Grant.from_json(raw) if raw is not None else None

    async def count_submission(self, flow_id: uuid.UUID, window: timedelta) -> int:
        """Count one code submission for the flow; returns the running total."""
        return await self._kv.incr(_attempts_key(self._purpose, flow_id), window + GRACE)

    async def submissions(self, flow_id: uuid.UUID) -> int:
        raw = await self._kv.get(_attempts_key(self._purpose, flow_id))
        return int(raw) if raw else 0

"""Recovery and verification flows built by hand: a fake clock and a courier that records."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sidecar.app import send_limits
from sidecar.config.model import Config
from sidecar.flows.recovery import RecoveryFlows
from sidecar.flows.store import FlowStore
from sidecar.flows.verification import VerificationFlows
from sidecar.identity.manager import IdentitySpec
from sidecar.identity.model import Identity, utcnow
from sidecar.security.ratelimit import RateLimiter
from sidecar.strategies.address_challenge import ChallengeDeps
from sidecar.strategies.code import CodeStrategy
from sidecar.strategies.link import LinkStrategy
from tests.conftest import make_config

PASSWORD = "correct-Horse-battery-staple-42"


@dataclass
class Clock:
    now: datetime = field(default_factory=utcnow)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Outbox:
    """Records what would be enqueued; the real courier is tested with SMTP elsewhere."""

    sent: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    async def send(
        self, template_type: str, recipient: str, data: Mapping[str, Any], *, via: str = "email"
    ) -> uuid.UUID:
        self.sent.append((template_type, recipient, dict(data)))
        return uuid.uuid4()

    def last(self, to: str) -> tuple[str, dict[str, Any]]:
        found = [(t, d) for t, r, d in self.sent if r == to]
        assert found, f"nothing sent to {to}: {self.sent}"
        return found[-1]


@dataclass
class Kit:
    services: Any
    config: Config
    clock: Clock
    outbox: Outbox
    recovery: RecoveryFlows
    verification: VerificationFlows

    async def identity(self, email: str | None = None) -> Identity:
        email = email or f"u{uuid.uuid4().hex[:8]}@example.test"
        created: Identity = await self.services.identities.create(
            IdentitySpec(traits={"email": email}, password_plain=PASSWORD)
        )
        return created


async def make_kit(services_factory: Any, dsn: str, **overrides: Any) -> Kit:
    flows = {"recovery": {"enabled": True}, "verification": {"enabled": True}}
    selfservice = overrides.pop("selfservice", {})
    selfservice = {**selfservice, "flows": {**flows, **selfservice.get("flows", {})}}
    config = make_config(dsn=dsn, selfservice=selfservice, **overrides)
    services = await services_factory(config)
    clock, outbox = Clock(), Outbox()
    deps = ChallengeDeps(
        services.identity_store, outbox, services.kv, RateLimiter(services.kv, send_limits(config)), clock
    )
    strategies = [CodeStrategy(config, deps), LinkStrategy(config, deps)]
    store = FlowStore(services.kv)
    kv = services.kv
    recovery = RecoveryFlows(config, store, strategies, sessions=services.sessions, kv=kv, clock=clock)
    verification = VerificationFlows(config, store, strategies, kv=kv, clock=clock)
    return Kit(services, config, clock, outbox, recovery, verification)

"""The password strategy's brute-force answers, and the mail-send limiter, on real stores."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from sidecar.config.model import RateLimit
from sidecar.flows.outcome import FlowInvalid
from sidecar.security.ratelimit import RateLimiter
from sidecar.security.throttle import Throttle
from tests.flows.conftest import api_client


@pytest.fixture(params=["sql", "redis"])
def kv_kind(request: pytest.FixtureRequest) -> tuple[str, str]:
    if request.param == "redis":
        return "redis", request.getfixturevalue("unique_prefix")
    return "sql", ""


@pytest.fixture
async def kv(kv_kind: tuple[str, str], services: Any) -> Any:
    kind, prefix = kv_kind
    if kind == "sql":
        yield services.kv
        return
    from sidecar.storage.redis.backend import RedisBackend
    from tests.conftest import REDIS_URL

    backend = RedisBackend(REDIS_URL, prefix)
    yield backend.kv
    await backend.close()


async def test_parallel_sends_are_counted_atomically(kv: Any) -> None:
    limiter = RateLimiter(kv, RateLimit(per_identifier=10, per_ip=1000, window=timedelta(minutes=5)))
    verdicts = await asyncio.gather(
        *(limiter.hit("recovery_send", identifier="Ann@Example.test", ip="198.51.100.1") for _ in range(30))
    )
    assert sum(v.allowed for v in verdicts) == 10
    assert all(0 < v.retry_after <= 300 for v in verdicts if not v.allowed)
    # Case-folded address: the same mailbox.
    assert not (await limiter.hit("recovery_send", identifier="ann@example.test", ip="198.51.100.2")).allowed
    assert (await limiter.hit("verification_send", identifier="ann@example.test", ip="198.51.100.2")).allowed


async def test_send_ip_limit(kv: Any) -> None:
    limiter = RateLimiter(kv, RateLimit(per_identifier=100, per_ip=2))
    results = [(await limiter.hit("send", identifier=f"u{i}", ip="198.51.100.9")).allowed for i in range(3)]
    assert results == [True, True, False]


async def test_a_delay_hides_a_right_password(services: Any) -> None:
    from sidecar.identity.manager import IdentitySpec
    from sidecar.strategies.password import PasswordStrategy
    from tests.conftest import make_config
    from tests.flows.conftest import PASSWORD

    config = make_config(security={"rate_limit": {"free_failures": 1, "initial_delay": "60s"}})
    strategy = PasswordStrategy(
        config, services.identities, services.schemas, Throttle(services.kv, config.security.rate_limit)
    )
    await services.identities.create(
        IdentitySpec(traits={"email": "lock@example.test"}, password_plain=PASSWORD)
    )
    flow = (await services.selfservice.login.init("api", api_client(), request_url="http://x/")).flow
    body = {"method": "password", "identifier": "lock@example.test"}
    with pytest.raises(FlowInvalid) as wrong:
        await strategy.login(flow, {**body, "password": "wrong-Password-1"}, api_client())
    assert wrong.value.status == 400
    with pytest.raises(FlowInvalid) as right:
        await strategy.login(flow, {**body, "password": PASSWORD}, api_client())
    assert right.value.status == 429 and [m["id"] for m in right.value.messages] == [4000429]
    assert 55 <= int(right.value.headers["Retry-After"]) <= 60
